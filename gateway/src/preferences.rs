//! Per-user notification preferences (contract §5.6) and the pure rule that applies them at push time,
//! [`should_push`].
//!
//! A user who never saved preferences gets their role's defaults ([`Preferences::for_role`]).
//! Saved preferences are stored whole in the inbox database (table `user_preferences`) as the
//! JSON below; `PUT /v1/preferences` takes any subset of its fields and keeps the others.
//!
//! ```json
//! {"enabled_types": ["unanswered_conversation", "hot_lead"], "min_priority": "medium",
//!  "quiet_hours": {"start": "22:00", "end": "07:00"} | null, "time_zone": "America/Bogota",
//!  "work_days": ["mon", "tue", "wed", "thu", "fri"], "push": true, "email": false}
//! ```
//!
//! Quiet hours and work days are read in the user's IANA `time_zone` (default `UTC`): the gateway
//! does not see `user.upserted` events, so the zone travels in the preferences themselves. Quiet
//! hours may cross midnight (`22:00`–`07:00`); `start` is inside, `end` is not.
//!
//! Muted notifications stay in the inbox (and in the unread count) but are not pushed live.
//!
//! The same preferences choose who gets a notification by **e-mail** ([`email_at`]): `email`
//! on, the type enabled and the priority reached; quiet hours and days off *defer* the e-mail
//! to the first instant outside them (it waits in the channel outbox) rather than drop it.

use std::str::FromStr;

use chrono::{DateTime, NaiveTime, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};
use vigia_schemas::{FieldError, Notification, NotificationType, Priority, Role};

pub const ALL_TYPES: [NotificationType; 6] = [
    NotificationType::UnansweredConversation,
    NotificationType::HotLead,
    NotificationType::FollowUpReminder,
    NotificationType::PerformanceAlert,
    NotificationType::SessionTimeout,
    NotificationType::DailyReport,
];

const ALL_DAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

const FIELDS: &str = "enabled_types, min_priority, quiet_hours, time_zone, work_days, push, email";

/// A daily window without live pushes, in the user's time zone. `start != end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl QuietHours {
    /// Whether `t` is inside the window (`start` inclusive, `end` exclusive), also when the
    /// window crosses midnight.
    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

/// One user's effective preferences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preferences {
    /// Types pushed live, in [`ALL_TYPES`] order.
    pub enabled_types: Vec<NotificationType>,
    /// Notifications below this priority are not pushed live.
    pub min_priority: Priority,
    pub quiet_hours: Option<QuietHours>,
    /// The zone of `quiet_hours` and `work_days`.
    pub time_zone: Tz,
    /// Days (in `time_zone`) on which notifications are pushed live, Monday first.
    pub work_days: Vec<Weekday>,
    /// Live pushes at all.
    pub push: bool,
    /// E-mail for the types a tenant sends out by e-mail ([`crate::channels`]), to the
    /// user's address in the tenant's address book; deferred by quiet hours ([`email_at`]).
    pub email: bool,
}

impl Preferences {
    /// The defaults of a role (contract §5.6): CEO/manager every type from low priority; seller
    /// unanswered conversations, hot leads and follow-up reminders from medium; secretary
    /// unanswered conversations from high; supervisor session timeouts from medium. Every day,
    /// no quiet hours, UTC, push on, e-mail off.
    pub fn for_role(role: Role) -> Preferences {
        use NotificationType::*;
        let (enabled_types, min_priority) = match role {
            Role::Ceo | Role::Manager => (ALL_TYPES.to_vec(), Priority::Low),
            Role::Seller => (
                vec![UnansweredConversation, HotLead, FollowUpReminder],
                Priority::Medium,
            ),
            Role::Secretary => (vec![UnansweredConversation], Priority::High),
            Role::Supervisor => (vec![SessionTimeout], Priority::Medium),
        };
        Preferences {
            enabled_types,
            min_priority,
            quiet_hours: None,
            time_zone: Tz::UTC,
            work_days: ALL_DAYS.to_vec(),
            push: true,
            email: false,
        }
    }

    /// The JSON form (module docs); also what the database stores.
    pub fn to_json(&self) -> Value {
        json!({
            "enabled_types": self.enabled_types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            "min_priority": priority_name(self.min_priority),
            "quiet_hours": self.quiet_hours.map(|q| json!({
                "start": q.start.format("%H:%M").to_string(),
                "end": q.end.format("%H:%M").to_string(),
            })),
            "time_zone": self.time_zone.name(),
            "work_days": self.work_days.iter().map(|d| day_name(*d)).collect::<Vec<_>>(),
            "push": self.push,
            "email": self.email,
        })
    }

    /// `self` with the fields present in `update` replaced; every invalid field is reported,
    /// by name. Unknown fields are refused (a typo would otherwise be silently ignored).
    pub fn updated(&self, update: &Value) -> Result<Preferences, Vec<FieldError>> {
        let Some(fields) = update.as_object() else {
            return Err(vec![err(
                "",
                format!("the body must be a JSON object with any of: {FIELDS}"),
            )]);
        };
        let mut out = self.clone();
        let mut errors = vec![];
        for (name, value) in fields {
            let result = match name.as_str() {
                "enabled_types" => parse_types(value).map(|v| out.enabled_types = v),
                "min_priority" => parse_priority(value).map(|v| out.min_priority = v),
                "quiet_hours" => parse_quiet_hours(value).map(|v| out.quiet_hours = v),
                "time_zone" => parse_time_zone(value).map(|v| out.time_zone = v),
                "work_days" => parse_days(value).map(|v| out.work_days = v),
                "push" => parse_bool(name, value).map(|v| out.push = v),
                "email" => parse_bool(name, value).map(|v| out.email = v),
                other => Err(err(
                    other,
                    format!("unknown field; preferences have: {FIELDS}"),
                )),
            };
            if let Err(e) = result {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

/// Whether `notification` is pushed live to a user with `prefs` at `now`: push on, type enabled,
/// priority at least the minimum ([`accepts`]), `now` on a work day and outside quiet hours
/// ([`is_quiet_at`]). A withdrawal (it removes a card, it never disturbs) needs only push on.
pub fn should_push(prefs: &Preferences, notification: &Notification, now: DateTime<Utc>) -> bool {
    if !prefs.push {
        return false;
    }
    if notification.withdraws.is_some() {
        return true;
    }
    accepts(prefs, notification) && !is_quiet_at(prefs, now)
}

/// Whether the user wants this kind of notification at all: its type is enabled and its
/// priority reaches the minimum. Time of day and channel switches are not considered.
pub fn accepts(prefs: &Preferences, notification: &Notification) -> bool {
    prefs.enabled_types.contains(&notification.kind) && notification.priority >= prefs.min_priority
}

/// Whether `at` falls on a day that is not a work day, or inside quiet hours (both in the
/// user's time zone).
pub fn is_quiet_at(prefs: &Preferences, at: DateTime<Utc>) -> bool {
    let local = at.with_timezone(&prefs.time_zone);
    if !prefs.work_days.contains(&chrono::Datelike::weekday(&local)) {
        return true;
    }
    let time = local.time().with_nanosecond(0).unwrap_or(local.time());
    prefs.quiet_hours.is_some_and(|q| q.contains(time))
}

/// When `notification` should be e-mailed to a user with `prefs`, decided at `now`: `None` if
/// not at all (e-mail off, type not enabled, priority below the minimum, or a withdrawal);
/// otherwise `now`, or — inside quiet hours or on a day off — the first instant after `now`
/// that is outside quiet hours on a work day ([`next_open`]). E-mail is **deferred**, not
/// dropped, by quiet hours: it waits in the channel outbox until then. Unlike live pushes, the
/// `push` switch does not matter.
pub fn email_at(
    prefs: &Preferences,
    notification: &Notification,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if !prefs.email || notification.withdraws.is_some() || !accepts(prefs, notification) {
        return None;
    }
    Some(next_open(prefs, now))
}

/// `now` if it is outside quiet hours on a work day; otherwise the first later instant that is
/// (the end of the quiet hours, or the start of the next work day, in the user's time zone).
pub fn next_open(prefs: &Preferences, now: DateTime<Utc>) -> DateTime<Utc> {
    if !is_quiet_at(prefs, now) {
        return now;
    }
    let tz = prefs.time_zone;
    let today = now.with_timezone(&tz).date_naive();
    let mut times = vec![NaiveTime::MIN];
    times.extend(prefs.quiet_hours.map(|q| q.end));
    let mut best: Option<DateTime<Utc>> = None;
    // A work day comes within a week, and the end of quiet hours on it is never quiet.
    for day in 0..=8 {
        let Some(date) = today.checked_add_days(chrono::Days::new(day)) else {
            break;
        };
        for t in &times {
            let local = date.and_time(*t);
            // A local time skipped by a DST change: the first instant after the gap.
            let Some(candidate) = tz.from_local_datetime(&local).earliest().or_else(|| {
                tz.from_local_datetime(&(local + chrono::Duration::hours(1)))
                    .earliest()
            }) else {
                continue;
            };
            let candidate = candidate.with_timezone(&Utc);
            if candidate > now
                && !is_quiet_at(prefs, candidate)
                && best.is_none_or(|b| candidate < b)
            {
                best = Some(candidate);
            }
        }
    }
    best.unwrap_or(now)
}

fn err(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.into(),
    }
}

fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::Low => "low",
        Priority::Medium => "medium",
        Priority::High => "high",
        Priority::Urgent => "urgent",
    }
}

fn day_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "mon",
        Weekday::Tue => "tue",
        Weekday::Wed => "wed",
        Weekday::Thu => "thu",
        Weekday::Fri => "fri",
        Weekday::Sat => "sat",
        Weekday::Sun => "sun",
    }
}

fn parse_types(value: &Value) -> Result<Vec<NotificationType>, FieldError> {
    let names = value.as_array().ok_or_else(|| {
        err(
            "enabled_types",
            "must be an array of notification types (may be empty)",
        )
    })?;
    let mut chosen = vec![];
    for (i, name) in names.iter().enumerate() {
        let kind = name
            .as_str()
            .and_then(|s| ALL_TYPES.iter().find(|t| t.as_str() == s))
            .ok_or_else(|| {
                let all: Vec<_> = ALL_TYPES.iter().map(|t| t.as_str()).collect();
                err(
                    &format!("enabled_types[{i}]"),
                    format!("{name} is not a notification type: {}", all.join(", ")),
                )
            })?;
        chosen.push(*kind);
    }
    Ok(ALL_TYPES
        .into_iter()
        .filter(|t| chosen.contains(t))
        .collect())
}

fn parse_priority(value: &Value) -> Result<Priority, FieldError> {
    value
        .as_str()
        .and_then(|s| {
            [
                Priority::Low,
                Priority::Medium,
                Priority::High,
                Priority::Urgent,
            ]
            .into_iter()
            .find(|p| priority_name(*p) == s)
        })
        .ok_or_else(|| err("min_priority", "must be one of low, medium, high, urgent"))
}

fn parse_time(field: &str, value: Option<&Value>) -> Result<NaiveTime, FieldError> {
    let text = value
        .and_then(Value::as_str)
        .ok_or_else(|| err(field, "required: a local time \"HH:MM\""))?;
    NaiveTime::parse_from_str(text, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M:%S"))
        .map_err(|_| {
            err(
                field,
                format!("{text:?} is not a time \"HH:MM\" (00:00-23:59)"),
            )
        })
}

fn parse_quiet_hours(value: &Value) -> Result<Option<QuietHours>, FieldError> {
    if value.is_null() {
        return Ok(None);
    }
    let Some(window) = value.as_object() else {
        return Err(err(
            "quiet_hours",
            "must be null or {\"start\": \"HH:MM\", \"end\": \"HH:MM\"}",
        ));
    };
    let start = parse_time("quiet_hours.start", window.get("start"))?;
    let end = parse_time("quiet_hours.end", window.get("end"))?;
    if start == end {
        return Err(err(
            "quiet_hours.end",
            "must differ from start (use null for no quiet hours)",
        ));
    }
    if let Some(other) = window.keys().find(|k| *k != "start" && *k != "end") {
        return Err(err(
            &format!("quiet_hours.{other}"),
            "unknown field; quiet_hours has start and end",
        ));
    }
    Ok(Some(QuietHours { start, end }))
}

fn parse_time_zone(value: &Value) -> Result<Tz, FieldError> {
    let name = value.as_str().ok_or_else(|| {
        err(
            "time_zone",
            "must be an IANA time zone name, e.g. \"America/Bogota\"",
        )
    })?;
    Tz::from_str(name).map_err(|_| {
        err(
            "time_zone",
            format!("{name:?} is not an IANA time zone name, e.g. \"America/Bogota\" or \"UTC\""),
        )
    })
}

fn parse_days(value: &Value) -> Result<Vec<Weekday>, FieldError> {
    let names = value
        .as_array()
        .ok_or_else(|| err("work_days", "must be an array of days: mon, tue, … sun"))?;
    let mut chosen = vec![];
    for (i, name) in names.iter().enumerate() {
        let day = name
            .as_str()
            .and_then(|s| Weekday::from_str(s).ok())
            .ok_or_else(|| {
                err(
                    &format!("work_days[{i}]"),
                    format!("{name} is not a day: mon, tue, wed, thu, fri, sat, sun"),
                )
            })?;
        chosen.push(day);
    }
    if chosen.is_empty() {
        return Err(err(
            "work_days",
            "must name at least one day (to stop live pushes, set push to false)",
        ));
    }
    Ok(ALL_DAYS
        .into_iter()
        .filter(|d| chosen.contains(d))
        .collect())
}

fn parse_bool(field: &str, value: &Value) -> Result<bool, FieldError> {
    value
        .as_bool()
        .ok_or_else(|| err(field, "must be true or false"))
}

/// `stored` without the fields this version does not know (a row written by a newer version
/// still loads: unknown fields there are ignored rather than refused).
pub(crate) fn known_fields_only(stored: &Value) -> Value {
    let known: Map<String, Value> = stored
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| FIELDS.split(", ").any(|f| f == k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    Value::Object(known)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use uuid::Uuid;
    use vigia_schemas::Audience;

    fn notification(kind: NotificationType, priority: Priority) -> Notification {
        Notification {
            id: Uuid::nil(),
            tenant_id: 1,
            kind,
            priority,
            audience: Audience::User { user_id: 10 },
            title: "t".into(),
            message: "m".into(),
            data: Value::Null,
            actions: vec![],
            created_at: Utc::now(),
            withdraws: None,
        }
    }

    /// A fake "now": 2026-03-04 is a Wednesday.
    fn utc(day: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, h, m, 0).unwrap()
    }

    fn hot_lead() -> Notification {
        notification(NotificationType::HotLead, Priority::Urgent)
    }

    #[test]
    fn role_defaults_follow_the_spec() {
        use NotificationType::*;
        let ceo = Preferences::for_role(Role::Ceo);
        assert_eq!(ceo.enabled_types, ALL_TYPES.to_vec());
        assert_eq!(ceo.min_priority, Priority::Low);
        assert_eq!(Preferences::for_role(Role::Manager), ceo);
        let seller = Preferences::for_role(Role::Seller);
        assert_eq!(
            seller.enabled_types,
            vec![UnansweredConversation, HotLead, FollowUpReminder]
        );
        assert_eq!(seller.min_priority, Priority::Medium);
        let secretary = Preferences::for_role(Role::Secretary);
        assert_eq!(secretary.enabled_types, vec![UnansweredConversation]);
        assert_eq!(secretary.min_priority, Priority::High);
        let supervisor = Preferences::for_role(Role::Supervisor);
        assert_eq!(supervisor.enabled_types, vec![SessionTimeout]);
        assert_eq!(supervisor.min_priority, Priority::Medium);
        for p in [ceo, seller, secretary, supervisor] {
            assert_eq!(p.time_zone, Tz::UTC);
            assert_eq!(p.work_days.len(), 7);
            assert!(p.quiet_hours.is_none() && p.push && !p.email);
        }
    }

    #[test]
    fn type_and_priority_filters() {
        let now = utc(4, 12, 0);
        let seller = Preferences::for_role(Role::Seller);
        assert!(should_push(&seller, &hot_lead(), now));
        let report = notification(NotificationType::DailyReport, Priority::Low);
        assert!(!should_push(&seller, &report, now), "type not enabled");
        let low_follow_up = notification(NotificationType::FollowUpReminder, Priority::Low);
        assert!(!should_push(&seller, &low_follow_up, now), "below minimum");
        let ceo = Preferences::for_role(Role::Ceo);
        assert!(should_push(&ceo, &report, now));
        let off = Preferences { push: false, ..ceo };
        assert!(!should_push(&off, &report, now));
    }

    #[test]
    fn quiet_hours_crossing_midnight() {
        let prefs = Preferences::for_role(Role::Seller)
            .updated(&json!({"quiet_hours": {"start": "22:00", "end": "07:00"}}))
            .unwrap();
        let n = hot_lead();
        assert!(should_push(&prefs, &n, utc(4, 21, 59)));
        assert!(!should_push(&prefs, &n, utc(4, 22, 0)), "start is inside");
        assert!(!should_push(&prefs, &n, utc(4, 23, 30)));
        assert!(!should_push(&prefs, &n, utc(5, 0, 0)));
        assert!(!should_push(&prefs, &n, utc(5, 6, 59)));
        assert!(should_push(&prefs, &n, utc(5, 7, 0)), "end is outside");
        assert!(should_push(&prefs, &n, utc(5, 12, 0)));
    }

    #[test]
    fn quiet_hours_within_a_day() {
        let prefs = Preferences::for_role(Role::Ceo)
            .updated(&json!({"quiet_hours": {"start": "12:30", "end": "14:00"}}))
            .unwrap();
        let n = hot_lead();
        assert!(should_push(&prefs, &n, utc(4, 12, 29)));
        assert!(!should_push(&prefs, &n, utc(4, 13, 0)));
        assert!(should_push(&prefs, &n, utc(4, 14, 0)));
        assert!(should_push(&prefs, &n, utc(4, 23, 0)));
    }

    #[test]
    fn quiet_hours_are_in_the_users_time_zone() {
        // Bogotá is UTC-5 all year: 22:00-07:00 there is 03:00-12:00 UTC.
        let prefs = Preferences::for_role(Role::Seller)
            .updated(&json!({"time_zone": "America/Bogota",
                             "quiet_hours": {"start": "22:00", "end": "07:00"}}))
            .unwrap();
        let n = hot_lead();
        assert!(should_push(&prefs, &n, utc(4, 2, 59)), "21:59 in Bogotá");
        assert!(!should_push(&prefs, &n, utc(4, 3, 0)), "22:00 in Bogotá");
        assert!(!should_push(&prefs, &n, utc(4, 11, 59)), "06:59 in Bogotá");
        assert!(should_push(&prefs, &n, utc(4, 12, 0)), "07:00 in Bogotá");
        // The same window in UTC would be the other way round.
        let in_utc = Preferences {
            time_zone: Tz::UTC,
            ..prefs.clone()
        };
        assert!(!should_push(&in_utc, &n, utc(4, 2, 59)));
        assert!(should_push(&in_utc, &n, utc(4, 11, 59)));
    }

    #[test]
    fn work_days_are_local_days() {
        let prefs = Preferences::for_role(Role::Seller)
            .updated(&json!({"work_days": ["mon", "tue", "wed", "thu", "fri"],
                             "time_zone": "America/Bogota"}))
            .unwrap();
        let n = hot_lead();
        // 2026-03-06 is a Friday, 03-07 a Saturday, 03-09 a Monday.
        assert!(should_push(&prefs, &n, utc(6, 15, 0)));
        // Saturday 02:00 UTC is still Friday 21:00 in Bogotá.
        assert!(should_push(&prefs, &n, utc(7, 2, 0)));
        assert!(
            !should_push(&prefs, &n, utc(7, 5, 0)),
            "Saturday 00:00 in Bogotá"
        );
        assert!(!should_push(&prefs, &n, utc(8, 20, 0)), "Sunday");
        // Monday 03:00 UTC is Sunday 22:00 in Bogotá.
        assert!(!should_push(&prefs, &n, utc(9, 3, 0)));
        assert!(should_push(&prefs, &n, utc(9, 5, 0)));
    }

    #[test]
    fn withdrawals_ignore_type_priority_and_quiet_hours_but_not_push_off() {
        let prefs = Preferences::for_role(Role::Secretary)
            .updated(&json!({"quiet_hours": {"start": "00:00", "end": "23:59"}}))
            .unwrap();
        let mut withdrawal = notification(NotificationType::FollowUpReminder, Priority::Low);
        withdrawal.withdraws = Some(Uuid::new_v4());
        assert!(should_push(&prefs, &withdrawal, utc(4, 12, 0)));
        let off = Preferences {
            push: false,
            ..prefs
        };
        assert!(!should_push(&off, &withdrawal, utc(4, 12, 0)));
    }

    #[test]
    fn updates_keep_absent_fields_and_round_trip_through_json() {
        let base = Preferences::for_role(Role::Seller);
        let updated = base
            .updated(&json!({"min_priority": "high", "email": true,
                             "enabled_types": ["hot_lead", "unanswered_conversation", "hot_lead"],
                             "work_days": ["friday", "Mon"]}))
            .unwrap();
        assert_eq!(updated.min_priority, Priority::High);
        assert!(updated.email && updated.push);
        assert_eq!(
            updated.enabled_types,
            vec![
                NotificationType::UnansweredConversation,
                NotificationType::HotLead
            ]
        );
        assert_eq!(updated.work_days, vec![Weekday::Mon, Weekday::Fri]);
        assert_eq!(updated.time_zone, base.time_zone);
        let json = updated.to_json();
        assert_eq!(json["work_days"], json!(["mon", "fri"]));
        assert_eq!(json["min_priority"], "high");
        assert_eq!(
            Preferences::for_role(Role::Ceo).updated(&json).unwrap(),
            updated
        );
        let quiet = base
            .updated(&json!({"quiet_hours": {"start": "22:00", "end": "07:30"}}))
            .unwrap();
        assert_eq!(
            quiet.to_json()["quiet_hours"],
            json!({"start": "22:00", "end": "07:30"})
        );
        assert_eq!(quiet.updated(&json!({"quiet_hours": null})).unwrap(), base);
    }

    #[test]
    fn invalid_fields_are_each_reported_by_name() {
        let base = Preferences::for_role(Role::Seller);
        let errors = base
            .updated(&json!({
                "enabled_types": ["hot_lead", "cold_lead"],
                "min_priority": "critical",
                "quiet_hours": {"start": "25:00", "end": "07:00"},
                "time_zone": "Mars/Olympus",
                "work_days": [],
                "push": "yes",
                "colour": "red",
            }))
            .unwrap_err();
        let mut fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort();
        assert_eq!(
            fields,
            vec![
                "colour",
                "enabled_types[1]",
                "min_priority",
                "push",
                "quiet_hours.start",
                "time_zone",
                "work_days"
            ]
        );
        assert!(errors.iter().all(|e| !e.message.is_empty()), "{errors:?}");
        let same = base
            .updated(&json!({"quiet_hours": {"start": "07:00", "end": "07:00"}}))
            .unwrap_err();
        assert_eq!(same[0].field, "quiet_hours.end");
        assert_eq!(base.updated(&json!([1])).unwrap_err()[0].field, "");
    }

    #[test]
    fn e_mail_needs_the_switch_the_type_and_the_priority_but_not_push() {
        let now = utc(4, 12, 0);
        let report = notification(NotificationType::DailyReport, Priority::Low);
        let ceo = Preferences::for_role(Role::Ceo);
        assert_eq!(
            email_at(&ceo, &report, now),
            None,
            "e-mail is off by default"
        );
        let on = ceo.updated(&json!({"email": true, "push": false})).unwrap();
        assert_eq!(
            email_at(&on, &report, now),
            Some(now),
            "push off does not matter"
        );
        let picky = on.updated(&json!({"min_priority": "medium"})).unwrap();
        assert_eq!(email_at(&picky, &report, now), None, "below the minimum");
        let no_reports = on
            .updated(&json!({"enabled_types": ["performance_alert"]}))
            .unwrap();
        assert_eq!(
            email_at(&no_reports, &report, now),
            None,
            "type not enabled"
        );
        let mut withdrawal = report.clone();
        withdrawal.withdraws = Some(Uuid::new_v4());
        assert_eq!(
            email_at(&on, &withdrawal, now),
            None,
            "withdrawals are not e-mailed"
        );
    }

    #[test]
    fn quiet_hours_and_days_off_defer_e_mail_to_the_next_open_instant() {
        // Bogotá (UTC-5): quiet 22:00-07:00, Monday to Friday.
        let prefs = Preferences::for_role(Role::Ceo)
            .updated(&json!({"email": true, "time_zone": "America/Bogota",
                             "quiet_hours": {"start": "22:00", "end": "07:00"},
                             "work_days": ["mon", "tue", "wed", "thu", "fri"]}))
            .unwrap();
        let n = notification(NotificationType::PerformanceAlert, Priority::Medium);
        // Wednesday 15:00 in Bogotá: now.
        assert_eq!(email_at(&prefs, &n, utc(4, 20, 0)), Some(utc(4, 20, 0)));
        // Wednesday 23:30 in Bogotá (04:30 UTC Thursday): Thursday 07:00 in Bogotá.
        assert_eq!(email_at(&prefs, &n, utc(5, 4, 30)), Some(utc(5, 12, 0)));
        // Friday 22:00 in Bogotá: the weekend is off, so Monday 07:00.
        assert_eq!(email_at(&prefs, &n, utc(7, 3, 0)), Some(utc(9, 12, 0)));
        // Saturday noon: Monday 07:00 too (Monday 00:00-07:00 is quiet).
        assert_eq!(next_open(&prefs, utc(7, 17, 0)), utc(9, 12, 0));
        // Without quiet hours a day off ends at the next work day's midnight.
        let weekdays = Preferences {
            quiet_hours: None,
            ..prefs.clone()
        };
        assert_eq!(next_open(&weekdays, utc(7, 17, 0)), utc(9, 5, 0));
        // Whatever the time, the answer is never quiet and never before now.
        for hour in 0..24 * 7 {
            let now = utc(2, 0, 0) + chrono::Duration::hours(hour);
            let at = next_open(&prefs, now);
            assert!(at >= now && !is_quiet_at(&prefs, at), "{now} -> {at}");
        }
    }

    #[test]
    fn stored_rows_with_unknown_fields_still_load() {
        let stored = json!({"min_priority": "urgent", "from_the_future": 1});
        let prefs = Preferences::for_role(Role::Seller)
            .updated(&known_fields_only(&stored))
            .unwrap();
        assert_eq!(prefs.min_priority, Priority::Urgent);
    }
}
