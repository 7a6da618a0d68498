//! The daily report (contract §3.8): at 08:00 tenant time, yesterday's team totals, its top
//! performers and a summary of the alerts, as one `daily_report` notification to the CEO.
//!
//! - **When**: a deadline at 08:00 local time of each day, scheduled from the tenant's first
//!   event on. Like every deadline it fires when the tenant's event time or the clock watermark
//!   reaches it, so it comes at 08:00 (plus the watermark delay) on an idle stream too. 08:00 is
//!   taken in the tenant's zone on that very day, so DST days are right; "yesterday" is the
//!   local day before, 23 or 25 hours long on DST days.
//! - **Exactly once per tenant and day**: the notification's id is derived from (tenant, day),
//!   and its content only from events, so a replay after a crash rebuilds the same record, which
//!   the sinks and the inbox recognise by its id.
//! - **What**: messages and conversations of the day; waits that ended that day (answered, or
//!   closed without an answer) and how many were answered (engagement; a wait still open is
//!   counted among the unanswered alerts instead),
//!   response-time statistics; leads created and converted; per seller the same figures and a
//!   productivity score on the day's figures (the formula of [`super::sellers`], with the day
//!   instead of 7 days), top three first; alerts fired that day by type (withdrawals apart).
//!   Late events applied after 08:00 are not in the report already sent. A day on which nothing
//!   happened gets no report.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};
use vigia_schemas::{
    derive_id, Action, Audience, Event, Notification, NotificationType, Payload, Priority, Role,
    TenantId,
};

use super::conversations::Conversations;
use super::entities::EntitySet;
use super::leads::Leads;
use super::sellers::{day_start, local_instant, productivity, stats, Sellers};
use super::Output;
use crate::config::Thresholds;
use crate::texts;

/// Local hour of the report.
pub const REPORT_HOUR: u32 = 8;
/// Sellers listed as top performers.
pub const TOP_PERFORMERS: usize = 3;

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct DayCounts {
    messages_in: u32,
    messages_out: u32,
    conversations: EntitySet,
    /// Notifications fired, by type, and withdrawals.
    #[serde(with = "super::snapshot::alert_counts")]
    alerts: BTreeMap<&'static str, u32>,
    withdrawn: u32,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Reports {
    #[serde(with = "super::snapshot::tz")]
    tz: Tz,
    /// The day whose 08:00 report is scheduled.
    scheduled: Option<NaiveDate>,
    days: BTreeMap<NaiveDate, DayCounts>,
}

/// 08:00 local of `day` (the first existing instant from 08:00 on, if a DST gap swallows it).
pub(crate) fn report_time(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    local_instant(
        tz,
        day.and_hms_opt(REPORT_HOUR, 0, 0)
            .expect("08:00 is a valid time"),
    )
}

/// A day without a message, a wait, a lead or an alert: no report (a tenant that is closed on
/// Sundays gets no empty Monday report, and a backfill of old events does not send one report
/// for every day since).
fn nothing_happened(data: &Value) -> bool {
    let team = &data["team"];
    [
        "conversations",
        "messages_in",
        "messages_out",
        "waits_received",
        "leads_generated",
        "leads_converted",
    ]
    .iter()
    .all(|k| team[k].as_u64() == Some(0))
        && data["alerts"].as_object().is_none_or(|a| a.is_empty())
        && data["alerts_withdrawn"].as_u64() == Some(0)
}

impl Reports {
    pub fn new(th: &Thresholds) -> Self {
        Reports {
            tz: th.tz(),
            scheduled: None,
            days: BTreeMap::new(),
        }
    }

    fn day_of(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.tz).date_naive()
    }

    /// The first report to schedule for a tenant whose first applied event is at `at`: the
    /// next 08:00 after it. `None` once one is scheduled.
    pub fn first_schedule(&mut self, at: DateTime<Utc>) -> Option<(DateTime<Utc>, NaiveDate)> {
        if self.scheduled.is_some() {
            return None;
        }
        let today = self.day_of(at);
        let day = if report_time(self.tz, today) > at {
            today
        } else {
            today.succ_opt()?
        };
        self.scheduled = Some(day);
        Some((report_time(self.tz, day), day))
    }

    /// Counts what an applied event adds to its day.
    pub fn observe(&mut self, event: &Event) {
        let day = self.day_of(event.occurred_at);
        match &event.payload {
            Payload::MessageReceived(m) => {
                let d = self.days.entry(day).or_default();
                d.messages_in += 1;
                d.conversations.remember(&m.conversation_id);
            }
            Payload::MessageSent(m) if !m.automated => {
                let d = self.days.entry(day).or_default();
                d.messages_out += 1;
                d.conversations.remember(&m.conversation_id);
            }
            _ => {}
        }
    }

    /// Counts the notifications among `outputs` under the local day of their `created_at`.
    pub fn count_alerts(&mut self, outputs: &[Output]) {
        for o in outputs {
            let Output::Notification(n) = o else { continue };
            if n.kind == NotificationType::DailyReport {
                continue;
            }
            let day = self.day_of(n.created_at);
            let d = self.days.entry(day).or_default();
            if n.withdraws.is_some() && n.data["state"] == "corrected" {
                // The alert it withdraws should not have been sent: uncount it.
                let count = d.alerts.entry(n.kind.as_str()).or_default();
                *count = count.saturating_sub(1);
            } else if n.withdraws.is_some() {
                d.withdrawn += 1;
            } else {
                *d.alerts.entry(n.kind.as_str()).or_default() += 1;
            }
        }
    }

    /// Fires the report scheduled for 08:00 of `day` (about the day before), and returns the
    /// next one to schedule.
    #[allow(clippy::too_many_arguments)]
    pub fn fire(
        &mut self,
        tenant: TenantId,
        th: &Thresholds,
        day: NaiveDate,
        sellers: &Sellers,
        convs: &Conversations,
        leads: &Leads,
        out: &mut Vec<Output>,
    ) -> Option<(DateTime<Utc>, NaiveDate)> {
        if let Some(yesterday) = day.pred_opt() {
            let report = self.build(tenant, th, yesterday, day, sellers, convs, leads);
            if !nothing_happened(&report.data) {
                out.push(Output::Notification(report));
            }
            // Counts of the day before yesterday are not needed any more.
            self.days = self.days.split_off(&yesterday);
        }
        let next = day.succ_opt()?;
        self.scheduled = Some(next);
        Some((report_time(self.tz, next), next))
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        tenant: TenantId,
        th: &Thresholds,
        yesterday: NaiveDate,
        today: NaiveDate,
        sellers: &Sellers,
        convs: &Conversations,
        leads: &Leads,
    ) -> Notification {
        let (from, to) = (day_start(self.tz, yesterday), day_start(self.tz, today));
        let empty = DayCounts::default();
        let counts = self.days.get(&yesterday).unwrap_or(&empty);
        let waits = sellers.waits_between(from, to);
        let lead_figures = leads.per_seller_between(convs, from, to);

        let mut all_samples = Vec::new();
        let (mut ended, mut answered) = (0u32, 0u32);
        let mut rows = Vec::new();
        let mut ids: BTreeSet<u64> = waits.keys().copied().collect();
        ids.extend(lead_figures.keys().filter(|s| **s != 0));
        for seller in ids {
            let (samples, s_ended, s_answered) = waits.get(&seller).cloned().unwrap_or_default();
            let (generated, converted) = lead_figures.get(&seller).copied().unwrap_or_default();
            all_samples.extend(samples.iter().copied());
            ended += s_ended;
            answered += s_answered;
            let response = stats(samples);
            let engagement = (s_ended > 0).then(|| f64::from(s_answered) / f64::from(s_ended));
            let conversion = (generated > 0).then(|| f64::from(converted) / f64::from(generated));
            let score = productivity(th, &response, engagement, conversion, s_answered);
            rows.push((
                score, seller, response, s_ended, s_answered, generated, converted,
            ));
        }
        rows.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let top: Vec<Value> = rows
            .iter()
            .take(TOP_PERFORMERS)
            .map(
                |(score, seller, response, s_ended, s_answered, generated, converted)| {
                    json!({
                        "seller_id": seller,
                        "name": sellers.name(*seller),
                        "productivity_score": score,
                        "waits_received": s_ended,
                        "waits_answered": s_answered,
                        "response": response,
                        "leads_generated": generated,
                        "leads_converted": converted,
                    })
                },
            )
            .collect();
        let (generated, converted) = lead_figures
            .values()
            .fold((0, 0), |(g, c), (sg, sc)| (g + sg, c + sc));
        let response = stats(all_samples);
        let alerts_total: u32 = counts.alerts.values().sum();
        let (title, message) = texts::daily_report(
            th.language,
            yesterday,
            counts.conversations.len() as u32,
            answered,
            response.mean_seconds,
            converted,
            alerts_total,
        );
        let day = yesterday.to_string();
        Notification {
            id: derive_id("notification/daily_report", &[&tenant.to_string(), &day]),
            tenant_id: tenant,
            kind: NotificationType::DailyReport,
            priority: Priority::Low,
            audience: Audience::Role { role: Role::Ceo },
            title,
            message,
            data: json!({
                "day": day,
                "time_zone": self.tz.name(),
                "team": {
                    "conversations": counts.conversations.len(),
                    "messages_in": counts.messages_in,
                    "messages_out": counts.messages_out,
                    "waits_received": ended,
                    "waits_answered": answered,
                    "engagement_rate": (ended > 0).then(|| f64::from(answered) / f64::from(ended)),
                    "response": response,
                    "leads_generated": generated,
                    "leads_converted": converted,
                    "conversion_rate": (generated > 0).then(|| f64::from(converted) / f64::from(generated)),
                },
                "top_performers": top,
                "alerts": counts.alerts,
                "alerts_withdrawn": counts.withdrawn,
            }),
            actions: vec![Action {
                label: texts::open_report(th.language),
                action: "open_report".into(),
                params: json!({ "day": day }),
            }],
            created_at: report_time(self.tz, today),
            withdraws: None,
        }
    }
}
