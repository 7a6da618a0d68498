//! Vigía's hot-lead score and intent classifier for [Arroyo](https://arroyo.dev) SQL pipelines.
//!
//! What it does: exposes [`vigia_processors::scoring`] — the very code the processors score leads
//! with, not a copy — through functions whose signatures are Arroyo UDF column types (`&str`,
//! `i64`, `f64`, `Option` for nullable columns). Each UDF is one file in `udfs/arroyo/`, in
//! Arroyo's UDF format (a `[dependencies]` header naming this crate, one `#[udf]` function that
//! calls the one here); that file is what gets registered in Arroyo, and `udfs/plugins/<name>`
//! builds the same file into the dynamic library Arroyo would build from it (Arroyo's plugin
//! ABI exports one UDF per library, as the symbol `__run`).
//!
//! | UDF | SQL signature | result |
//! |---|---|---|
//! | [`intent_mask`] | `(text TEXT) → BIGINT` | the buying signals of one message as a bit set (bit *i* = the *i*-th of [`SIGNALS`]); `BIT_OR` it over a lead's messages |
//! | [`intent_signals`] | `(text TEXT) → TEXT` | the same signals by name, comma-separated (`"price,availability"`; empty when none) |
//! | [`intent_score`] | `(text TEXT) → DOUBLE` | the intent component of the score for one message (.10 per distinct signal, at most .25) |
//! | [`hot_lead_score`] | `(source TEXT, customer_messages BIGINT, seconds_since_last_customer_message BIGINT, intent_mask BIGINT, location TEXT, high_value_locations TEXT) → DOUBLE` | the hot-lead score in [0, 1], exactly as the processors compute it from the same inputs |
//!
//! `text`, `source`, `location`, `high_value_locations` and `seconds_since_last_customer_message`
//! may be NULL (no text; unknown source; no location; no list; no customer message yet);
//! `customer_messages` and `intent_mask` may not (the row's result is then NULL).
//!
//! What it does not do: keep any state. The processors recompute a lead's score on each of its
//! events from what they remember about it (its source and location from `lead.created`; its
//! conversation's customer-message count, last customer-message time and buying signals); in
//! Arroyo, SQL has to gather those inputs (see `docker/arroyo/pipeline.sql`), and the score is
//! the processors' exactly when the inputs are. Nor does it notify: the hot-lead notification
//! (threshold with hysteresis, lead status, the seller's recent replies), deduplication by
//! `event_id`, and every other rule stay with the processors.
//!
//! `tests/arroyo_udfs.rs` (in the repository root) builds the libraries, loads them and calls
//! `__run` with Arrow arrays the way Arroyo's host does, on the simulator's stream, and requires
//! every result to equal the processors' own.

use chrono::{DateTime, TimeDelta, Utc};
use vigia_processors::scoring::{self, ScoreInputs};

/// The buying-signal concepts, in bit order of [`intent_mask`]: the processors'
/// [`scoring::signal_names`].
pub const SIGNALS: [&str; 7] = [
    "price",
    "quote",
    "buy",
    "availability",
    "financing",
    "visit",
    "discount",
];

/// The bit of a signal name, if it is one.
fn bit(signal: &str) -> Option<u32> {
    scoring::signal_names()
        .position(|s| s == signal)
        .map(|i| i as u32)
}

/// The buying signals of one customer message as a bit set: bit *i* set when the message
/// expresses the *i*-th signal of [`SIGNALS`] (in Spanish or English, see
/// [`scoring::intent_signals`]). NULL text has none (0).
pub fn intent_mask(text: Option<&str>) -> i64 {
    text.map_or(0, |t| {
        scoring::intent_signals(t)
            .into_iter()
            .filter_map(bit)
            .fold(0, |mask, b| mask | 1 << b)
    })
}

/// The buying signals of one customer message by name, comma-separated in the order of
/// [`SIGNALS`]; empty when none (or NULL text).
pub fn intent_signals(text: Option<&str>) -> String {
    text.map(scoring::intent_signals)
        .unwrap_or_default()
        .join(",")
}

/// The intent component of the hot-lead score for one message on its own: .10 per distinct
/// buying signal, at most .25. A lead's intent component counts the distinct signals of all its
/// customer's messages: `hot_lead_score(…, BIT_OR(intent_mask(text)), …)`.
pub fn intent_score(text: Option<&str>) -> f64 {
    let n = text.map_or(0, |t| scoring::intent_signals(t).len());
    breakdown(None, 0, None, n as u32, None, None).intent
}

/// The number of distinct signals in a mask of [`intent_mask`]s (bits beyond [`SIGNALS`] are
/// ignored).
pub fn signal_count(intent_mask: i64) -> u32 {
    (intent_mask & ((1 << SIGNALS.len()) - 1)).count_ones()
}

/// The hot-lead score (contract §3.3) of one lead, from its inputs as SQL columns:
///
/// - `source`: the lead's source (`META_ADS`, `REFERRAL`, `WEBSITE`, …; NULL: unknown, 0).
/// - `customer_messages`: messages the customer sent in the lead's conversation (more than 5
///   score .20).
/// - `seconds_since_last_customer_message`: the evaluation time minus the time of the customer's
///   last message, in whole seconds towards zero; NULL when there is none. At most 3600 (or
///   negative: a message after the evaluation time) scores .15.
/// - `intent_mask`: the lead's buying signals, the `BIT_OR` of [`intent_mask`] over its
///   customer's messages (.10 per distinct signal, at most .25).
/// - `location`, `high_value_locations`: the lead's location and the tenant's high-value areas as
///   one comma-separated text (`'Bogotá,Medellín'`), compared ignoring case, accents and
///   surrounding blanks (.10 when it is one of them; an area's name cannot contain a comma).
///
/// The sum, clamped to [0, 1] and rounded to 6 decimals, is what the processors emit as
/// `lead_scores.score` for the same inputs.
pub fn hot_lead_score(
    source: Option<&str>,
    customer_messages: i64,
    seconds_since_last_customer_message: Option<i64>,
    intent_mask: i64,
    location: Option<&str>,
    high_value_locations: Option<&str>,
) -> f64 {
    breakdown(
        source,
        customer_messages,
        seconds_since_last_customer_message,
        signal_count(intent_mask),
        location,
        high_value_locations,
    )
    .score
}

/// [`scoring::score`] of the column values.
fn breakdown(
    source: Option<&str>,
    customer_messages: i64,
    seconds_since_last_customer_message: Option<i64>,
    intent_signals: u32,
    location: Option<&str>,
    high_value_locations: Option<&str>,
) -> scoring::ScoreBreakdown {
    // The score only looks at the difference between the two times; any origin will do. Clamped
    // to ±31,700 years, well inside chrono's range and far beyond the one-hour window.
    let origin = DateTime::<Utc>::UNIX_EPOCH;
    let evaluated_at = origin
        + seconds_since_last_customer_message.map_or(TimeDelta::zero(), |s| {
            TimeDelta::seconds(s.clamp(-1_000_000_000_000, 1_000_000_000_000))
        });
    let areas: Vec<String> = high_value_locations
        .map(|list| list.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    scoring::score(&ScoreInputs {
        source: source.unwrap_or(""),
        customer_messages: u32::try_from(customer_messages.max(0)).unwrap_or(u32::MAX),
        last_customer_message_at: seconds_since_last_customer_message.map(|_| origin),
        evaluated_at,
        intent_signals,
        location,
        high_value_locations: &areas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signal_order_is_the_processors() {
        assert_eq!(scoring::signal_names().collect::<Vec<_>>(), SIGNALS);
    }

    #[test]
    fn intent_functions_agree_with_the_processors() {
        let text = "Hola, ¿Cuánto cuesta? ¿Está DISPONIBLE? Quiero comprar";
        assert_eq!(intent_signals(Some(text)), "price,buy,availability");
        assert_eq!(intent_mask(Some(text)), 0b1101);
        assert_eq!(signal_count(intent_mask(Some(text))), 3);
        assert_eq!(intent_score(Some(text)), 0.25);
        assert_eq!(intent_score(Some("can we schedule a visit?")), 0.1);
        assert_eq!(intent_mask(Some("hola")), 0);
        assert_eq!(intent_signals(Some("hola")), "");
        assert_eq!(intent_score(None), 0.0);
        assert_eq!(intent_mask(None), 0);
        assert_eq!(intent_signals(None), "");
        // Every signal has its own bit, and bits beyond them count for nothing.
        assert_eq!(signal_count(-1), 7);
    }

    #[test]
    fn hot_lead_score_is_the_processors_score_of_the_same_inputs() {
        let areas = Some("Lima, Bogotá");
        let price_and_buy = intent_mask(Some("precio? quiero comprar"));
        // .30 + .20 + .15 + .20 + .10
        let all = hot_lead_score(
            Some("META_ADS"),
            6,
            Some(3600),
            price_and_buy,
            Some("bogota"),
            areas,
        );
        assert_eq!(all, 0.95);
        // Recency: at most an hour, or a message after the evaluation time.
        assert_eq!(hot_lead_score(None, 0, Some(3601), 0, None, None), 0.0);
        assert_eq!(hot_lead_score(None, 0, Some(-30), 0, None, None), 0.15);
        assert_eq!(hot_lead_score(None, 0, None, 0, None, None), 0.0);
        assert_eq!(hot_lead_score(None, 0, Some(i64::MIN), 0, None, None), 0.15);
        assert_eq!(hot_lead_score(None, 0, Some(i64::MAX), 0, None, None), 0.0);
        // Engagement needs more than five messages; negative counts are none.
        assert_eq!(
            hot_lead_score(Some("REFERRAL"), 5, None, 0, None, None),
            0.25
        );
        assert_eq!(
            hot_lead_score(Some("REFERRAL"), 6, None, 0, None, None),
            0.45
        );
        assert_eq!(
            hot_lead_score(Some("REFERRAL"), -6, None, 0, None, None),
            0.25
        );
        // Location: only with a list that names it.
        assert_eq!(hot_lead_score(None, 0, None, 0, Some("Lima"), None), 0.0);
        assert_eq!(hot_lead_score(None, 0, None, 0, Some("Cali"), areas), 0.0);
        assert_eq!(hot_lead_score(None, 0, None, 0, Some("LIMA "), areas), 0.1);
        assert_eq!(hot_lead_score(None, 0, None, 0, Some(""), Some(",")), 0.0);

        let when: DateTime<Utc> = "2026-03-01T12:00:00Z".parse().unwrap();
        let areas = vec!["Lima".to_string(), "Bogotá".to_string()];
        let expected = scoring::score(&ScoreInputs {
            source: "WEBSITE",
            customer_messages: 7,
            last_customer_message_at: Some(when - TimeDelta::seconds(1800)),
            evaluated_at: when,
            intent_signals: 1,
            location: Some("Quito"),
            high_value_locations: &areas,
        });
        let mask = intent_mask(Some("any discount?"));
        let got = hot_lead_score(
            Some("WEBSITE"),
            7,
            Some(1800),
            mask,
            Some("Quito"),
            Some("Lima,Bogotá"),
        );
        assert_eq!(got, expected.score);
    }

    /// Each file of `udfs/arroyo/` is a UDF as Arroyo's API takes it: a `[dependencies]` header
    /// comment first (what Arroyo's `parse_dependencies` looks for), exactly one `#[udf]`
    /// function, named after the file, that calls the function of the same name here.
    #[test]
    fn the_arroyo_definitions_are_well_formed() {
        let defs = [
            (
                "hot_lead_score",
                include_str!("../arroyo/hot_lead_score.rs"),
            ),
            ("intent_mask", include_str!("../arroyo/intent_mask.rs")),
            (
                "intent_signals",
                include_str!("../arroyo/intent_signals.rs"),
            ),
            ("intent_score", include_str!("../arroyo/intent_score.rs")),
        ];
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/arroyo"))
            .unwrap()
            .count();
        assert_eq!(files, defs.len(), "a UDF file is missing from this test");
        for (name, def) in defs {
            assert!(
                def.starts_with("/*\n[dependencies]\nvigia-arroyo-udfs = "),
                "{name}: no dependencies header"
            );
            assert_eq!(def.matches("#[udf]").count(), 1, "{name}");
            assert!(def.contains(&format!("#[udf]\nfn {name}(")), "{name}");
            assert!(
                def.contains(&format!("vigia_arroyo_udfs::{name}(")),
                "{name}"
            );
        }
    }
}
