//! Seller metrics, rank and performance alerts (contract §3.6, §3.7).
//!
//! # Metrics
//!
//! Evaluated for a tenant at an instant `at` (event time), per seller:
//! - **Conversations** — those the seller *counts for*: the assigned seller (latest
//!   `conversation.assigned` / `message.received.seller_id` by event time), else the last
//!   non-automated replier. `total`: all of them still kept — those with an event in the last
//!   7 days (or held by a pending deadline or a kept lead, see [`super::retention`]); `active`: not closed since their last message;
//!   `today`: with a message at or after the start of today in the tenant's `time_zone`;
//!   `unanswered` (live gauge): with an open wait whose deadline (`unanswered_after` after the
//!   customer message) is `<= at` — by event time, whether or not the notification has fired yet.
//!   These figures, and the lead figures below, are kept up to date per seller as conversations
//!   and leads change and as the evaluated minute moves ([`super::figures`]), so that an
//!   evaluation does not visit every conversation and lead.
//! - **Response time** — the samples the rule of [`super::conversations`] produces, by replier,
//!   placed at the reply's time, in three windows: `1h` = `(at − 1 h, at]` (a sample exactly 1 h
//!   old is out), `today` = `[start of today, at]` in the tenant's zone (DST aware: a local day
//!   may last 23 or 25 h, and a day whose midnight does not exist starts at its first existing
//!   instant), `7d` = `(at − 7 d, at]`. Count, mean, p50, p90 (nearest rank: the
//!   `ceil(p/100 · n)`-th smallest) and max. Samples are kept in a time-ordered map per seller
//!   and pruned beyond 7 d; the values inside each window, sorted, are kept up to date as
//!   samples arrive, are taken back and leave ([`super::windows`]), so that an evaluation
//!   neither collects nor sorts them.
//! - **Total chat time** — the sum over the seller's conversations of last message − first
//!   message (any message, automated included), in seconds.
//! - **Engagement rate** (7 d) — answered / received waits. A *received* wait is one that ended
//!   in `(at − 7 d, at]` — by a reply (answered, counted for the replier) or by a close (not
//!   answered, counted for the conversation's seller) — or one still open and overdue at `at`
//!   (not answered). Waits still open within their deadline are not counted yet.
//! - **Leads** — leads whose `lead.created` was seen and that are still kept (an event within
//!   the last 7 days, or a pending follow-up: [`super::retention`]), by seller (the lead's, else
//!   its conversation's): generated, converted (status now `converted`), conversion rate.
//! - **Activity level** — messages handled in `(at − 1 h, at]` (customer messages in the seller's
//!   conversations + the seller's non-automated messages): `low` below [`ACTIVITY_MEDIUM`],
//!   `high` from [`ACTIVITY_HIGH`], `medium` between.
//! - **Productivity score** (0–10) — a weighted mean of four components in [0, 1], over the
//!   components that have data, times 10, rounded to 2 decimals:
//!
//!   | component | weight | value | has data when |
//!   |---|---|---|---|
//!   | speed | 0.35 | `min(1, response_target / mean response 7d)` | a sample in 7 d |
//!   | engagement | 0.25 | engagement rate | a received wait |
//!   | conversion | 0.25 | `min(1, conversion rate / 0.25)` ([`CONVERSION_FULL_MARKS`]) | a lead |
//!   | volume | 0.15 | `min(1, answered waits 7d / 50)` ([`VOLUME_FULL_MARKS`]) | always |
//!
//!   So a seller with no activity scores 0, and one without leads (a call-center agent) is not
//!   penalised for it. Pure arithmetic on the figures above: deterministic.
//! - **Rank** — 1 for the best score in the tenant; equal scores are ordered by seller id.
//!
//! Sellers ranked: everyone with seller activity (conversations, waits, messages, leads) or a
//! `user.upserted` with role `seller`, minus users whose latest `user.upserted` (by event time)
//! has another role or `active: false`.
//!
//! # Snapshots: when
//!
//! Every time the tenant's *event-time* watermark (newest `occurred_at` − `watermark_delay`)
//! enters a new minute `B`, before applying the event that moved it, the metrics of every seller
//! are evaluated at `B` and a [`SellerMetrics`] snapshot (id from tenant, seller, `B`) is emitted
//! for each seller whose metrics differ from its last snapshot (ignoring id and time; the rank and
//! `day` are part of it, so rank moves and day changes re-emit). A snapshot at `B` therefore
//! reflects every event applied before the watermark reached `B`, and a gap in the stream gives
//! one snapshot, at the minute it ends in — not one per minute of the gap. The clock watermark
//! never emits snapshots, so they are a function of the log alone (byte-identical on replay, and
//! dependent on arrival order within the allowed lateness: a late event corrects the next
//! snapshot). [`super::PartitionEngine::seller_metrics`] evaluates at the current watermark,
//! clock included, for a live API.
//!
//! # Performance alerts
//!
//! At each evaluation, per seller, on the local day of `B`: mean response time today >
//! `alert_mean_response`, or unanswered > `alert_unanswered`, or conversion rate <
//! `alert_conversion_rate` with more than `alert_conversion_min_leads` leads, each fires a
//! `performance_alert` (medium) once per (seller, local day, condition), id derived from those,
//! `created_at = B`. One notification per alert with audience `{"role": "ceo"}`: the gateway
//! shows every notification of a tenant to its CEO and managers alike, so a second copy for
//! managers would show twice. Like snapshots, alerts are evaluated only when event time moves:
//! on an idle stream a condition that becomes true (an unanswered wait going overdue) alerts at
//! the next event.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::json;
use uuid::Uuid;
use vigia_schemas::{
    derive_id, Action, ActivityLevel, Audience, Event, Notification, NotificationType, Payload,
    Priority, ResponseTimeStats, Role, SellerMetrics, TeamResponseTimes, TenantId, UserId,
};

use super::conversations::{Conversations, EndedWait};
use super::figures::{Counts, Figures};
use super::leads::Leads;
use super::timeline::Timeline;
use super::windows::{
    self, Bounds, Key, SellerWindows, Shift, SortedSamples, HOUR, KINDS, TODAY, WEEK,
};
use super::Output;
use crate::config::Thresholds;
use crate::texts::{self, PerformanceCondition};

/// Messages in the last hour from which the activity level is `medium`.
pub const ACTIVITY_MEDIUM: u32 = 10;
/// … and `high`.
pub const ACTIVITY_HIGH: u32 = 30;
/// A conversion rate that earns full marks for conversion in the productivity score.
pub const CONVERSION_FULL_MARKS: f64 = 0.25;
/// Answered waits in 7 days that earn full marks for volume.
pub const VOLUME_FULL_MARKS: f64 = 50.0;
const WEIGHT_SPEED: f64 = 0.35;
const WEIGHT_ENGAGEMENT: f64 = 0.25;
const WEIGHT_CONVERSION: f64 = 0.25;
const WEIGHT_VOLUME: f64 = 0.15;

/// Time-ordered facts of one seller, keyed by (event time, id) so late arrivals sort in place.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct SellerLog {
    /// Response seconds by (reply time, starting customer message).
    #[serde(with = "super::snapshot::pairs")]
    samples: BTreeMap<(DateTime<Utc>, Uuid), f64>,
    /// Ended waits by (end time, starting customer message): answered or not.
    #[serde(with = "super::snapshot::pairs")]
    waits: BTreeMap<(DateTime<Utc>, Uuid), bool>,
    /// Messages handled, by (event time, event id).
    messages: Timeline<(DateTime<Utc>, Uuid)>,
    /// `samples` and `waits` inside the windows of the last evaluation ([`Sellers::bounds`]).
    #[serde(skip)]
    windows: SellerWindows,
}

/// What the latest `user.upserted` of a user said.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct UserInfo {
    at: DateTime<Utc>,
    name: String,
    ranked: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Sellers {
    #[serde(with = "super::snapshot::tz")]
    tz: Tz,
    logs: BTreeMap<UserId, SellerLog>,
    users: BTreeMap<UserId, UserInfo>,
    /// The minute of the last evaluation.
    last_minute: Option<DateTime<Utc>>,
    last_emitted: BTreeMap<UserId, SellerMetrics>,
    alerted: BTreeSet<(NaiveDate, UserId, PerformanceCondition)>,
    /// The windows of the last evaluation, which every [`SellerLog::windows`] and `team` hold:
    /// `None` until the first one (and after a restore), when they are filled from the logs.
    #[serde(skip)]
    bounds: Option<Bounds>,
    /// The samples of every ranked seller with a log, per window: the team's response times.
    #[serde(skip)]
    team: [SortedSamples; 3],
    /// The conversation and lead figures per seller, kept up to date for the evaluations on
    /// the watermark ([`super::figures`]): built on the first one (and after a restore).
    #[serde(skip)]
    figures: Figures,
}

impl Sellers {
    pub fn new(th: &Thresholds) -> Self {
        Sellers {
            tz: th.tz(),
            logs: BTreeMap::new(),
            users: BTreeMap::new(),
            last_minute: None,
            last_emitted: BTreeMap::new(),
            alerted: BTreeSet::new(),
            bounds: None,
            team: Default::default(),
            figures: Figures::default(),
        }
    }

    /// Whether the seller is counted (and ranked): not marked otherwise by a `user.upserted`.
    fn ranked(&self, seller: UserId) -> bool {
        self.users.get(&seller).is_none_or(|u| u.ranked)
    }

    /// Whether `seller` still has figures in a window (response times, waits, messages).
    pub fn has_recent_figures(&self, seller: UserId) -> bool {
        self.logs
            .get(&seller)
            .is_some_and(|l| !(l.samples.is_empty() && l.waits.is_empty() && l.messages.is_empty()))
    }

    /// Forgets a seller (see [`super::retention`]): their figures and their `user.upserted`.
    pub fn forget(&mut self, seller: UserId) {
        let ranked = self.ranked(seller);
        if let Some(log) = self.logs.remove(&seller) {
            if ranked && self.bounds.is_some() {
                for kind in KINDS {
                    for v in log.windows.samples[kind].values() {
                        self.team[kind].remove(*v);
                    }
                }
            }
        }
        self.users.remove(&seller);
        self.last_emitted.remove(&seller);
    }

    /// Records what an applied event means for the metrics; `ended` are the waits it ended.
    pub fn observe(&mut self, event: &Event, convs: &Conversations, ended: &mut Vec<EndedWait>) {
        let key = (event.occurred_at, event.event_id);
        match &event.payload {
            Payload::MessageReceived(m) => {
                if let Some(s) = convs
                    .get(&m.conversation_id)
                    .and_then(|c| c.metrics_seller())
                {
                    self.logs.entry(s).or_default().messages.insert(key);
                }
            }
            Payload::MessageSent(m) if !m.automated => {
                self.logs
                    .entry(m.seller_id)
                    .or_default()
                    .messages
                    .insert(key);
            }
            Payload::UserUpserted(u) => {
                let newer = self.users.get(&u.user_id).is_none_or(|i| key.0 >= i.at);
                if newer {
                    let was = self.ranked(u.user_id);
                    self.users.insert(
                        u.user_id,
                        UserInfo {
                            at: key.0,
                            name: u.name.clone(),
                            ranked: u.role == Role::Seller && u.active != Some(false),
                        },
                    );
                    let now = self.ranked(u.user_id);
                    if was != now {
                        self.rerank(u.user_id, now);
                    }
                }
            }
            _ => {}
        }
        for w in ended.drain(..) {
            let Some(seller) = w.seller else {
                continue;
            };
            let key = (w.ended_at, w.starter);
            let ranked = self.ranked(seller);
            let (bounds, team) = (self.bounds.as_ref(), &mut self.team);
            if w.retracted {
                // Of a seller forgotten since, nothing is left to take back.
                if let Some(log) = self.logs.get_mut(&seller) {
                    let wait = log.waits.remove(&key);
                    index_wait(bounds, &mut log.windows, &key, wait, None);
                    if let Some(old) = log.samples.remove(&key) {
                        index_sample(
                            bounds,
                            team,
                            &mut log.windows,
                            ranked,
                            &key,
                            Some(old),
                            None,
                        );
                    }
                }
                continue;
            }
            let log = self.logs.entry(seller).or_default();
            let wait = log.waits.insert(key, w.answered);
            index_wait(bounds, &mut log.windows, &key, wait, Some(w.answered));
            if w.answered {
                let secs = (w.ended_at - w.started_at).num_milliseconds() as f64 / 1000.0;
                let old = log.samples.insert(key, secs);
                index_sample(
                    bounds,
                    team,
                    &mut log.windows,
                    ranked,
                    &key,
                    old,
                    Some(secs),
                );
            }
        }
    }

    /// The conversation and lead figures, for the events and the retention that change them.
    pub fn figures(&mut self) -> &mut Figures {
        &mut self.figures
    }

    /// Whether the kept figures are those counted afresh ([`Figures::check`]).
    #[cfg(test)]
    pub fn check_figures(&self, convs: &Conversations, leads: &Leads) -> Result<(), String> {
        self.figures.check(convs, leads)
    }

    /// If `watermark` entered a new minute: evaluates there, emits the snapshots that changed and
    /// the performance alerts that are due, and forgets what no window needs any more.
    pub fn on_watermark(
        &mut self,
        tenant: TenantId,
        th: &Thresholds,
        watermark: DateTime<Utc>,
        convs: &mut Conversations,
        leads: &mut Leads,
        out: &mut Vec<Output>,
    ) {
        let minute = floor_minute(watermark);
        if self.last_minute.is_some_and(|m| minute <= m) {
            return;
        }
        self.last_minute = Some(minute);
        self.advance_windows(minute);
        let today = day_start(self.tz, minute.with_timezone(&self.tz).date_naive());
        self.figures.advance(minute, today, convs, leads);
        let all = self.evaluate(tenant, th, minute, convs, leads);
        let mut present = BTreeSet::new();
        for m in &all {
            present.insert(m.seller_id);
            let changed = self
                .last_emitted
                .get(&m.seller_id)
                .is_none_or(|last| !same_figures(last, m));
            if changed {
                self.last_emitted.insert(m.seller_id, m.clone());
                out.push(Output::SellerMetrics(Box::new(m.clone())));
            }
        }
        self.last_emitted.retain(|s, _| present.contains(s));
        for m in &all {
            self.alert(tenant, th, m, out);
        }
        self.prune(minute);
    }

    fn alert(
        &mut self,
        tenant: TenantId,
        th: &Thresholds,
        m: &SellerMetrics,
        out: &mut Vec<Output>,
    ) {
        for condition in PerformanceCondition::ALL {
            let (crossed, value, threshold) = match condition {
                PerformanceCondition::SlowResponse => {
                    let limit = th.alert_mean_response.as_secs_f64();
                    let mean = m.response_today.mean_seconds;
                    (mean.is_some_and(|v| v > limit), json!(mean), json!(limit))
                }
                PerformanceCondition::Unanswered => (
                    m.conversations_unanswered > th.alert_unanswered,
                    json!(m.conversations_unanswered),
                    json!(th.alert_unanswered),
                ),
                PerformanceCondition::LowConversion => (
                    m.leads_generated > th.alert_conversion_min_leads
                        && m.conversion_rate
                            .is_some_and(|r| r < th.alert_conversion_rate),
                    json!(m.conversion_rate),
                    json!(th.alert_conversion_rate),
                ),
            };
            if !crossed || !self.alerted.insert((m.day, m.seller_id, condition)) {
                continue;
            }
            let name = self.users.get(&m.seller_id).map(|u| u.name.clone());
            let who = name.clone().unwrap_or_else(|| format!("#{}", m.seller_id));
            let mean = m.response_today.mean_seconds.unwrap_or(0.0).max(0.0);
            let (title, message) = texts::performance_alert(
                th.language,
                &who,
                condition,
                std::time::Duration::from_secs_f64(mean),
                m.conversations_unanswered,
                m.conversion_rate.unwrap_or(0.0),
                m.leads_generated,
            );
            let day = m.day.to_string();
            out.push(Output::Notification(Notification {
                id: derive_id(
                    "notification/performance_alert",
                    &[
                        &tenant.to_string(),
                        &m.seller_id.to_string(),
                        &day,
                        condition.as_str(),
                    ],
                ),
                tenant_id: tenant,
                kind: NotificationType::PerformanceAlert,
                priority: Priority::Medium,
                audience: Audience::Role { role: Role::Ceo },
                title,
                message,
                data: json!({
                    "seller_id": m.seller_id,
                    "seller_name": name,
                    "condition": condition.as_str(),
                    "value": value,
                    "threshold": threshold,
                    "day": day,
                    "time_zone": m.time_zone,
                    "leads_generated": m.leads_generated,
                    "seller_metrics_id": m.id,
                }),
                actions: vec![Action {
                    label: texts::open_seller(th.language),
                    action: "open_seller".into(),
                    params: json!({ "seller_id": m.seller_id }),
                }],
                created_at: m.snapshot_at,
                withdraws: None,
            }));
        }
    }

    /// Moves the windows ([`Self::bounds`]) to those of `at`: the samples and waits that left
    /// them are taken out, those that entered put in (a new day, the first evaluation and a
    /// restore refill them from the logs), and the statistics that changed are recomputed.
    fn advance_windows(&mut self, at: DateTime<Utc>) {
        let today = day_start(self.tz, at.with_timezone(&self.tz).date_naive());
        let new = Bounds::new(at, today);
        let old = self.bounds.take();
        let users = &self.users;
        let ranked = |s: &UserId| users.get(s).is_none_or(|u| u.ranked);
        for kind in KINDS {
            match windows::shift(old.as_ref(), &new, kind) {
                Shift::Slide { leave, enter } => {
                    for (seller, log) in self.logs.iter_mut() {
                        let r = ranked(seller);
                        let w = &mut log.windows.samples[kind];
                        for (_, v) in windows::leaving(&log.samples, leave) {
                            w.remove(*v);
                            if r {
                                self.team[kind].remove(*v);
                            }
                        }
                        for (_, v) in windows::entering(&log.samples, enter) {
                            w.insert(*v);
                            if r {
                                self.team[kind].insert(*v);
                            }
                        }
                    }
                }
                Shift::Refill => {
                    let mut team = Vec::new();
                    for (seller, log) in self.logs.iter_mut() {
                        let values: Vec<f64> = windows::inside(&log.samples, new.ranges[kind])
                            .copied()
                            .collect();
                        if ranked(seller) {
                            team.extend_from_slice(&values);
                        }
                        log.windows.samples[kind].set(values);
                    }
                    self.team[kind].set(team);
                }
            }
        }
        let count = |(ended, answered): &mut (u32, u32), a: bool, add: bool| {
            if add {
                *ended += 1;
                *answered += u32::from(a);
            } else {
                *ended -= 1;
                *answered -= u32::from(a);
            }
        };
        match windows::shift(old.as_ref(), &new, WEEK) {
            Shift::Slide { leave, enter } => {
                for log in self.logs.values_mut() {
                    for (_, a) in windows::leaving(&log.waits, leave) {
                        count(&mut log.windows.waits, *a, false);
                    }
                    for (_, a) in windows::entering(&log.waits, enter) {
                        count(&mut log.windows.waits, *a, true);
                    }
                }
            }
            Shift::Refill => {
                for log in self.logs.values_mut() {
                    log.windows.waits = (0, 0);
                    for a in windows::inside(&log.waits, new.ranges[WEEK]) {
                        count(&mut log.windows.waits, *a, true);
                    }
                }
            }
        }
        for log in self.logs.values_mut() {
            for w in &mut log.windows.samples {
                w.refresh();
            }
        }
        for w in &mut self.team {
            w.refresh();
        }
        self.bounds = Some(new);
    }

    /// The time of the windows the index holds (that of the last evaluation on the watermark).
    #[cfg(test)]
    pub fn windows_at(&self) -> Option<DateTime<Utc>> {
        self.bounds.map(|b| b.at)
    }

    /// Whether every seller's windows and the team's hold exactly what a scan of the logs finds
    /// in the windows of [`Self::bounds`] (values bit for bit, in order), with fresh statistics.
    #[cfg(test)]
    pub fn check_windows(&self) -> Result<(), String> {
        let Some(bounds) = self.bounds else {
            return Ok(());
        };
        fn bits<'a>(v: impl IntoIterator<Item = &'a f64>) -> Vec<u64> {
            v.into_iter().map(|x| x.to_bits()).collect()
        }
        for kind in KINDS {
            let mut team = Vec::new();
            for (seller, log) in &self.logs {
                let mut want: Vec<f64> = windows::inside(&log.samples, bounds.ranges[kind])
                    .copied()
                    .collect();
                want.sort_by(f64::total_cmp);
                if self.ranked(*seller) {
                    team.extend_from_slice(&want);
                }
                let got = &log.windows.samples[kind];
                if bits(got.values()) != bits(&want) {
                    return Err(format!(
                        "seller {seller} window {kind}: {got:?} != {want:?}"
                    ));
                }
                if got.stats() != stats(want) {
                    return Err(format!("seller {seller} window {kind}: stale statistics"));
                }
            }
            team.sort_by(f64::total_cmp);
            if bits(self.team[kind].values()) != bits(&team) {
                return Err(format!(
                    "team window {kind}: {:?} != {team:?}",
                    self.team[kind]
                ));
            }
        }
        for (seller, log) in &self.logs {
            let mut want = (0, 0);
            for a in windows::inside(&log.waits, bounds.ranges[WEEK]) {
                want.0 += 1;
                want.1 += u32::from(*a);
            }
            if log.windows.waits != want {
                return Err(format!(
                    "seller {seller} waits: {:?} != {want:?}",
                    log.windows.waits
                ));
            }
        }
        Ok(())
    }

    /// `seller` became ranked (`now`) or stopped being: their samples join or leave the team's.
    fn rerank(&mut self, seller: UserId, now: bool) {
        let (Some(log), Some(_)) = (self.logs.get(&seller), self.bounds) else {
            return;
        };
        for kind in KINDS {
            for v in log.windows.samples[kind].values() {
                if now {
                    self.team[kind].insert(*v);
                } else {
                    self.team[kind].remove(*v);
                }
            }
        }
    }

    /// Windows only look back from evaluation times, which only move forward.
    fn prune(&mut self, at: DateTime<Utc>) {
        let week = (at - Duration::days(7), Uuid::max());
        let hour = (at - Duration::hours(1), Uuid::max());
        for log in self.logs.values_mut() {
            log.samples = log.samples.split_off(&week);
            log.waits = log.waits.split_off(&week);
            log.messages.forget_before(&hour);
        }
        // Alerts of days before yesterday can no longer be evaluated again.
        let yesterday = at.with_timezone(&self.tz).date_naive().pred_opt();
        if let Some(y) = yesterday {
            self.alerted = self
                .alerted
                .split_off(&(y, 0, PerformanceCondition::SlowResponse));
        }
    }

    /// Per seller with answered or missed waits in `from <= time < to`: the response times of
    /// the waits answered then, and (waits ended, waits answered). Sellers marked as not ranked
    /// (`user.upserted` with another role, or inactive) are left out.
    pub fn waits_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> BTreeMap<UserId, (Vec<f64>, u32, u32)> {
        let range = (from, Uuid::nil())..(to, Uuid::nil());
        let mut out = BTreeMap::new();
        for (seller, log) in &self.logs {
            if self.users.get(seller).is_some_and(|u| !u.ranked) {
                continue;
            }
            let samples: Vec<f64> = log.samples.range(range.clone()).map(|(_, v)| *v).collect();
            let (mut ended, mut answered) = (0u32, 0u32);
            for (_, a) in log.waits.range(range.clone()) {
                ended += 1;
                answered += u32::from(*a);
            }
            if ended > 0 {
                out.insert(*seller, (samples, ended, answered));
            }
        }
        out
    }

    /// The seller's name from their latest `user.upserted`.
    pub fn name(&self, seller: UserId) -> Option<&str> {
        self.users.get(&seller).map(|u| u.name.as_str())
    }

    /// Every ranked seller's metrics at `at`, best rank first.
    pub fn evaluate(
        &self,
        tenant: TenantId,
        th: &Thresholds,
        at: DateTime<Utc>,
        convs: &Conversations,
        leads: &Leads,
    ) -> Vec<SellerMetrics> {
        self.evaluate_with(tenant, th, at, convs, leads, true)
    }

    /// [`Self::evaluate`] scanning the logs even where the windows hold the figures: the
    /// reference the windows are tested against.
    #[cfg(test)]
    pub fn evaluate_by_scan(
        &self,
        tenant: TenantId,
        th: &Thresholds,
        at: DateTime<Utc>,
        convs: &Conversations,
        leads: &Leads,
    ) -> Vec<SellerMetrics> {
        self.evaluate_with(tenant, th, at, convs, leads, false)
    }

    /// With `use_index`, the window figures come from the windows when they are those of `at`
    /// (the evaluations on the watermark); otherwise (the live API's instants) from a scan.
    fn evaluate_with(
        &self,
        tenant: TenantId,
        th: &Thresholds,
        at: DateTime<Utc>,
        convs: &Conversations,
        leads: &Leads,
        use_index: bool,
    ) -> Vec<SellerMetrics> {
        let day = at.with_timezone(&self.tz).date_naive();
        let today = day_start(self.tz, day);
        let indexed = use_index && self.bounds == Some(Bounds::new(at, today));
        let mut ids: BTreeSet<UserId> = self.logs.keys().copied().collect();

        // The conversation and lead figures: kept up to date for the evaluations on the
        // watermark, scanned for other instants (and as the reference in tests).
        let index = (use_index && self.figures.is_at(at, today)).then_some(&self.figures);
        let scanned = match index {
            Some(f) => {
                ids.extend(f.sellers());
                BTreeMap::new()
            }
            None => {
                let scanned = scan_figures(at, today, convs, leads);
                ids.extend(
                    scanned
                        .iter()
                        .filter(|(_, (c, _))| c.names_seller())
                        .map(|(id, _)| *id),
                );
                scanned
            }
        };
        let figures = |seller: UserId| match index {
            Some(f) => f.of(seller),
            None => scanned.get(&seller).copied().unwrap_or_default(),
        };
        ids.extend(
            self.users
                .iter()
                .filter(|(_, u)| u.ranked)
                .map(|(id, _)| *id),
        );
        ids.retain(|id| self.users.get(id).is_none_or(|u| u.ranked));

        let empty = SellerLog::default();
        let week_from = at - Duration::days(7);
        let mut all: Vec<SellerMetrics> = ids
            .into_iter()
            .map(|seller| {
                let log = self.logs.get(&seller).unwrap_or(&empty);
                let (conv, chat_seconds) = figures(seller);
                let (generated, converted) = (conv.generated, conv.converted);
                let (response_1h, response_today, response_7d, (ended, answered)) = if indexed {
                    let w = &log.windows;
                    (
                        w.samples[HOUR].stats(),
                        w.samples[TODAY].stats(),
                        w.samples[WEEK].stats(),
                        w.waits,
                    )
                } else {
                    let (mut ended, mut answered) = (0u32, 0u32);
                    for (_, a) in log.waits.range(after(week_from)..=(at, Uuid::max())) {
                        ended += 1;
                        answered += u32::from(*a);
                    }
                    (
                        stats(window(&log.samples, Some(at - Duration::hours(1)), at)),
                        stats(today_window(&log.samples, today, at)),
                        stats(window(&log.samples, Some(week_from), at)),
                        (ended, answered),
                    )
                };
                let received = conv.unanswered + ended;
                let messages = log
                    .messages
                    .count_between(&after(at - Duration::hours(1)), &(at, Uuid::max()))
                    as u32;
                let engagement_rate = ratio(answered, received);
                let conversion_rate = ratio(converted, generated);
                let productivity_score =
                    productivity(th, &response_7d, engagement_rate, conversion_rate, answered);
                SellerMetrics {
                    id: Uuid::nil(),
                    tenant_id: tenant,
                    seller_id: seller,
                    snapshot_at: at,
                    time_zone: self.tz.name().to_string(),
                    day,
                    conversations_total: conv.total,
                    conversations_active: conv.active,
                    conversations_today: conv.today,
                    conversations_unanswered: conv.unanswered,
                    response_1h,
                    response_today,
                    response_7d,
                    total_chat_seconds: chat_seconds,
                    waits_received: received,
                    waits_answered: answered,
                    engagement_rate,
                    leads_generated: generated,
                    leads_converted: converted,
                    conversion_rate,
                    leads_generated_today: conv.generated_today,
                    leads_converted_today: conv.converted_today,
                    hot_leads: conv.hot,
                    messages_last_hour: messages,
                    activity_level: activity_level(messages),
                    productivity_score,
                    rank: 0,
                    sellers_ranked: 0,
                    team: None,
                }
            })
            .collect();
        all.sort_by(|a, b| {
            b.productivity_score
                .total_cmp(&a.productivity_score)
                .then(a.seller_id.cmp(&b.seller_id))
        });
        // The ranked sellers with a log are those in `all` with a log.
        let team = if indexed {
            TeamResponseTimes {
                response_1h: self.team[HOUR].stats(),
                response_today: self.team[TODAY].stats(),
                response_7d: self.team[WEEK].stats(),
            }
        } else {
            let (mut hour, mut day_samples, mut week) = (Vec::new(), Vec::new(), Vec::new());
            for m in &all_ids_in_order(&all) {
                let log = self.logs.get(m).unwrap_or(&empty);
                hour.extend(window(&log.samples, Some(at - Duration::hours(1)), at));
                day_samples.extend(today_window(&log.samples, today, at));
                week.extend(window(&log.samples, Some(week_from), at));
            }
            TeamResponseTimes {
                response_1h: stats(hour),
                response_today: stats(day_samples),
                response_7d: stats(week),
            }
        };
        let n = all.len() as u32;
        for (i, m) in all.iter_mut().enumerate() {
            m.rank = i as u32 + 1;
            m.sellers_ranked = n;
            m.id = snapshot_id(tenant, m.seller_id, at);
            m.team = Some(team.clone());
        }
        all
    }
}

/// A sample at `key` of a seller changed from `old` to `new` (absent: `None`): the windows of
/// the last evaluation that hold `key` follow, and the team's if the seller is ranked.
fn index_sample(
    bounds: Option<&Bounds>,
    team: &mut [SortedSamples; 3],
    windows: &mut SellerWindows,
    ranked: bool,
    key: &Key,
    old: Option<f64>,
    new: Option<f64>,
) {
    let Some(bounds) = bounds else {
        return;
    };
    for kind in KINDS {
        if !bounds.contains(kind, key) {
            continue;
        }
        if let Some(v) = old {
            windows.samples[kind].remove(v);
            if ranked {
                team[kind].remove(v);
            }
        }
        if let Some(v) = new {
            windows.samples[kind].insert(v);
            if ranked {
                team[kind].insert(v);
            }
        }
    }
}

/// An ended wait at `key` changed from `old` to `new` (answered or not; absent: `None`).
fn index_wait(
    bounds: Option<&Bounds>,
    windows: &mut SellerWindows,
    key: &Key,
    old: Option<bool>,
    new: Option<bool>,
) {
    if !bounds.is_some_and(|b| b.contains(WEEK, key)) {
        return;
    }
    let (ended, answered) = &mut windows.waits;
    if let Some(a) = old {
        *ended -= 1;
        *answered -= u32::from(a);
    }
    if let Some(a) = new {
        *ended += 1;
        *answered += u32::from(a);
    }
}

/// The conversation and lead figures of every seller at `at` (`today`: the start of its day),
/// with chat time, by a visit of every conversation and lead: what [`Figures`] keeps up to date.
fn scan_figures(
    at: DateTime<Utc>,
    today: DateTime<Utc>,
    convs: &Conversations,
    leads: &Leads,
) -> BTreeMap<UserId, (Counts, f64)> {
    let mut out: BTreeMap<UserId, (Counts, f64)> = BTreeMap::new();
    for c in convs.iter() {
        let Some(s) = c.metrics_seller() else {
            continue;
        };
        let (f, chat_seconds) = out.entry(s).or_default();
        f.total += 1;
        f.active += u32::from(c.is_open());
        f.today += u32::from(c.last_message_at.is_some_and(|m| m >= today));
        f.unanswered += u32::from(c.overdue_at(at));
        *chat_seconds += c.chat_seconds();
    }
    for (s, l) in leads.seller_figures(convs, today, at + Duration::milliseconds(1)) {
        let (f, _) = out.entry(s).or_default();
        f.generated = l.generated;
        f.converted = l.converted;
        f.generated_today = l.generated_between;
        f.converted_today = l.converted_between;
        f.hot = l.hot;
    }
    out
}

fn all_ids_in_order(all: &[SellerMetrics]) -> BTreeSet<UserId> {
    all.iter().map(|m| m.seller_id).collect()
}

pub(crate) fn snapshot_id(tenant: TenantId, seller: UserId, at: DateTime<Utc>) -> Uuid {
    derive_id(
        "seller_metrics",
        &[
            &tenant.to_string(),
            &seller.to_string(),
            &at.timestamp_millis().to_string(),
        ],
    )
}

/// Equal figures, whatever the snapshot's id and time.
fn same_figures(a: &SellerMetrics, b: &SellerMetrics) -> bool {
    let mut b = b.clone();
    b.id = a.id;
    b.snapshot_at = a.snapshot_at;
    *a == b
}

fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    let ms = t.timestamp_millis();
    DateTime::from_timestamp_millis(ms - ms.rem_euclid(60_000)).unwrap_or(t)
}

/// The first instant of local `day` in `tz`: local midnight, or — where a DST change skips
/// midnight — the first local time of the day that exists; the earlier one if midnight repeats.
pub(crate) fn day_start(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    local_instant(
        tz,
        day.and_hms_opt(0, 0, 0).expect("midnight is a valid time"),
    )
}

/// `local` in `tz`: the earlier instant if it repeats, the first existing quarter hour after it
/// if a DST gap swallows it.
pub(crate) fn local_instant(tz: Tz, local: chrono::NaiveDateTime) -> DateTime<Utc> {
    // Gaps are at most a few hours and start on a quarter hour in every zone in use.
    for quarter in 0..(4 * 24) {
        let candidate = local + Duration::minutes(15 * quarter);
        if let Some(t) = tz.from_local_datetime(&candidate).earliest() {
            return t.with_timezone(&Utc);
        }
    }
    Utc.from_utc_datetime(&local)
}

/// The smallest key after every key at `t`.
fn after(t: DateTime<Utc>) -> (DateTime<Utc>, Uuid) {
    (t, Uuid::max())
}

/// Values with `from < time <= to` (`from` none: unbounded).
fn window(
    map: &BTreeMap<(DateTime<Utc>, Uuid), f64>,
    from: Option<DateTime<Utc>>,
    to: DateTime<Utc>,
) -> Vec<f64> {
    let hi = (to, Uuid::max());
    match from {
        Some(f) if f >= to => Vec::new(),
        Some(f) => map.range(after(f)..=hi).map(|(_, v)| *v).collect(),
        None => map.range(..=hi).map(|(_, v)| *v).collect(),
    }
}

/// Values with `from <= time <= to`.
fn today_window(
    map: &BTreeMap<(DateTime<Utc>, Uuid), f64>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<f64> {
    if from > to {
        return Vec::new();
    }
    map.range((from, Uuid::nil())..=(to, Uuid::max()))
        .map(|(_, v)| *v)
        .collect()
}

/// Count, mean, nearest-rank p50 and p90, max.
pub(crate) fn stats(mut values: Vec<f64>) -> ResponseTimeStats {
    values.sort_by(f64::total_cmp);
    windows::stats_sorted(&values)
}

fn ratio(part: u32, whole: u32) -> Option<f64> {
    (whole > 0).then(|| f64::from(part) / f64::from(whole))
}

pub(crate) fn activity_level(messages: u32) -> ActivityLevel {
    if messages >= ACTIVITY_HIGH {
        ActivityLevel::High
    } else if messages >= ACTIVITY_MEDIUM {
        ActivityLevel::Medium
    } else {
        ActivityLevel::Low
    }
}

/// The productivity score of the module doc.
pub(crate) fn productivity(
    th: &Thresholds,
    response_7d: &ResponseTimeStats,
    engagement_rate: Option<f64>,
    conversion_rate: Option<f64>,
    answered_7d: u32,
) -> f64 {
    let target = th.response_target.as_secs_f64();
    let speed = response_7d
        .mean_seconds
        .map(|mean| if mean <= target { 1.0 } else { target / mean });
    let components = [
        (WEIGHT_SPEED, speed),
        (WEIGHT_ENGAGEMENT, engagement_rate),
        (
            WEIGHT_CONVERSION,
            conversion_rate.map(|r| (r / CONVERSION_FULL_MARKS).min(1.0)),
        ),
        (
            WEIGHT_VOLUME,
            Some((f64::from(answered_7d) / VOLUME_FULL_MARKS).min(1.0)),
        ),
    ];
    let (mut sum, mut weights) = (0.0, 0.0);
    for (w, v) in components {
        if let Some(v) = v {
            sum += w * v.clamp(0.0, 1.0);
            weights += w;
        }
    }
    let score = if weights > 0.0 {
        10.0 * sum / weights
    } else {
        0.0
    };
    (score * 100.0).round() / 100.0
}
