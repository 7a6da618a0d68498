//! The live metrics board: the latest seller-metrics snapshot of every seller, per tenant, as the
//! processors publish them (`seller_metrics` topic), and the tenant's KPIs derived from them.
//! Pure state, no I/O: the consumers feed it, the REST handlers and the `metrics` push read it.
//!
//! **Tenant KPIs** are sums of the sellers' figures, except the response times, which are the
//! team's own figures from the tenant's latest snapshot instant (`team` in the snapshots: every
//! ranked seller's samples taken together, so the team p90 is a true percentile). Snapshots
//! written before the processors added them have no `team`; for those the board falls back to
//! the count-weighted mean of the sellers' means and the *highest seller p90* (an upper bound of
//! the team's), and says so (`source: "sellers"`).
//!
//! **"Unanswered now" between snapshots.** The processors emit snapshots when event time
//! crosses a minute, so on an idle stream the snapshot's unanswered count stands still while
//! the unanswered-conversation alerts keep firing by the clock. The board therefore adds to
//! each seller's snapshot count the alerts seen since that snapshot ([`Board::note_unanswered`]):
//! an alert (no `withdraws`) created after the snapshot's instant counts one more, a withdrawal
//! (answered or closed) created after it one less, until a newer snapshot of the seller —
//! which counts every overdue wait itself — replaces them. An alert is created at its deadline
//! and a withdrawal when the wait ended (event time, like `snapshot_at`), so a wait is counted
//! by the snapshot or by the alerts, never by both: a wait that became overdue after the
//! snapshot is +1 (and 0 again once withdrawn), one overdue at the snapshot and ended after it
//! is −1. Alerts are recognised by id (an alert seen twice counts once; a withdrawal counts
//! once per alert it withdraws) and attributed to the seller named in their data (the
//! conversation's seller when it fired; a reassignment in between, or an alert without a
//! seller, which goes to the secretaries, is only reflected by the next snapshot). A seller's
//! count never goes below zero.
//!
//! After a restart the board re-reads every snapshot from the topic's beginning, and the gateway
//! reloads the unanswered alerts of the last [`UNANSWERED_RELOAD`] from the inbox (what reached
//! the gateway before the restart; newer ones come through its consumer as usual), so the
//! figures after a restart are those before it. Order does not matter: alerts older than a
//! seller's snapshot are ignored or forgotten whenever they meet.
//!
//! The board also keeps, for the 24 h chart, each seller's rolling one-hour mean response time
//! at the end of every quarter hour ([`Board::series`]): the last snapshot of the quarter; the
//! team line is the team's one-hour mean at the quarter's last snapshot instant.
//!
//! Not here (yet): hot leads now (they need the `lead_scores` topic and the tenant's hot-lead
//! threshold).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;
use vigia_schemas::{
    Notification, NotificationType, ResponseTimeStats, SellerMetrics, TeamResponseTimes, TenantId,
    UserId,
};

/// How far back the gateway reloads unanswered alerts at start, and how long the board keeps
/// an alert that no snapshot has superseded (a seller without snapshots).
pub const UNANSWERED_RELOAD: Duration = Duration::days(7);

/// A window name that is none of `1h`, `today`, `7d`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("window must be 1h, today or 7d, not {0:?}")]
pub struct UnknownWindow(pub String);

/// The response-time window a view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    LastHour,
    Today,
    LastWeek,
}

impl Window {
    /// `1h`, `today` or `7d`.
    pub fn parse(s: &str) -> Result<Window, UnknownWindow> {
        match s {
            "1h" => Ok(Window::LastHour),
            "today" => Ok(Window::Today),
            "7d" => Ok(Window::LastWeek),
            other => Err(UnknownWindow(other.to_string())),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Window::LastHour => "1h",
            Window::Today => "today",
            Window::LastWeek => "7d",
        }
    }

    fn of(self, m: &SellerMetrics) -> &ResponseTimeStats {
        match self {
            Window::LastHour => &m.response_1h,
            Window::Today => &m.response_today,
            Window::LastWeek => &m.response_7d,
        }
    }

    fn of_team(self, t: &TeamResponseTimes) -> &ResponseTimeStats {
        match self {
            Window::LastHour => &t.response_1h,
            Window::Today => &t.response_today,
            Window::LastWeek => &t.response_7d,
        }
    }
}

/// A team's response times over one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TeamResponse {
    pub count: u32,
    pub mean_seconds: Option<f64>,
    pub p50_seconds: Option<f64>,
    /// The team's p90: of all its sellers' samples together (`source: "team"`), or, from old
    /// snapshots without team figures, the highest seller p90 (`source: "sellers"`).
    pub p90_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
    /// `"team"`: the processors' team figures at the tenant's latest snapshot instant, exact.
    /// `"sellers"`: rebuilt from the sellers' latest snapshots (old records): count-weighted
    /// mean, highest seller p90 and max, no p50.
    pub source: &'static str,
}

fn from_team(s: &ResponseTimeStats) -> TeamResponse {
    TeamResponse {
        count: s.count,
        mean_seconds: s.mean_seconds,
        p50_seconds: s.p50_seconds,
        p90_seconds: s.p90_seconds,
        max_seconds: s.max_seconds,
        source: "team",
    }
}

/// The fallback for snapshots without team figures.
fn from_sellers<'a>(stats: impl Iterator<Item = &'a ResponseTimeStats>) -> TeamResponse {
    let (mut count, mut total) = (0u32, 0.0);
    let (mut p90, mut max) = (None::<f64>, None::<f64>);
    let highest = |acc: Option<f64>, v: Option<f64>| match (acc, v) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    for s in stats {
        if let Some(mean) = s.mean_seconds {
            count += s.count;
            total += mean * f64::from(s.count);
        }
        p90 = highest(p90, s.p90_seconds);
        max = highest(max, s.max_seconds);
    }
    TeamResponse {
        count,
        mean_seconds: (count > 0).then(|| total / f64::from(count)),
        p50_seconds: None,
        p90_seconds: p90,
        max_seconds: max,
        source: "sellers",
    }
}

/// A tenant's KPIs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantKpis {
    pub tenant_id: TenantId,
    /// The newest snapshot the figures come from; `None` before the first one.
    pub as_of: Option<DateTime<Utc>>,
    pub sellers: u32,
    pub conversations_today: u32,
    pub conversations_active: u32,
    pub unanswered_now: u32,
    pub response_1h: TeamResponse,
    pub response_today: TeamResponse,
    pub leads_generated: u32,
    pub leads_converted: u32,
    pub conversion_rate: Option<f64>,
    /// Leads created today (tenant time), and converted today.
    pub leads_today: u32,
    pub converted_today: u32,
    pub conversion_rate_today: Option<f64>,
    /// Open leads that notified as hot and have not cooled down since.
    pub hot_leads_now: u32,
    pub messages_last_hour: u32,
}

/// Width of a chart point.
pub const SERIES_STEP_SECONDS: i64 = 15 * 60;
/// How far back the chart goes.
pub const SERIES_SPAN_SECONDS: i64 = 24 * 3600;

/// Unanswered-conversation alerts of one seller not yet superseded by a snapshot (module docs).
#[derive(Debug, Default, Clone)]
struct LiveUnanswered {
    /// Alerts, by id → their `created_at` (the deadline).
    fired: HashMap<Uuid, DateTime<Utc>>,
    /// Withdrawals, by the id of the alert withdrawn → their `created_at` (the wait's end).
    withdrawn: HashMap<Uuid, DateTime<Utc>>,
}

impl LiveUnanswered {
    /// Forgets what happened at or before `at` (a snapshot of that instant counts it).
    fn forget_until(&mut self, at: DateTime<Utc>) {
        self.fired.retain(|_, t| *t > at);
        self.withdrawn.retain(|_, t| *t > at);
    }

    fn is_empty(&self) -> bool {
        self.fired.is_empty() && self.withdrawn.is_empty()
    }
}

/// A seller's unanswered conversations now: the snapshot's count, plus the alerts created
/// after its instant, minus the withdrawals created after it; never negative.
fn unanswered_now(snapshot: &SellerMetrics, live: Option<&LiveUnanswered>) -> u32 {
    let Some(live) = live else {
        return snapshot.conversations_unanswered;
    };
    let after = |times: &HashMap<Uuid, DateTime<Utc>>| {
        times
            .values()
            .filter(|t| **t > snapshot.snapshot_at)
            .count() as i64
    };
    let count =
        i64::from(snapshot.conversations_unanswered) + after(&live.fired) - after(&live.withdrawn);
    count.clamp(0, i64::from(u32::MAX)) as u32
}

/// The seller an unanswered-conversation alert (or its withdrawal) is about: `data.seller_id`,
/// else the user it is addressed to.
fn unanswered_seller(n: &Notification) -> Option<UserId> {
    n.data
        .get("seller_id")
        .and_then(Value::as_u64)
        .or(match n.audience {
            vigia_schemas::Audience::User { user_id } => Some(user_id),
            vigia_schemas::Audience::Role { .. } => None,
        })
}

/// A seller's chart point: the one-hour response figures of the quarter's last snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    at: DateTime<Utc>,
    count: u32,
    mean: Option<f64>,
}

/// The response-time chart of a tenant: quarter-hour buckets (start times, Unix seconds), the
/// team's count-weighted mean of the sellers' one-hour means, and each seller's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub buckets: Vec<i64>,
    pub team: Vec<Option<f64>>,
    pub sellers: BTreeMap<UserId, Vec<Option<f64>>>,
}

#[derive(Debug, Default)]
pub struct Board {
    tenants: HashMap<TenantId, BTreeMap<UserId, SellerMetrics>>,
    /// Per tenant, seller and quarter-hour bucket start (Unix seconds).
    history: HashMap<TenantId, BTreeMap<UserId, BTreeMap<i64, Point>>>,
    /// Per tenant and quarter-hour bucket start: the team's one-hour figures at the quarter's
    /// last snapshot instant that had them.
    team_history: HashMap<TenantId, BTreeMap<i64, Point>>,
    /// Per tenant and seller: unanswered alerts since the seller's snapshot.
    live: HashMap<TenantId, HashMap<UserId, LiveUnanswered>>,
}

impl Board {
    /// Keeps `snapshot` if it is the seller's newest. Returns whether the board changed.
    pub fn apply(&mut self, snapshot: SellerMetrics) -> bool {
        self.record(&snapshot);
        let sellers = self.tenants.entry(snapshot.tenant_id).or_default();
        match sellers.get(&snapshot.seller_id) {
            Some(current) if current.snapshot_at >= snapshot.snapshot_at => false,
            _ => {
                if let Some(tenant) = self.live.get_mut(&snapshot.tenant_id) {
                    if let Some(live) = tenant.get_mut(&snapshot.seller_id) {
                        live.forget_until(snapshot.snapshot_at);
                        if live.is_empty() {
                            tenant.remove(&snapshot.seller_id);
                        }
                    }
                }
                sellers.insert(snapshot.seller_id, snapshot);
                true
            }
        }
    }

    /// Takes an unanswered-conversation alert or withdrawal into the sellers' "unanswered now"
    /// (module docs); anything else is ignored. Returns whether the tenant's figures changed.
    pub fn note_unanswered(&mut self, n: &Notification) -> bool {
        if n.kind != NotificationType::UnansweredConversation {
            return false;
        }
        let Some(seller) = unanswered_seller(n) else {
            return false;
        };
        let snapshot = self.tenants.get(&n.tenant_id).and_then(|s| s.get(&seller));
        if snapshot.is_some_and(|m| n.created_at <= m.snapshot_at) {
            return false; // the snapshot counts it already
        }
        let live = self
            .live
            .entry(n.tenant_id)
            .or_default()
            .entry(seller)
            .or_default();
        // Without snapshots nothing supersedes them: forget what is older than the reload.
        let horizon = n.created_at - UNANSWERED_RELOAD;
        live.fired.retain(|_, t| *t >= horizon);
        live.withdrawn.retain(|_, t| *t >= horizon);
        let new = match n.withdraws {
            None => live.fired.insert(n.id, n.created_at).is_none(),
            Some(withdrawn) => live.withdrawn.insert(withdrawn, n.created_at).is_none(),
        };
        new && snapshot.is_some()
    }

    /// The seller's unanswered conversations now: their snapshot's count corrected by the
    /// alerts since (module docs).
    pub fn unanswered(&self, m: &SellerMetrics) -> u32 {
        unanswered_now(
            m,
            self.live
                .get(&m.tenant_id)
                .and_then(|t| t.get(&m.seller_id)),
        )
    }

    /// Keeps the snapshot as its quarter's point if it is the quarter's latest; forgets points
    /// more than a day older than the seller's newest.
    fn record(&mut self, m: &SellerMetrics) {
        let points = self
            .history
            .entry(m.tenant_id)
            .or_default()
            .entry(m.seller_id)
            .or_default();
        let t = m.snapshot_at.timestamp();
        let bucket = t - t.rem_euclid(SERIES_STEP_SECONDS);
        let point = Point {
            at: m.snapshot_at,
            count: m.response_1h.count,
            mean: m.response_1h.mean_seconds,
        };
        if points.get(&bucket).is_none_or(|p| p.at <= point.at) {
            points.insert(bucket, point);
        }
        if let Some((&newest, _)) = points.last_key_value() {
            *points = points.split_off(&(newest - SERIES_SPAN_SECONDS));
        }
        if let Some(team) = &m.team {
            let points = self.team_history.entry(m.tenant_id).or_default();
            let point = Point {
                at: m.snapshot_at,
                count: team.response_1h.count,
                mean: team.response_1h.mean_seconds,
            };
            if points.get(&bucket).is_none_or(|p| p.at < point.at) {
                points.insert(bucket, point);
            }
            if let Some((&newest, _)) = points.last_key_value() {
                *points = points.split_off(&(newest - SERIES_SPAN_SECONDS));
            }
        }
    }

    /// The last 24 h of quarter-hour points of the tenant (of `only` that seller, if given),
    /// ending at the newest bucket of any of its sellers. The tenant's team line is the team's
    /// one-hour mean at each quarter's last snapshot instant; for quarters of old snapshots
    /// without team figures (and for a single seller's view), the count-weighted mean of the
    /// chosen sellers' points.
    pub fn series(&self, tenant: TenantId, only: Option<UserId>) -> Series {
        let empty = BTreeMap::new();
        let sellers = self.history.get(&tenant).unwrap_or(&empty);
        let chosen: Vec<(&UserId, &BTreeMap<i64, Point>)> = sellers
            .iter()
            .filter(|(id, _)| only.is_none_or(|o| o == **id))
            .collect();
        let Some(newest) = chosen
            .iter()
            .filter_map(|(_, p)| p.last_key_value().map(|(k, _)| *k))
            .max()
        else {
            return Series {
                buckets: vec![],
                team: vec![],
                sellers: BTreeMap::new(),
            };
        };
        let buckets: Vec<i64> = (0..SERIES_SPAN_SECONDS / SERIES_STEP_SECONDS)
            .rev()
            .map(|i| newest - i * SERIES_STEP_SECONDS)
            .collect();
        let mut team = Vec::with_capacity(buckets.len());
        let team_points = self.team_history.get(&tenant).filter(|_| only.is_none());
        for b in &buckets {
            if let Some(p) = team_points.and_then(|t| t.get(b)) {
                team.push(p.mean);
                continue;
            }
            let (mut count, mut total) = (0u32, 0.0);
            for (_, points) in &chosen {
                if let Some(Point {
                    count: c,
                    mean: Some(m),
                    ..
                }) = points.get(b)
                {
                    count += c;
                    total += m * f64::from(*c);
                }
            }
            team.push((count > 0).then(|| total / f64::from(count)));
        }
        let sellers = chosen
            .iter()
            .map(|(id, points)| {
                (
                    **id,
                    buckets
                        .iter()
                        .map(|b| points.get(b).and_then(|p| p.mean))
                        .collect(),
                )
            })
            .collect();
        Series {
            buckets,
            team,
            sellers,
        }
    }

    /// The tenant's sellers, best rank first. Ranks come from the processors' snapshots, which
    /// may be of different minutes; ties and gaps are resolved by productivity score, then id.
    pub fn sellers(&self, tenant: TenantId) -> Vec<&SellerMetrics> {
        let mut all: Vec<&SellerMetrics> = self
            .tenants
            .get(&tenant)
            .map(|s| s.values().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| {
            b.productivity_score
                .total_cmp(&a.productivity_score)
                .then(a.seller_id.cmp(&b.seller_id))
        });
        all
    }

    pub fn seller(&self, tenant: TenantId, seller: UserId) -> Option<&SellerMetrics> {
        self.tenants.get(&tenant)?.get(&seller)
    }

    pub fn kpis(&self, tenant: TenantId) -> TenantKpis {
        let sellers = self.sellers(tenant);
        let sum = |f: fn(&SellerMetrics) -> u32| sellers.iter().map(|m| f(m)).sum::<u32>();
        let generated = sum(|m| m.leads_generated);
        let converted = sum(|m| m.leads_converted);
        let today = sum(|m| m.leads_generated_today);
        let converted_today = sum(|m| m.leads_converted_today);
        let as_of = sellers.iter().map(|m| m.snapshot_at).max();
        // The team figures of the latest instant (the same in each of its snapshots).
        let team = sellers
            .iter()
            .filter(|m| Some(m.snapshot_at) == as_of)
            .find_map(|m| m.team.as_ref());
        let response = |window: Window| match team {
            Some(t) => from_team(window.of_team(t)),
            None => from_sellers(sellers.iter().map(|m| window.of(m))),
        };
        TenantKpis {
            tenant_id: tenant,
            as_of,
            sellers: sellers.len() as u32,
            conversations_today: sum(|m| m.conversations_today),
            conversations_active: sum(|m| m.conversations_active),
            unanswered_now: sellers.iter().map(|m| self.unanswered(m)).sum(),
            response_1h: response(Window::LastHour),
            response_today: response(Window::Today),
            leads_generated: generated,
            leads_converted: converted,
            conversion_rate: (generated > 0).then(|| f64::from(converted) / f64::from(generated)),
            leads_today: today,
            converted_today,
            conversion_rate_today: (today > 0)
                .then(|| f64::from(converted_today) / f64::from(today)),
            hot_leads_now: sum(|m| m.hot_leads),
            messages_last_hour: sum(|m| m.messages_last_hour),
        }
    }

    /// One leaderboard row: the snapshot's figures (with `conversations_unanswered` corrected
    /// by the alerts since, see [`Board::unanswered`]), its position on the board, and the
    /// response times of `window` as `response`.
    pub fn row(&self, m: &SellerMetrics, position: usize, window: Window) -> Value {
        let mut row = serde_json::to_value(m).unwrap_or(Value::Null);
        if let Value::Object(fields) = &mut row {
            fields.insert("conversations_unanswered".into(), self.unanswered(m).into());
            fields.insert("position".into(), (position + 1).into());
            fields.insert("window".into(), window.name().into());
            fields.insert(
                "response".into(),
                serde_json::to_value(window.of(m)).unwrap_or(Value::Null),
            );
        }
        row
    }

    /// What CEO/manager connections are pushed when the tenant's figures change:
    /// `{"tenant": <kpis>, "sellers": [<row>…]}` (rows with today's response times).
    pub fn push_payload(&self, tenant: TenantId) -> Value {
        let sellers: Vec<Value> = self
            .sellers(tenant)
            .iter()
            .enumerate()
            .map(|(i, m)| self.row(m, i, Window::Today))
            .collect();
        serde_json::json!({ "tenant": self.kpis(tenant), "sellers": sellers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use uuid::Uuid;
    use vigia_schemas::ActivityLevel;

    fn stats(count: u32, mean: f64, p90: f64) -> ResponseTimeStats {
        ResponseTimeStats {
            count,
            mean_seconds: Some(mean),
            p50_seconds: Some(mean),
            p90_seconds: Some(p90),
            max_seconds: Some(p90),
        }
    }

    fn snapshot(tenant: TenantId, seller: UserId, minute: u32, score: f64) -> SellerMetrics {
        SellerMetrics {
            id: Uuid::new_v4(),
            tenant_id: tenant,
            seller_id: seller,
            snapshot_at: Utc.with_ymd_and_hms(2026, 3, 2, 9, minute, 0).unwrap(),
            time_zone: "UTC".into(),
            day: chrono::NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
            conversations_total: 10,
            conversations_active: 4,
            conversations_today: 6,
            conversations_unanswered: 1,
            response_1h: stats(2, 60.0, 90.0),
            response_today: stats(4, 30.0, 80.0),
            response_7d: ResponseTimeStats::default(),
            total_chat_seconds: 0.0,
            waits_received: 4,
            waits_answered: 4,
            engagement_rate: Some(1.0),
            leads_generated: 4,
            leads_converted: 1,
            conversion_rate: Some(0.25),
            leads_generated_today: 2,
            leads_converted_today: 1,
            hot_leads: 1,
            team: None,
            messages_last_hour: 7,
            activity_level: ActivityLevel::Medium,
            productivity_score: score,
            rank: 1,
            sellers_ranked: 1,
        }
    }

    #[test]
    fn only_a_newer_snapshot_replaces_the_current_one() {
        let mut board = Board::default();
        assert!(board.apply(snapshot(1, 10, 5, 5.0)));
        assert!(!board.apply(snapshot(1, 10, 4, 9.0)), "older");
        assert!(
            !board.apply(snapshot(1, 10, 5, 9.0)),
            "same minute: first wins"
        );
        assert_eq!(board.seller(1, 10).unwrap().productivity_score, 5.0);
        assert!(board.apply(snapshot(1, 10, 6, 7.0)));
        assert_eq!(board.seller(1, 10).unwrap().productivity_score, 7.0);
    }

    #[test]
    fn kpis_of_old_snapshots_sum_the_sellers_and_weight_the_mean_by_samples() {
        let mut board = Board::default();
        board.apply(snapshot(1, 10, 5, 5.0));
        let mut b = snapshot(1, 11, 6, 8.0);
        b.response_1h = stats(6, 20.0, 200.0);
        b.leads_converted = 3;
        board.apply(b);
        board.apply(snapshot(2, 10, 7, 1.0));
        let k = board.kpis(1);
        assert_eq!(
            (k.sellers, k.conversations_today, k.unanswered_now),
            (2, 12, 2)
        );
        // (2 × 60 + 6 × 20) / 8
        assert_eq!(k.response_1h.count, 8);
        assert_eq!(k.response_1h.mean_seconds, Some(30.0));
        assert_eq!(k.response_1h.p90_seconds, Some(200.0), "highest seller p90");
        assert_eq!(k.response_1h.source, "sellers");
        assert_eq!(k.response_1h.p50_seconds, None);
        assert_eq!((k.leads_generated, k.leads_converted), (8, 4));
        assert_eq!(k.conversion_rate, Some(0.5));
        assert_eq!(
            (k.leads_today, k.converted_today, k.hot_leads_now),
            (4, 2, 2)
        );
        assert_eq!(k.conversion_rate_today, Some(0.5));
        assert_eq!(k.as_of.unwrap().format("%M").to_string(), "06");
        assert_eq!(board.kpis(3).sellers, 0);
        assert_eq!(board.kpis(3).response_1h.mean_seconds, None);
    }

    #[test]
    fn the_leaderboard_is_sorted_by_score_and_shows_the_chosen_window() {
        let mut board = Board::default();
        board.apply(snapshot(1, 10, 5, 5.0));
        board.apply(snapshot(1, 11, 5, 8.0));
        board.apply(snapshot(1, 12, 5, 8.0));
        let ids: Vec<UserId> = board.sellers(1).iter().map(|m| m.seller_id).collect();
        assert_eq!(ids, vec![11, 12, 10]);
        let row = board.row(board.sellers(1)[2], 2, Window::LastHour);
        assert_eq!(row["position"], 3);
        assert_eq!(row["window"], "1h");
        assert_eq!(row["response"]["count"], 2);
        let payload = board.push_payload(1);
        assert_eq!(payload["sellers"][0]["seller_id"], 11);
        assert_eq!(payload["sellers"][0]["response"]["count"], 4, "today");
        assert_eq!(payload["tenant"]["sellers"], 3);
    }

    #[test]
    fn the_series_keeps_each_quarters_last_point_and_weights_the_team_mean() {
        let mut board = Board::default();
        // 09:01 and 09:05 fall in the 09:00 quarter: the later one counts.
        let mut a = snapshot(1, 10, 1, 5.0);
        a.response_1h = stats(1, 100.0, 100.0);
        board.apply(a);
        let mut a2 = snapshot(1, 10, 5, 5.0);
        a2.response_1h = stats(2, 60.0, 60.0);
        board.apply(a2);
        let mut b = snapshot(1, 11, 20, 5.0);
        b.response_1h = stats(6, 20.0, 20.0);
        board.apply(b);
        let mut b0 = snapshot(1, 11, 3, 5.0);
        b0.response_1h = stats(2, 30.0, 30.0);
        board.apply(b0);
        let s = board.series(1, None);
        assert_eq!(s.buckets.len(), 96);
        let nine = Utc
            .with_ymd_and_hms(2026, 3, 2, 9, 0, 0)
            .unwrap()
            .timestamp();
        assert_eq!(*s.buckets.last().unwrap(), nine + 15 * 60);
        assert_eq!(s.buckets[94], nine);
        assert_eq!(s.sellers[&10][94], Some(60.0));
        assert_eq!(s.sellers[&10][95], None);
        assert_eq!(
            s.sellers[&11][94],
            Some(30.0),
            "an older snapshot of the quarter still counts"
        );
        // (2 × 60 + 2 × 30) / 4
        assert_eq!(s.team[94], Some(45.0));
        assert_eq!(s.team[95], Some(20.0));
        assert_eq!(s.team[0], None);
        let own = board.series(1, Some(10));
        assert_eq!(own.sellers.keys().collect::<Vec<_>>(), vec![&10]);
        assert_eq!(
            own.team.last(),
            Some(&Some(60.0)),
            "ends at its newest quarter"
        );
        assert!(board.series(2, None).buckets.is_empty());
    }

    fn team(hour: ResponseTimeStats, today: ResponseTimeStats) -> TeamResponseTimes {
        TeamResponseTimes {
            response_1h: hour,
            response_today: today,
            response_7d: ResponseTimeStats::default(),
        }
    }

    #[test]
    fn the_team_figures_come_from_the_latest_snapshot_instant() {
        let mut board = Board::default();
        // Seller 10 at 09:05 (older, with other team figures), sellers 11 and 12 at 09:06.
        let mut a = snapshot(1, 10, 5, 5.0);
        a.team = Some(team(stats(3, 10.0, 15.0), stats(3, 10.0, 15.0)));
        board.apply(a);
        for seller in [11, 12] {
            let mut m = snapshot(1, seller, 6, 5.0);
            // Per seller p90s of 90 (1 h) and 80 (today): the worst seller's would be 90.
            m.team = Some(team(stats(9, 40.0, 70.0), stats(12, 35.0, 65.0)));
            board.apply(m);
        }
        let k = board.kpis(1);
        assert_eq!(k.response_1h.source, "team");
        assert_eq!(
            k.response_1h.p90_seconds,
            Some(70.0),
            "the team's p90, not 90"
        );
        assert_eq!(k.response_1h.count, 9);
        assert_eq!(k.response_1h.mean_seconds, Some(40.0));
        assert_eq!(k.response_1h.p50_seconds, Some(40.0));
        assert_eq!(k.response_today.p90_seconds, Some(65.0));
        assert_eq!(k.response_today.count, 12);
        let payload = board.push_payload(1);
        assert_eq!(payload["tenant"]["response_1h"]["p90_seconds"], 70.0);
        assert_eq!(payload["tenant"]["response_1h"]["source"], "team");
        // An old record (no team figures) as the latest instant: the fallback, and it says so.
        board.apply(snapshot(1, 13, 7, 5.0));
        let k = board.kpis(1);
        assert_eq!(k.response_1h.source, "sellers");
        assert_eq!(k.response_1h.p90_seconds, Some(90.0));
    }

    #[test]
    fn the_team_line_of_the_chart_is_the_teams_mean() {
        let mut board = Board::default();
        let mut a = snapshot(1, 10, 1, 5.0);
        a.response_1h = stats(1, 100.0, 100.0);
        a.team = Some(team(stats(4, 55.0, 90.0), stats(4, 55.0, 90.0)));
        board.apply(a);
        let mut b = snapshot(1, 11, 1, 5.0);
        b.response_1h = stats(3, 40.0, 40.0);
        b.team = a_team_copy(&board);
        board.apply(b);
        let s = board.series(1, None);
        assert_eq!(
            s.team.last(),
            Some(&Some(55.0)),
            "the team's, not (100 + 3 × 40) / 4"
        );
        assert_eq!(
            board.series(1, Some(10)).team.last(),
            Some(&Some(100.0)),
            "a seller's view: their own"
        );
    }

    fn a_team_copy(board: &Board) -> Option<TeamResponseTimes> {
        board.seller(1, 10).and_then(|m| m.team.clone())
    }

    fn alert(seller: UserId, id: u128, at: DateTime<Utc>) -> Notification {
        Notification {
            id: Uuid::from_u128(id),
            tenant_id: 1,
            kind: NotificationType::UnansweredConversation,
            priority: vigia_schemas::Priority::High,
            audience: vigia_schemas::Audience::User { user_id: seller },
            title: "t".into(),
            message: "m".into(),
            data: serde_json::json!({"conversation_id": format!("c{id}"), "seller_id": seller}),
            actions: vec![],
            created_at: at,
            withdraws: None,
        }
    }

    fn withdrawal(of: &Notification, id: u128, at: DateTime<Utc>) -> Notification {
        Notification {
            id: Uuid::from_u128(id),
            withdraws: Some(of.id),
            created_at: at,
            data: serde_json::json!({"seller_id": of.data["seller_id"], "state": "resolved"}),
            ..of.clone()
        }
    }

    fn at(minute: u32, second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 9, minute, second).unwrap()
    }

    fn unanswered_of(board: &Board, seller: UserId) -> u32 {
        board.unanswered(board.seller(1, seller).unwrap())
    }

    #[test]
    fn unanswered_now_follows_the_alerts_until_the_next_snapshot() {
        let mut board = Board::default();
        // 09:05 snapshots: seller 10 has 1 overdue wait (fired at 09:04), seller 11 none.
        board.apply(snapshot(1, 10, 5, 5.0));
        let mut b = snapshot(1, 11, 5, 5.0);
        b.conversations_unanswered = 0;
        board.apply(b);
        assert_eq!(board.kpis(1).unanswered_now, 1);
        let counted = alert(10, 1, at(4, 0));
        assert!(
            !board.note_unanswered(&counted),
            "older than the snapshot: counted in it"
        );
        // The stream goes idle; alerts fire by the clock.
        let a = alert(10, 2, at(5, 30));
        let b = alert(11, 3, at(6, 10));
        assert!(board.note_unanswered(&a));
        assert!(!board.note_unanswered(&a), "seen twice, counted once");
        assert!(board.note_unanswered(&b));
        assert_eq!(
            (unanswered_of(&board, 10), unanswered_of(&board, 11)),
            (2, 1)
        );
        assert_eq!(board.kpis(1).unanswered_now, 3);
        let payload = board.push_payload(1);
        assert_eq!(payload["tenant"]["unanswered_now"], 3);
        let row = |seller: u64| {
            payload["sellers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["seller_id"] == seller)
                .unwrap()["conversations_unanswered"]
                .clone()
        };
        assert_eq!((row(10), row(11)), (2.into(), 1.into()));
        // The wait counted in the snapshot is answered at 09:07, seller 11's at 09:08.
        assert!(board.note_unanswered(&withdrawal(&counted, 4, at(7, 0))));
        assert!(board.note_unanswered(&withdrawal(&b, 5, at(8, 0))));
        assert_eq!(
            (unanswered_of(&board, 10), unanswered_of(&board, 11)),
            (1, 0)
        );
        // A second withdrawal of the same alert (another cause) does not count again.
        assert!(!board.note_unanswered(&withdrawal(&b, 6, at(8, 1))));
        assert_eq!(unanswered_of(&board, 11), 0);
        // Other types, and alerts without a seller, do not move it.
        let mut hot = alert(10, 7, at(9, 0));
        hot.kind = NotificationType::HotLead;
        assert!(!board.note_unanswered(&hot));
        let mut unassigned = alert(10, 8, at(9, 0));
        unassigned.audience = vigia_schemas::Audience::Role {
            role: vigia_schemas::Role::Secretary,
        };
        unassigned.data = serde_json::json!({"seller_id": null});
        assert!(!board.note_unanswered(&unassigned));
        assert_eq!(board.kpis(1).unanswered_now, 1);

        // A newer snapshot of seller 10 (09:09) counts the 09:05:30 alert itself: no double
        // counting; what is older than it is forgotten.
        let mut newer = snapshot(1, 10, 9, 5.0);
        newer.conversations_unanswered = 1;
        board.apply(newer);
        assert_eq!(unanswered_of(&board, 10), 1);
        assert!(
            !board.live[&1].contains_key(&10),
            "superseded alerts are forgotten"
        );
        // Seller 11's alerts still correct seller 11's older snapshot.
        assert_eq!(unanswered_of(&board, 11), 0);
        assert_eq!(board.kpis(1).unanswered_now, 1);
    }

    #[test]
    fn unanswered_now_does_not_depend_on_the_order_alerts_and_snapshots_arrive_in() {
        // After a restart, the alerts come from the inbox first and the snapshots from the
        // topic's beginning afterwards: the same figures as live.
        let s1 = snapshot(1, 10, 5, 5.0); // 1 overdue
        let mut s2 = snapshot(1, 10, 8, 5.0);
        s2.conversations_unanswered = 2;
        let fired_before = alert(10, 1, at(4, 0));
        let fired_between = alert(10, 2, at(6, 0));
        let fired_after = alert(10, 3, at(9, 0));
        let answered_after = withdrawal(&fired_before, 4, at(9, 30));
        let fired_last = alert(10, 5, at(9, 45));
        let notes = [
            fired_before,
            fired_between,
            fired_after,
            answered_after,
            fired_last,
        ];

        let mut live = Board::default();
        live.apply(s1.clone());
        live.note_unanswered(&notes[0]);
        live.note_unanswered(&notes[1]);
        live.apply(s2.clone());
        for n in &notes[2..] {
            live.note_unanswered(n);
        }

        let mut restarted = Board::default();
        for n in &notes {
            restarted.note_unanswered(n);
        }
        restarted.apply(s1);
        restarted.apply(s2);

        // 2 at 09:08, +1 fired at 09:09, −1 answered at 09:09:30, +1 fired at 09:09:45.
        assert_eq!(unanswered_of(&live, 10), 3);
        assert_eq!(unanswered_of(&restarted, 10), 3);
        assert_eq!(
            live.kpis(1).unanswered_now,
            restarted.kpis(1).unanswered_now
        );
    }

    #[test]
    fn a_withdrawal_never_takes_a_seller_below_zero() {
        let mut board = Board::default();
        let mut s = snapshot(1, 10, 5, 5.0);
        s.conversations_unanswered = 0;
        board.apply(s);
        // Reassigned meanwhile: the snapshot counted it under another seller.
        let old = alert(10, 1, at(4, 0));
        board.note_unanswered(&withdrawal(&old, 2, at(6, 0)));
        assert_eq!(unanswered_of(&board, 10), 0);
    }

    #[test]
    fn windows_parse_or_say_what_is_allowed() {
        assert_eq!(Window::parse("today"), Ok(Window::Today));
        assert!(Window::parse("2h")
            .unwrap_err()
            .to_string()
            .contains("1h, today or 7d"));
    }
}
