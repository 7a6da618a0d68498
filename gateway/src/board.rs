//! The live metrics board: the latest seller-metrics snapshot of every seller, per tenant, as the
//! processors publish them (`seller_metrics` topic), and the tenant's KPIs derived from them.
//! Pure state, no I/O: the consumer feeds it, the REST handlers and the `metrics` push read it.
//!
//! Tenant KPIs are sums of the sellers' figures, except the response times: the team mean is the
//! mean of all the sellers' samples (count-weighted), exact; a team percentile cannot be rebuilt
//! from per-seller percentiles, so the board gives the *highest seller p90* instead and says so
//! in its field name (`worst_seller_p90_seconds`).
//!
//! The board also keeps, for the 24 h chart, each seller's rolling one-hour mean response time
//! at the end of every quarter hour ([`Board::series`]): the last snapshot of the quarter.
//!
//! Not here (yet): hot leads now (they need the `lead_scores` topic and the tenant's hot-lead
//! threshold).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use vigia_schemas::{ResponseTimeStats, SellerMetrics, TenantId, UserId};

/// The response-time window a view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    LastHour,
    Today,
    LastWeek,
}

impl Window {
    /// `1h`, `today` or `7d`.
    pub fn parse(s: &str) -> Result<Window, String> {
        match s {
            "1h" => Ok(Window::LastHour),
            "today" => Ok(Window::Today),
            "7d" => Ok(Window::LastWeek),
            other => Err(format!("window must be 1h, today or 7d, not {other:?}")),
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
}

/// A team's response times over one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TeamResponse {
    pub count: u32,
    pub mean_seconds: Option<f64>,
    pub worst_seller_p90_seconds: Option<f64>,
}

fn team_response<'a>(stats: impl Iterator<Item = &'a ResponseTimeStats>) -> TeamResponse {
    let (mut count, mut total, mut worst) = (0u32, 0.0, None::<f64>);
    for s in stats {
        if let Some(mean) = s.mean_seconds {
            count += s.count;
            total += mean * f64::from(s.count);
        }
        if let Some(p90) = s.p90_seconds {
            worst = Some(worst.map_or(p90, |w| w.max(p90)));
        }
    }
    TeamResponse {
        count,
        mean_seconds: (count > 0).then(|| total / f64::from(count)),
        worst_seller_p90_seconds: worst,
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
}

impl Board {
    /// Keeps `snapshot` if it is the seller's newest. Returns whether the board changed.
    pub fn apply(&mut self, snapshot: SellerMetrics) -> bool {
        self.record(&snapshot);
        let sellers = self.tenants.entry(snapshot.tenant_id).or_default();
        match sellers.get(&snapshot.seller_id) {
            Some(current) if current.snapshot_at >= snapshot.snapshot_at => false,
            _ => {
                sellers.insert(snapshot.seller_id, snapshot);
                true
            }
        }
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
    }

    /// The last 24 h of quarter-hour points of the tenant (of `only` that seller, if given),
    /// ending at the newest bucket of any of its sellers.
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
        for b in &buckets {
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
        TenantKpis {
            tenant_id: tenant,
            as_of: sellers.iter().map(|m| m.snapshot_at).max(),
            sellers: sellers.len() as u32,
            conversations_today: sum(|m| m.conversations_today),
            conversations_active: sum(|m| m.conversations_active),
            unanswered_now: sum(|m| m.conversations_unanswered),
            response_1h: team_response(sellers.iter().map(|m| &m.response_1h)),
            response_today: team_response(sellers.iter().map(|m| &m.response_today)),
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

    /// One leaderboard row: the snapshot's figures, its position on the board, and the
    /// response times of `window` as `response`.
    pub fn row(m: &SellerMetrics, position: usize, window: Window) -> Value {
        let mut row = serde_json::to_value(m).unwrap_or(Value::Null);
        if let Value::Object(fields) = &mut row {
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
            .map(|(i, m)| Board::row(m, i, Window::Today))
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
    fn kpis_sum_the_sellers_and_weight_the_mean_by_samples() {
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
        assert_eq!(k.response_1h.worst_seller_p90_seconds, Some(200.0));
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
        let row = Board::row(board.sellers(1)[2], 2, Window::LastHour);
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

    #[test]
    fn windows_parse_or_say_what_is_allowed() {
        assert_eq!(Window::parse("today"), Ok(Window::Today));
        assert!(Window::parse("2h").unwrap_err().contains("1h, today or 7d"));
    }
}
