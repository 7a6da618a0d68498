//! `vigia simulate`: realistic CRM traffic, deterministic for a seed.
//!
//! Tenants have a CEO and sellers; customers open conversations over WhatsApp, web or e-mail,
//! some of them as ad leads; sellers answer after a while, some never do (so the unanswered rule
//! fires); leads progress through their statuses; call-center agents run client sessions with
//! heartbeats, some of which simply stop. On top of that the simulator misbehaves like real
//! webhooks do: a share of events is delivered twice, a few seconds out of order, or minutes late.
//!
//! The stream is generated in virtual time from `--start` (default: now), so a fixed seed and
//! start give the same events, byte for byte (`--dry-run` prints them as NDJSON). Live, events
//! are posted when the wall clock reaches their delivery time. `--measure` also connects a CEO
//! WebSocket per tenant and reports how long notifications took to arrive.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::config::Config;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Base URL of a running ingest (and gateway, for --measure).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub target: String,
    #[arg(long, default_value_t = 2)]
    pub tenants: u64,
    /// Sellers per tenant.
    #[arg(long, default_value_t = 5)]
    pub sellers: u64,
    /// Target events per second (all tenants together).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// How long to generate traffic for, e.g. "60s" or "10m" (after --warmup).
    #[arg(long, default_value = "60s")]
    pub duration: humantime::Duration,
    /// Traffic posted before the measured --duration, left out of the report's figures.
    /// Conversations last minutes, so the rate builds up over the first minutes of a run: after
    /// a warm-up of a few minutes the measured window posts at the target rate.
    #[arg(long, default_value = "0s")]
    pub warmup: humantime::Duration,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Virtual start time (RFC 3339); default now. Fix it with --dry-run for a reproducible stream.
    #[arg(long)]
    pub start: Option<DateTime<Utc>>,
    /// Sellers answer after a delay drawn between these two.
    #[arg(long, default_value = "5s")]
    pub reply_min: humantime::Duration,
    #[arg(long, default_value = "90s")]
    pub reply_max: humantime::Duration,
    /// Share of customer waits that never get an answer (the unanswered rule fires on them).
    #[arg(long, default_value_t = 0.15)]
    pub unanswered_share: f64,
    /// Share of events delivered twice.
    #[arg(long, default_value_t = 0.02)]
    pub duplicate_share: f64,
    /// Share of events delivered a few seconds out of order.
    #[arg(long, default_value_t = 0.05)]
    pub out_of_order_share: f64,
    /// Share of events delivered late, by --late-by.
    #[arg(long, default_value_t = 0.01)]
    pub late_share: f64,
    #[arg(long, default_value = "2m")]
    pub late_by: humantime::Duration,
    /// Print the events as NDJSON (in delivery order) instead of posting them.
    #[arg(long)]
    pub dry_run: bool,
    /// Connect a CEO WebSocket per tenant and report notification latencies.
    #[arg(long)]
    pub measure: bool,
    /// With --measure: print each notification as it arrives.
    #[arg(long)]
    pub show: bool,
    /// After the traffic stops, keep listening this long for notifications (with --measure).
    #[arg(long, default_value = "0s")]
    pub linger: humantime::Duration,
    /// Write the measurement report (JSON) to this file.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
    /// How often what is due is posted (a request per tenant with something due). An event is
    /// posted at most this long after its delivery time, so the end-to-end figures of
    /// `--measure`, timed from `occurred_at`, include up to this much of the simulator's own
    /// batching: short enough to measure a POST → effect of tens of milliseconds.
    #[arg(long, default_value = "5ms")]
    pub post_every: humantime::Duration,
}

/// One event to deliver at `deliver_at` (its `occurred_at` may be earlier: late or reordered).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub deliver_at: DateTime<Utc>,
    pub tenant_id: u64,
    pub event: Value,
}

const CUSTOMER_LINES: &[&str] = &[
    "Hola, quisiera información",
    "¿Cuál es el precio del plan anual?",
    "Quiero comprar dos unidades",
    "¿Está disponible para entrega esta semana?",
    "Necesito una cotización, por favor",
    "Gracias, lo pienso y les escribo",
    "Hi, how much is the premium plan?",
    "Is it available in blue?",
    "I want to buy it today",
    "Can you send me a quote?",
    "Ok, thanks",
    "¿Tienen descuento por volumen?",
];
const LOCATIONS: &[&str] = &["Bogotá", "Medellín", "Madrid", "Lima", "Quito", "Cali"];
const SOURCES: &[&str] = &["META_ADS", "WEBSITE", "REFERRAL", "WHATSAPP", "OTHER"];
const CHANNELS: &[&str] = &["whatsapp", "whatsapp", "web", "email", "other"];

/// The deterministic traffic model. Events are produced in delivery order by [`Self::next`].
pub struct Generator {
    rng: ChaCha8Rng,
    args: Args,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    /// Pending deliveries by (time, sequence) so equal times keep generation order.
    pending: BinaryHeap<Reverse<(i64, u64)>>,
    by_seq: BTreeMap<u64, Delivery>,
    seq: u64,
    next_scenario_at: DateTime<Utc>,
    scenario_count: u64,
}

/// Average events per scenario, measured on the model (an hour at --rate 100 gave 86.8/s at 9.0);
/// sets the scenario rate from --rate. Scenarios last minutes, so a run reaches the rate after
/// its first few minutes.
const EVENTS_PER_SCENARIO: f64 = 7.8;

impl Generator {
    pub fn new(args: Args, start: DateTime<Utc>) -> Result<Generator> {
        if args.tenants == 0 || args.sellers == 0 {
            bail!("--tenants and --sellers must be at least 1");
        }
        if args.rate <= 0.0 {
            bail!("--rate must be positive");
        }
        if args.reply_min > args.reply_max {
            bail!("--reply-min must not exceed --reply-max");
        }
        let end = start
            + chrono::Duration::from_std(args.warmup.into())?
            + chrono::Duration::from_std(args.duration.into())?;
        let mut g = Generator {
            rng: ChaCha8Rng::seed_from_u64(args.seed),
            args,
            start,
            end,
            pending: BinaryHeap::new(),
            by_seq: BTreeMap::new(),
            seq: 0,
            next_scenario_at: start,
            scenario_count: 0,
        };
        g.directory();
        Ok(g)
    }

    pub fn ceo_id(tenant: u64) -> u64 {
        tenant * 1000 + 1
    }

    fn seller_id(&self, tenant: u64, i: u64) -> u64 {
        tenant * 1000 + 10 + i
    }

    fn uuid(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.rng.random()).into_uuid()
    }

    fn event(&mut self, tenant: u64, at: DateTime<Utc>, ty: &str, fields: Value) -> Value {
        let mut e = json!({
            "event_id": self.uuid().to_string(),
            "type": ty,
            "tenant_id": tenant,
            "occurred_at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        for (k, v) in fields.as_object().expect("fields are an object") {
            e[k] = v.clone();
        }
        e
    }

    /// Schedules an event, applying the delivery misbehaviours.
    fn schedule(&mut self, tenant: u64, at: DateTime<Utc>, event: Value) {
        if at > self.end {
            return;
        }
        let a = &self.args;
        let (late, ooo, dup) = (a.late_share, a.out_of_order_share, a.duplicate_share);
        let late_by = chrono::Duration::from_std(a.late_by.into()).unwrap_or_default();
        let roll: f64 = self.rng.random();
        let deliver_at = if roll < late {
            at + late_by
        } else if roll < late + ooo {
            at + chrono::Duration::milliseconds(self.rng.random_range(500..5000))
        } else {
            at
        };
        self.push(deliver_at, tenant, event.clone());
        if self.rng.random_bool(dup.clamp(0.0, 1.0)) {
            let again = deliver_at + chrono::Duration::milliseconds(self.rng.random_range(0..3000));
            self.push(again, tenant, event);
        }
    }

    fn push(&mut self, deliver_at: DateTime<Utc>, tenant_id: u64, event: Value) {
        let seq = self.seq;
        self.seq += 1;
        self.pending
            .push(Reverse((deliver_at.timestamp_millis(), seq)));
        self.by_seq.insert(
            seq,
            Delivery {
                deliver_at,
                tenant_id,
                event,
            },
        );
    }

    /// Users first: the CEO and the sellers of every tenant.
    fn directory(&mut self) {
        let at = self.start;
        for t in 1..=self.args.tenants {
            let tz = if t % 2 == 0 {
                "Europe/Madrid"
            } else {
                "America/Bogota"
            };
            let e = self.event(
                t,
                at,
                "user.upserted",
                json!({"user_id": Self::ceo_id(t), "name": format!("CEO {t}"), "role": "ceo", "time_zone": tz}),
            );
            self.push(at, t, e);
            for i in 0..self.args.sellers {
                let id = self.seller_id(t, i);
                let e = self.event(
                    t,
                    at,
                    "user.upserted",
                    json!({"user_id": id, "name": format!("Vendedor {t}-{i}"), "role": "seller", "time_zone": tz}),
                );
                self.push(at, t, e);
            }
        }
    }

    fn pick<'a>(&mut self, xs: &'a [&'a str]) -> &'a str {
        xs[self.rng.random_range(0..xs.len())]
    }

    fn dur_between(&mut self, a: Duration, b: Duration) -> chrono::Duration {
        let ms = self
            .rng
            .random_range(a.as_millis() as i64..=b.as_millis().max(a.as_millis()) as i64);
        chrono::Duration::milliseconds(ms)
    }

    /// One customer conversation (maybe a lead) or one call-center session.
    fn scenario(&mut self, at: DateTime<Utc>) {
        self.scenario_count += 1;
        let n = self.scenario_count;
        let tenant = self.rng.random_range(1..=self.args.tenants);
        let i = self.rng.random_range(0..self.args.sellers);
        let seller = self.seller_id(tenant, i);
        if self.rng.random_bool(0.1) {
            return self.session(tenant, seller, at, n);
        }
        let conv = format!("t{tenant}-c{n}");
        let channel = self.pick(CHANNELS);
        let phone = format!("+57300{:07}", self.rng.random_range(0..10_000_000u32));
        let is_lead = self.rng.random_bool(0.4);
        let lead = format!("t{tenant}-l{n}");
        let mut t = at;
        if is_lead {
            let source = self.pick(SOURCES);
            let location = self.pick(LOCATIONS);
            let value = self.rng.random_range(100..20_000) as f64;
            let e = self.event(
                tenant,
                t,
                "lead.created",
                json!({"lead_id": lead, "source": source, "seller_id": seller,
                       "name": format!("Cliente {n}"), "phone_number": phone,
                       "location": location, "estimated_value": value, "conversation_id": conv}),
            );
            self.schedule(tenant, t, e);
        }
        let (rmin, rmax) = (self.args.reply_min.into(), self.args.reply_max.into());
        let rounds = self.rng.random_range(1..=4);
        for round in 0..rounds {
            let msgs = self.rng.random_range(1..=3);
            for _ in 0..msgs {
                t += chrono::Duration::milliseconds(self.rng.random_range(200..4000));
                let text = self.pick(CUSTOMER_LINES);
                let e = self.event(
                    tenant,
                    t,
                    "message.received",
                    json!({"conversation_id": conv, "channel": channel, "seller_id": seller,
                           "phone_number": phone, "text": text}),
                );
                self.schedule(tenant, t, e);
            }
            if self.rng.random_bool(0.2) {
                let e = self.event(
                    tenant,
                    t + chrono::Duration::milliseconds(300),
                    "message.sent",
                    json!({"conversation_id": conv, "seller_id": seller, "automated": true}),
                );
                self.schedule(tenant, t + chrono::Duration::milliseconds(300), e);
            }
            if self
                .rng
                .random_bool(self.args.unanswered_share.clamp(0.0, 1.0))
            {
                return; // the customer waits forever: the unanswered rule's case
            }
            t += self.dur_between(rmin, rmax);
            let e = self.event(
                tenant,
                t,
                "message.sent",
                json!({"conversation_id": conv, "seller_id": seller, "automated": false}),
            );
            self.schedule(tenant, t, e);
            if is_lead && round == 0 {
                let e = self.event(
                    tenant,
                    t,
                    "lead.status_changed",
                    json!({"lead_id": lead, "status": "contacted"}),
                );
                self.schedule(tenant, t, e);
            }
        }
        if is_lead {
            t += chrono::Duration::seconds(self.rng.random_range(1..30));
            let status = *[
                "interested",
                "negotiation",
                "converted",
                "lost",
                "interested",
            ]
            .get(self.rng.random_range(0..5))
            .expect("in range");
            let e = self.event(
                tenant,
                t,
                "lead.status_changed",
                json!({"lead_id": lead, "status": status}),
            );
            self.schedule(tenant, t, e);
            if status == "interested" || status == "negotiation" {
                let due = t + chrono::Duration::hours(self.rng.random_range(1..72));
                let e = self.event(
                    tenant,
                    t,
                    "lead.follow_up_scheduled",
                    json!({"lead_id": lead, "seller_id": seller,
                           "due_at": due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                           "note": "Llamar para cerrar"}),
                );
                self.schedule(tenant, t, e);
            }
        }
        if self.rng.random_bool(0.5) {
            t += chrono::Duration::seconds(self.rng.random_range(5..60));
            let e = self.event(
                tenant,
                t,
                "conversation.closed",
                json!({"conversation_id": conv}),
            );
            self.schedule(tenant, t, e);
        }
    }

    fn session(&mut self, tenant: u64, agent: u64, at: DateTime<Utc>, n: u64) {
        let ids = json!({"session_id": format!("t{tenant}-s{n}"),
                         "client_id": format!("t{tenant}-cl{n}"), "agent_id": agent});
        let e = self.event(tenant, at, "session.started", ids.clone());
        self.schedule(tenant, at, e);
        let beats = self.rng.random_range(1..6);
        let mut t = at;
        for _ in 0..beats {
            t += chrono::Duration::seconds(30);
            let e = self.event(tenant, t, "session.heartbeat", ids.clone());
            self.schedule(tenant, t, e);
        }
        if self.rng.random_bool(0.8) {
            let result = self.pick(&["managed", "not_managed", "closed"]);
            let mut f = ids;
            f["result"] = json!(result);
            t += chrono::Duration::seconds(10);
            let e = self.event(tenant, t, "session.ended", f);
            self.schedule(tenant, t, e);
        }
    }

    /// The next delivery in delivery order, or None when the run is over.
    pub fn next_delivery(&mut self) -> Option<Delivery> {
        loop {
            let head = self.pending.peek().map(|Reverse((ms, _))| *ms);
            let scenario_due = self.next_scenario_at <= self.end
                && head.is_none_or(|ms| self.next_scenario_at.timestamp_millis() <= ms);
            if scenario_due {
                let at = self.next_scenario_at;
                self.scenario(at);
                // Exponential gaps: a Poisson process of scenarios at rate/EVENTS_PER_SCENARIO.
                let per_sec = self.args.rate / EVENTS_PER_SCENARIO;
                let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
                let gap_ms = (-u.ln() / per_sec * 1000.0).max(1.0);
                self.next_scenario_at = at + chrono::Duration::milliseconds(gap_ms as i64);
                continue;
            }
            let Reverse((_, seq)) = self.pending.pop()?;
            return self.by_seq.remove(&seq);
        }
    }
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let start = args.start.unwrap_or_else(Utc::now);
    let mut generator = Generator::new(args.clone(), start)?;
    if args.dry_run {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        while let Some(d) = generator.next_delivery() {
            writeln!(out, "{}", d.event)?;
        }
        return Ok(());
    }
    let keys: BTreeMap<u64, String> = config
        .ingest
        .api_keys
        .iter()
        .map(|(k, t)| (*t, k.clone()))
        .collect();
    for t in 1..=args.tenants {
        if !keys.contains_key(&t) {
            bail!("no API key for tenant {t}: add it to VIGIA_API_KEYS (key={t},...)");
        }
    }
    let measurer = if args.measure {
        Some(crate::simulate::measure::Measurer::connect(config, &args).await?)
    } else {
        None
    };

    let client = reqwest::Client::new();
    let url = format!("{}/v1/events", args.target.trim_end_matches('/'));
    let warmup: Duration = args.warmup.into();
    let measured_from = start + chrono::Duration::from_std(warmup)?;
    let wall_start = Instant::now();
    let window = MeasuredWindow {
        from: wall_start + warmup,
        until: wall_start + warmup + Duration::from(args.duration),
    };
    // Events delivered before `measured_from` warm the run up; the figures are the others'.
    let mut warm = PostStats::default();
    let mut stats = PostStats::default();
    let mut last_log = Instant::now();
    let mut next = generator.next_delivery();
    // Every tick, everything due by now is posted: one request per tenant, concurrently. The
    // tick bounds how early an event can be posted (never) and how late (one tick).
    let tick: Duration = args.post_every.into();
    if tick.is_zero() {
        bail!("--post-every must be positive, e.g. 5ms");
    }
    while next.is_some() {
        let now_virtual = start + chrono::Duration::from_std(wall_start.elapsed())?;
        let mut batch: BTreeMap<(bool, u64), Vec<Value>> = BTreeMap::new();
        while let Some(d) = next.take_if(|d| d.deliver_at <= now_virtual) {
            let warming = d.deliver_at < measured_from;
            batch
                .entry((warming, d.tenant_id))
                .or_default()
                .push(d.event);
            next = generator.next_delivery();
        }
        let posts = batch.into_iter().map(|((warming, tenant), events)| {
            let post = post_batch(&client, &url, &keys[&tenant], events);
            async move { (warming, post.await) }
        });
        for (warming, outcome) in futures::future::join_all(posts).await {
            let in_window = window.contains(Instant::now());
            if warming {
                warm.add(outcome, false);
            } else {
                stats.add(outcome, in_window);
            }
        }
        if last_log.elapsed() > Duration::from_secs(5) {
            tracing::info!(
                sent = stats.sent,
                warmup_sent = warm.sent,
                failed = stats.failed + warm.failed,
                "simulating"
            );
            last_log = Instant::now();
        }
        if let Some(d) = &next {
            let due = (d.deliver_at - start).to_std().unwrap_or_default();
            let at = (wall_start + due).max(Instant::now() + Duration::from_millis(1));
            tokio::time::sleep_until(at.min(Instant::now() + tick).into()).await;
        }
    }
    let failed = stats.failed + warm.failed;
    let PostStats {
        sent,
        sent_in_window,
        mut post_ms,
        ..
    } = stats;
    // From the end of the warm-up (the start, without one) to the last POST: late deliveries
    // after the window are in it, as they always were.
    let elapsed = wall_start.elapsed().saturating_sub(warmup).as_secs_f64();
    let window_secs = Duration::from(args.duration).as_secs_f64();
    let warmup_note = if warmup.is_zero() {
        String::new()
    } else {
        format!(
            " after a {} warm-up ({} events, not counted)",
            args.warmup, warm.sent
        )
    };
    println!(
        "posted {sent} events in {elapsed:.1}s ({:.0}/s; {:.0}/s of the target {} within the \
         {window_secs:.0} s window){warmup_note}, {failed} failed; POST latency p50 {:.1} ms p99 \
         {:.1} ms",
        sent as f64 / elapsed.max(0.001),
        sent_in_window as f64 / window_secs.max(0.001),
        args.rate,
        percentile(&mut post_ms, 0.5),
        percentile(&mut post_ms, 0.99)
    );
    let mut report = json!({
        "events_posted": sent, "events_failed": failed, "seconds": elapsed,
        "events_per_second": sent as f64 / elapsed.max(0.001),
        "target_events_per_second": args.rate,
        "window": {"seconds": window_secs, "events_posted": sent_in_window,
                   "events_per_second": sent_in_window as f64 / window_secs.max(0.001)},
        "warmup": {"seconds": warmup.as_secs_f64(), "events_posted": warm.sent,
                   "events_failed": warm.failed},
        "post_ms": {"p50": percentile(&mut post_ms, 0.5), "p99": percentile(&mut post_ms, 0.99)},
    });
    if let Some(m) = measurer {
        tokio::time::sleep(args.linger.into()).await;
        let lat = m.finish(measured_from).await;
        println!("{}", serde_json::to_string_pretty(&lat)?);
        report["notifications"] = lat;
    }
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if failed > 0 {
        bail!("{failed} events were not accepted (see the log)");
    }
    Ok(())
}

/// The measured window in wall-clock time: POSTs that complete in it make its posted rate.
struct MeasuredWindow {
    from: Instant,
    until: Instant,
}

impl MeasuredWindow {
    fn contains(&self, at: Instant) -> bool {
        self.from <= at && at <= self.until
    }
}

#[derive(Default)]
struct PostStats {
    sent: u64,
    /// Of `sent`, the events whose POST completed within the measured window.
    sent_in_window: u64,
    failed: u64,
    post_ms: Vec<f64>,
}

impl PostStats {
    fn add(&mut self, outcome: PostOutcome, in_window: bool) {
        match outcome {
            PostOutcome::Accepted { events, ms } => {
                self.sent += events;
                if in_window {
                    self.sent_in_window += events;
                }
                self.post_ms.push(ms);
            }
            PostOutcome::Failed { events } => self.failed += events,
        }
    }
}

enum PostOutcome {
    Accepted { events: u64, ms: f64 },
    Failed { events: u64 },
}

/// Posts one tenant's batch, retrying 503s and connection errors (safe: `event_id` makes a
/// repeated post idempotent); anything else is a failure worth reporting.
async fn post_batch(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    events: Vec<Value>,
) -> PostOutcome {
    let n = events.len() as u64;
    let mut attempt = 0;
    loop {
        let t0 = Instant::now();
        let res = client
            .post(url)
            .header("X-API-Key", key)
            .json(&events)
            .send()
            .await;
        let retry = match res {
            Ok(r) if r.status().as_u16() == 202 => {
                return PostOutcome::Accepted {
                    events: n,
                    ms: t0.elapsed().as_secs_f64() * 1000.0,
                }
            }
            Ok(r) if r.status().as_u16() == 503 => "ingest answered 503".to_string(),
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                tracing::error!(%status, body, "ingest refused a batch");
                return PostOutcome::Failed { events: n };
            }
            Err(e) => format!("POST failed: {e}"),
        };
        attempt += 1;
        if attempt > 5 {
            tracing::error!("{retry}; giving up on {n} events");
            return PostOutcome::Failed { events: n };
        }
        tracing::warn!("{retry}; retrying");
        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
    }
}

pub fn percentile(xs: &mut [f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let i = ((xs.len() as f64 - 1.0) * q).round() as usize;
    xs[i]
}

pub mod measure {
    //! Notification latency as a client sees it: a CEO WebSocket per tenant, and for each
    //! `notification` frame the time from the notification's `created_at` (the deadline for
    //! unanswered conversations; the causing event's time for hot leads) to the frame's arrival.

    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio::task::JoinHandle;

    /// One CEO socket's (notification kind, its `created_at`, latency ms) samples, and why it
    /// closed early.
    type SocketReport = (Vec<(String, DateTime<Utc>, f64)>, Option<String>);

    pub struct Measurer {
        tasks: Vec<JoinHandle<SocketReport>>,
        stop: tokio_util::sync::CancellationToken,
    }

    impl Measurer {
        pub async fn connect(config: &Config, args: &Args) -> Result<Measurer> {
            let stop = tokio_util::sync::CancellationToken::new();
            let mut tasks = Vec::new();
            let base = args
                .target
                .replacen("http://", "ws://", 1)
                .replacen("https://", "wss://", 1);
            for t in 1..=args.tenants {
                let token = vigia_gateway::issue_token(
                    &config.gateway.jwt_secret,
                    Generator::ceo_id(t),
                    t,
                    vigia_schemas::Role::Ceo,
                    Duration::from_secs(24 * 3600),
                );
                let url = format!("{}/ws?token={token}", base.trim_end_matches('/'));
                let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
                    .await
                    .with_context(|| format!("cannot open the CEO WebSocket at {base}/ws"))?;
                let stop = stop.clone();
                let show = args.show;
                tasks.push(tokio::spawn(async move {
                    let (mut write, mut read) = ws.split();
                    let mut seen = Vec::new();
                    let mut closed = None;
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            msg = read.next() => {
                                let msg = match msg {
                                    Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                                        closed = Some(format!("tenant {t}: closed by the gateway: {frame:?}"));
                                        break;
                                    }
                                    Some(Ok(msg)) => msg,
                                    other => {
                                        closed = Some(format!("tenant {t}: connection ended: {other:?}"));
                                        break;
                                    }
                                };
                                let now = Utc::now();
                                let Ok(text) = msg.into_text() else { continue };
                                let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                                // The gateway closes sockets that stop answering its keepalive.
                                if v["type"] == "ping" {
                                    let pong = tokio_tungstenite::tungstenite::Message::Text(r#"{"type":"pong"}"#.into());
                                    if let Err(e) = write.send(pong).await {
                                        closed = Some(format!("tenant {t}: cannot answer the keepalive: {e}"));
                                        break;
                                    }
                                    continue;
                                }
                                if v["type"] != "notification" { continue }
                                let n = if v["notification"].is_object() { &v["notification"] } else { &v["data"] };
                                let (Some(kind), Some(created)) = (n["type"].as_str(), n["created_at"].as_str()) else { continue };
                                // A withdrawal's time is the answer that caused it, so its
                                // latency is event-to-frame; an alert's is its deadline's.
                                let kind = if n["withdraws"].is_string() { format!("{kind}.withdrawal") } else { kind.to_string() };
                                let Ok(created) = created.parse::<DateTime<Utc>>() else { continue };
                                let ms = (now - created).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                                if show {
                                    println!(
                                        "[tenant {t}] {:<8} {:<24} {} — {} ({ms:.0} ms after its time)",
                                        n["priority"].as_str().unwrap_or(""),
                                        kind,
                                        n["title"].as_str().unwrap_or(""),
                                        n["message"].as_str().unwrap_or(""),
                                    );
                                }
                                seen.push((kind, created, ms));
                            }
                        }
                    }
                    (seen, closed)
                }));
            }
            Ok(Measurer { tasks, stop })
        }

        /// The latencies by notification kind, of the notifications whose time (deadline, or
        /// causing event) is at or after `measured_from`: those of the warm-up are only counted.
        pub async fn finish(self, measured_from: DateTime<Utc>) -> Value {
            self.stop.cancel();
            let mut by_kind: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            let mut disconnections = Vec::new();
            let mut warmup = 0u64;
            for t in self.tasks {
                let (seen, closed) = t.await.unwrap_or_default();
                for (k, created, ms) in seen {
                    if created < measured_from {
                        warmup += 1;
                        continue;
                    }
                    by_kind.entry(k).or_default().push(ms);
                }
                disconnections.extend(closed);
            }
            let mut out = serde_json::Map::new();
            out.insert("warmup_excluded".into(), json!(warmup));
            for (k, mut xs) in by_kind {
                out.insert(
                    k,
                    json!({"count": xs.len(), "p50_ms": percentile(&mut xs, 0.5),
                           "p99_ms": percentile(&mut xs, 0.99),
                           "max_ms": xs.iter().cloned().fold(f64::NAN, f64::max)}),
                );
            }
            // A socket that closed early measured only part of the run: say so.
            out.insert("disconnections".into(), json!(disconnections));
            Value::Object(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: Args,
    }

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["x"];
        v.extend_from_slice(extra);
        Wrap::parse_from(v).args
    }

    fn all(args: Args) -> Vec<Delivery> {
        let start = "2026-03-01T12:00:00Z".parse().unwrap();
        let mut g = Generator::new(args, start).unwrap();
        std::iter::from_fn(|| g.next_delivery()).collect()
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let a = all(args(&["--duration", "120s", "--rate", "50"]));
        let b = all(args(&["--duration", "120s", "--rate", "50"]));
        let c = all(args(&["--duration", "120s", "--rate", "50", "--seed", "7"]));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_generated_event_is_valid_and_deliveries_are_ordered() {
        let d = all(args(&["--duration", "300s", "--rate", "40"]));
        assert!(d.len() > 1000, "only {} events", d.len());
        for w in d.windows(2) {
            assert!(w[0].deliver_at <= w[1].deliver_at);
        }
        for x in &d {
            let e = vigia_schemas::Event::from_value(x.event.clone())
                .unwrap_or_else(|e| panic!("{:?}: {e:?}", x.event));
            assert_eq!(e.tenant_id, x.tenant_id);
        }
    }

    #[test]
    fn the_rate_is_roughly_respected_and_misbehaviours_happen() {
        let d = all(args(&["--duration", "600s", "--rate", "30"]));
        let rate = d.len() as f64 / 600.0;
        assert!((15.0..60.0).contains(&rate), "rate {rate}");
        let ids: Vec<&str> = d
            .iter()
            .map(|x| x.event["event_id"].as_str().unwrap())
            .collect();
        let distinct: std::collections::HashSet<&&str> = ids.iter().collect();
        assert!(distinct.len() < ids.len(), "no duplicates were generated");
        let reordered = d
            .iter()
            .filter(|x| {
                let occ: DateTime<Utc> = x.event["occurred_at"].as_str().unwrap().parse().unwrap();
                x.deliver_at - occ >= chrono::Duration::seconds(60)
            })
            .count();
        assert!(reordered > 0, "no late events were generated");
    }

    #[test]
    fn a_warm_up_is_the_start_of_the_same_stream() {
        let warmed = all(args(&[
            "--warmup",
            "2m",
            "--duration",
            "1m",
            "--rate",
            "50",
        ]));
        let plain = all(args(&["--duration", "3m", "--rate", "50"]));
        assert_eq!(warmed, plain);
    }

    /// The pipeline benchmark's traffic (its simulator options, its default warm-up): the
    /// measured minute delivers at least 0.95 of the target rate. Without the warm-up it
    /// delivers about half (the ramp-up of conversations that last minutes), which this also
    /// checks, so that the test fails if the warm-up stops mattering or stops being enough.
    #[test]
    fn after_the_pipeline_benchmarks_warm_up_the_rate_is_the_target() {
        let start: DateTime<Utc> = "2026-03-01T12:00:00Z".parse().unwrap();
        let share = |warmup: &str| {
            let a = args(&[
                "--tenants",
                "4",
                "--sellers",
                "10",
                "--rate",
                "1000",
                "--warmup",
                warmup,
                "--duration",
                "60s",
                "--late-by",
                "10s",
                "--out-of-order-share",
                "0",
                "--late-share",
                "0",
                "--reply-max",
                "40s",
            ]);
            let from = start + chrono::Duration::from_std(a.warmup.into()).unwrap();
            let until = from + chrono::Duration::seconds(60);
            let mut g = Generator::new(a, start).unwrap();
            let in_window = std::iter::from_fn(|| g.next_delivery())
                .filter(|d| from <= d.deliver_at && d.deliver_at <= until)
                .count();
            in_window as f64 / (1000.0 * 60.0)
        };
        let cold = share("0s");
        let warm = share("90s");
        assert!(
            cold < 0.8,
            "without a warm-up the first minute posted {cold:.2} of the target"
        );
        assert!(
            warm >= 0.95,
            "after the warm-up the minute posted {warm:.2} of the target"
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        let start = Utc::now();
        assert!(Generator::new(args(&["--tenants", "0"]), start).is_err());
        assert!(Generator::new(args(&["--rate", "0"]), start).is_err());
        assert!(Generator::new(args(&["--reply-min", "2m", "--reply-max", "1m"]), start).is_err());
    }
}
