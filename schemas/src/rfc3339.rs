//! RFC 3339 timestamps as chrono's serde writes and reads them, without its general machinery.
//!
//! Why: chrono serialises a `DateTime` through `Display` (a `collect_str` that hands serde_json
//! one character at a time) and parses one with its general, whitespace-tolerant format parser.
//! Under callgrind the two cost ~3.8k instructions per event of the processors' full pass
//! (docs/profile-processors.md), for a timestamp in every event and several in every output.
//!
//! Both functions here cover the common form only — a year in 0..=9999, no leap second, UTC —
//! and give exactly what chrono gives for it; for anything else the callers fall back to chrono
//! (tested against it: `format` on every fraction length and on the calendar's edges, `parse` on
//! valid, relaxed and invalid texts).

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::Serializer;

/// The longest text [`format`] writes: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub const MAX_LEN: usize = 30;

/// `t` as chrono's `Serialize` writes a `DateTime<Utc>` (`to_rfc3339_opts(AutoSi, true)`:
/// `2026-03-02T08:00:00Z`, with 3, 6 or 9 fraction digits when there is a fraction), into `buf`;
/// `None` for a year outside 0..=9999 or a leap second, which chrono writes otherwise.
pub fn format<'b>(t: &DateTime<Utc>, buf: &'b mut [u8; MAX_LEN]) -> Option<&'b str> {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    let nano = t.nanosecond();
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        return None;
    }
    let two = |buf: &mut [u8; MAX_LEN], at: usize, v: u32| {
        buf[at] = b'0' + (v / 10) as u8;
        buf[at + 1] = b'0' + (v % 10) as u8;
    };
    let year = year as u32;
    two(buf, 0, year / 100);
    two(buf, 2, year % 100);
    buf[4] = b'-';
    two(buf, 5, t.month());
    buf[7] = b'-';
    two(buf, 8, t.day());
    buf[10] = b'T';
    two(buf, 11, t.hour());
    buf[13] = b':';
    two(buf, 14, t.minute());
    buf[16] = b':';
    two(buf, 17, t.second());
    let mut len = 19;
    let (digits, mut fraction) = if nano == 0 {
        (0, 0)
    } else if nano.is_multiple_of(1_000_000) {
        (3, nano / 1_000_000)
    } else if nano.is_multiple_of(1_000) {
        (6, nano / 1_000)
    } else {
        (9, nano)
    };
    if digits > 0 {
        buf[len] = b'.';
        for i in (0..digits).rev() {
            buf[len + 1 + i] = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
        len += 1 + digits;
    }
    buf[len] = b'Z';
    len += 1;
    // Only ASCII digits and separators were written.
    std::str::from_utf8(&buf[..len]).ok()
}

/// `serialize_with` for a `DateTime<Utc>` field: the same text as chrono's `Serialize`.
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0; MAX_LEN];
    match format(t, &mut buf) {
        Some(text) => s.serialize_str(text),
        None => serde::Serialize::serialize(t, s),
    }
}

/// A `DateTime<Utc>` that serialises through [`serialize`]: for `json!` values
/// (`json!({"deadline": Timestamp(at)})`), the same text as the `DateTime` itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub DateTime<Utc>);

impl serde::Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize(&self.0, s)
    }
}

/// `t` as a JSON string value, as `serde_json::to_value(t)` (or `json!`) gives it.
pub fn to_value(t: &DateTime<Utc>) -> serde_json::Value {
    let mut buf = [0; MAX_LEN];
    match format(t, &mut buf) {
        Some(text) => serde_json::Value::String(text.to_owned()),
        None => serde_json::Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
    }
}

/// `text` as chrono's `Deserialize` for `DateTime<Utc>` reads it, for the strict form
/// `YYYY-MM-DDTHH:MM:SS[.f…]Z` (1 to 9 fraction digits, seconds below 60); `None` for anything
/// else — including texts chrono accepts (offsets, spaces, a lower-case `t`, leap seconds) or
/// refuses — which the caller must hand to chrono.
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    // A fixed-size head, read at constant offsets: no bounds check per digit (this runs for
    // every event decoded; the version that indexed the text was ~400 instructions).
    let (head, tail) = text.as_bytes().split_first_chunk::<19>()?;
    let nano = match tail {
        [b'Z'] => 0,
        [b'.', fraction @ .., b'Z'] if (1..=9).contains(&fraction.len()) => {
            let mut v = 0;
            for &c in fraction {
                v = v * 10 + digit(c)?;
            }
            const SCALE: [u32; 10] = [
                1,
                10,
                100,
                1_000,
                10_000,
                100_000,
                1_000_000,
                10_000_000,
                100_000_000,
                1_000_000_000,
            ];
            v * SCALE[9 - fraction.len()]
        }
        _ => return None,
    };
    if [head[4], head[7], head[10], head[13], head[16]] != *b"--T::" {
        return None;
    }
    let two = |i: usize| -> Option<u32> { Some(digit(head[i])? * 10 + digit(head[i + 1])?) };
    let year = two(0)? * 100 + two(2)?;
    let (month, day) = (two(5)?, two(8)?);
    let (hour, minute, second) = (two(11)?, two(14)?, two(17)?);
    if second >= 60 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nano)?;
    Some(date.and_time(time).and_utc())
}

fn digit(c: u8) -> Option<u32> {
    let d = c.wrapping_sub(b'0');
    (d < 10).then_some(u32::from(d))
}

/// A `DateTime<Utc>` read as chrono's `Deserialize` reads it, through [`parse`] when it can.
pub(crate) struct Visitor;

impl serde::de::Visitor<'_> for Visitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an RFC 3339 formatted date and time string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DateTime<Utc>, E> {
        match parse(v) {
            Some(t) => Ok(t),
            None => v
                .parse::<DateTime<chrono::FixedOffset>>()
                .map(|t| t.with_timezone(&Utc))
                .map_err(E::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn chrono_text(t: &DateTime<Utc>) -> String {
        serde_json::to_value(t)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn chrono_parse(text: &str) -> Option<DateTime<Utc>> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
    }

    fn instants() -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let bases = [
            Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 15, 12, 30, 45).unwrap(),
        ];
        let nanos = [
            0,
            1,
            9,
            10,
            999,
            1_000,
            1_001,
            120_000,
            999_999,
            1_000_000,
            5_000_000,
            123_000_000,
            123_456_000,
            123_456_789,
            999_999_999,
        ];
        for base in bases {
            for n in nanos {
                out.push(base + Duration::nanoseconds(n));
            }
            for step in 0..500 {
                out.push(base + Duration::milliseconds(step * 7_919_777 + step));
            }
        }
        // Leap seconds: chrono's own form (`…:59.5` + 1 s), left to chrono.
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        out.push(leap);
        out
    }

    #[test]
    fn format_writes_what_chrono_writes() {
        let mut written = 0;
        for t in instants() {
            let mut buf = [0; MAX_LEN];
            let expected = chrono_text(&t);
            if let Some(text) = format(&t, &mut buf) {
                assert_eq!(text, expected, "{t:?}");
                written += 1;
            } else {
                use chrono::{Datelike, Timelike};
                assert!(!(0..=9999).contains(&t.year()) || t.nanosecond() >= 1_000_000_000);
            }
            let via_serialize = serde_json::to_string(&Timestamp(t)).unwrap();
            assert_eq!(via_serialize, format!("\"{expected}\""));
            assert_eq!(
                serde_json::json!({ "t": Timestamp(t) }),
                serde_json::json!({ "t": t })
            );
            assert_eq!(to_value(&t), serde_json::Value::String(expected));
        }
        assert!(written > 2000, "the fast path was taken {written} times");
    }

    #[test]
    fn parse_reads_what_chrono_reads_or_leaves_it_to_chrono() {
        let mut texts: Vec<String> = instants().iter().map(chrono_text).collect();
        texts.extend(
            [
                "2026-03-02T08:00:00Z",
                "2026-03-02T08:00:00.5Z",
                "2026-03-02T08:00:00.12Z",
                "2026-03-02T08:00:00.1234567891Z",
                "2026-03-02T08:00:00.Z",
                "2026-03-02t08:00:00Z",
                "2026-03-02 08:00:00Z",
                "2026-03-02T08:00:00z",
                "2026-03-02T08:00:00+00:00",
                "2026-03-02T08:00:00+05:30",
                "2026-03-02T08:00:60Z",
                "2026-03-02T08:00:59.999Z",
                "2026-03-02T24:00:00Z",
                "2026-03-02T23:60:00Z",
                "2026-02-29T08:00:00Z",
                "2024-02-29T08:00:00Z",
                "2026-13-01T08:00:00Z",
                "2026-00-01T08:00:00Z",
                "2026-04-31T08:00:00Z",
                "2026-3-02T08:00:00Z",
                "+2026-03-02T08:00:00Z",
                "2026-03-02T08:00:00ZZ",
                "2026-03-02T08:00:00Z ",
                " 2026-03-02T08:00:00Z",
                "2026-03-02T08:00:0aZ",
                "2026-03-02T08:00:00.12a4Z",
                "2026-03-02T08:00:00,5Z",
                "2026-03-02T08:00Z",
                "2026-03-02",
                "",
                "0000-01-01T00:00:00Z",
                "9999-12-31T23:59:59.999999999Z",
                "2026-03-02T08:00:00.000000000Z",
            ]
            .map(str::to_owned),
        );
        let mut fast = 0;
        for text in &texts {
            let expected = chrono_parse(text);
            if let Some(t) = parse(text) {
                assert_eq!(Some(t), expected, "{text}");
                fast += 1;
            }
            // Taken or left to chrono, the visitor answers as chrono does.
            let via_visitor: Result<DateTime<Utc>, serde_json::Error> =
                serde::Deserializer::deserialize_str(
                    serde_json::Value::String(text.clone()),
                    Visitor,
                );
            assert_eq!(via_visitor.ok(), expected, "{text}");
        }
        assert!(fast > 2000, "the fast path was taken {fast} times");
    }
}
