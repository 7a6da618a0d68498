//! The analyst queries of `docs/analytics.md`, end to end: the simulator's fixed-seed traffic goes
//! through `vigia serve` into ClickHouse 18.16, every ```sql block of the doc runs on it, and each
//! answer is compared with figures computed here, independently, from the same NDJSON events (the
//! rules re-implemented from contract §3 and the processors' documented semantics). Then the tables
//! are dumped and replayed on current ClickHouse (chdb, `scripts/chdb-check.sh`), which must give
//! the same answers.
//!
//! The traffic: a 3-minute stream in the week before (seed 8, its ids prefixed `w0-` so that they
//! do not collide with the main stream's) for the week-over-week question, then the main 6-minute
//! stream (`--seed 7 --start 2026-03-02T08:00:00Z --tenants 2 --sellers 4 --rate 10`), then per
//! tenant: late events that force retractions, a wait answered and one closed more than an hour
//! after it started (unanswered episodes that end), and one event two hours older than its
//! newest, which the processors refuse as too late (a dead letter) while `events` keeps it. Both
//! streams are generated with
//! `--out-of-order-share 0 --late-share 0` (duplicates stay on): delivered out of order, a reply
//! can end a wait that in event time another reply ended, and the processors do not revise a
//! sample once emitted (documented in `processors/src/engine/conversations.rs`), so their outputs
//! would no longer be a function of event time alone and could not be recomputed here exactly.
//!
//! The stream is from 2026 March while the clock is later, so every deadline is already past when
//! its event arrives: the processors fire it at once (clock watermark) and withdraw it when the
//! answer arrives. How many such fire-and-withdraw pairs appear depends on timing; what the
//! queries count (notifications never withdrawn, or withdrawn after their deadline) does not.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use common::*;
use serde_json::{json, Value};

const DOC: &str = "docs/analytics.md";
const TENANTS: [u64; 2] = [1, 2];
const HOUR_MS: i64 = 3_600_000;
/// Processor defaults the model assumes (the test does not override them).
const UNANSWERED_AFTER_MS: i64 = HOUR_MS;
const SESSION_TIMEOUT_MS: i64 = 600_000;
const ALLOWED_LATENESS_MS: i64 = HOUR_MS;
const FOLLOW_UP_BEFORE_MS: i64 = 24 * HOUR_MS;
const HOT_THRESHOLD: f64 = 0.8;
const HOT_NO_CONTACT_MS: i64 = 2 * HOUR_MS;
const WATERMARK_DELAY_MS: i64 = 50;
/// Set by the test's config file (processors' default list is empty).
const HIGH_VALUE_LOCATIONS: [&str; 2] = ["Bogotá", "Medellín"];
/// America/Bogota has no DST: UTC−5 all year.
const BOGOTA_OFFSET_H: i64 = -5;
const THIS_WEEK: &str = "2026-03-02T00:00:00Z";
const RANGE: (&str, &str) = ("2026-02-23T00:00:00Z", "2026-03-09T00:00:00Z");

// ---------------------------------------------------------------------------------------------
// The events

/// How far back the seller metrics keep leads (`retention::SELLER_WINDOWS`).
const SELLER_WINDOWS_MS: i64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, Clone)]
struct Ev {
    id: String,
    tenant: u64,
    ty: String,
    ms: i64,
    v: Value,
}

impl Ev {
    fn s(&self, k: &str) -> &str {
        self.v[k].as_str().unwrap_or("")
    }
    fn u(&self, k: &str) -> u64 {
        self.v[k].as_u64().unwrap_or(0)
    }
    fn automated(&self) -> bool {
        self.v["automated"].as_bool().unwrap_or(false)
    }
    /// `events.seller_id` as the sink fills it.
    fn seller(&self) -> u64 {
        match self.ty.as_str() {
            "session.started" | "session.heartbeat" | "session.ended" => self.u("agent_id"),
            "message.received"
            | "message.sent"
            | "conversation.assigned"
            | "lead.created"
            | "lead.follow_up_scheduled" => self.u("seller_id"),
            _ => 0,
        }
    }
}

fn parse_ms(s: &str) -> i64 {
    s.parse::<DateTime<Utc>>()
        .unwrap_or_else(|e| panic!("bad time {s}: {e}"))
        .timestamp_millis()
}

fn fmt_dt(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn fmt_date(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS).rem_euclid(24)
}

fn simulate(extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "simulate",
        "--dry-run",
        "--tenants",
        "2",
        "--sellers",
        "4",
        "--rate",
        "10",
        "--out-of-order-share",
        "0",
        "--late-share",
        "0",
    ];
    args.extend_from_slice(extra);
    let out = Command::new(env!("CARGO_BIN_EXE_vigia"))
        .args(&args)
        .env_remove("VIGIA_CONFIG")
        .output()
        .expect("vigia simulate runs");
    assert!(out.status.success(), "simulate failed: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect()
}

/// Every delivery in posting order (duplicates included).
fn traffic() -> Vec<Value> {
    let mut week0 = simulate(&[
        "--seed",
        "8",
        "--start",
        "2026-02-23T08:00:00Z",
        "--duration",
        "3m",
    ]);
    for e in &mut week0 {
        for k in ["conversation_id", "lead_id", "session_id", "client_id"] {
            if let Some(s) = e[k].as_str() {
                e[k] = json!(format!("w0-{s}"));
            }
        }
    }
    let main = simulate(&[
        "--seed",
        "7",
        "--start",
        "2026-03-02T08:00:00Z",
        "--duration",
        "6m",
    ]);
    let mut all = week0;
    let early = all.len() + 20;
    all.extend(main);
    // Late events that correct response times already written (retractions in ClickHouse):
    // per tenant, (1) the first customer message of an answered wait arrives after the reply;
    // (2) a reply arrives after a later reply had answered its wait and the next message's.
    for t in TENANTS {
        let seller = t * 1000 + 10;
        let ev = |ty: &str, conv: &str, at: &str, extra: Value| {
            let mut e = json!({
                "event_id": uuid::Uuid::new_v4().to_string(), "type": ty, "tenant_id": t,
                "occurred_at": at, "conversation_id": format!("t{t}-{conv}"),
            });
            for (k, v) in extra.as_object().unwrap() {
                e[k] = v.clone();
            }
            e
        };
        let customer = json!({"channel": "web", "seller_id": seller, "text": "hola"});
        let reply = json!({"seller_id": seller, "automated": false});
        let on_time = [
            ev(
                "message.received",
                "late-first",
                "2026-03-02T08:02:00.000Z",
                customer.clone(),
            ),
            ev(
                "message.sent",
                "late-first",
                "2026-03-02T08:03:00.000Z",
                reply.clone(),
            ),
            ev(
                "message.received",
                "late-reply",
                "2026-03-02T08:01:00.000Z",
                customer.clone(),
            ),
            ev(
                "message.received",
                "late-reply",
                "2026-03-02T08:02:00.000Z",
                customer.clone(),
            ),
            ev(
                "message.sent",
                "late-reply",
                "2026-03-02T08:04:00.000Z",
                reply.clone(),
            ),
        ];
        for (i, e) in on_time.into_iter().enumerate() {
            all.insert(early + i, e);
        }
        all.push(ev(
            "message.received",
            "late-first",
            "2026-03-02T08:00:30.000Z",
            customer,
        ));
        all.push(ev(
            "message.sent",
            "late-reply",
            "2026-03-02T08:01:30.000Z",
            reply,
        ));
    }
    // Unanswered episodes that end: per tenant, a wait answered 70 min after it started and
    // one closed 65 min after (the main stream is too short for either). Posted after the late
    // events above, which they would otherwise push beyond the allowed lateness.
    for t in TENANTS {
        let at = |conv: &str, ty: &str, when: &str, extra: Value| {
            let mut e = json!({
                "event_id": uuid::Uuid::new_v4().to_string(), "type": ty, "tenant_id": t,
                "occurred_at": when, "conversation_id": format!("t{t}-{conv}"),
            });
            for (k, v) in extra.as_object().unwrap() {
                e[k] = v.clone();
            }
            e
        };
        let seller = t * 1000 + 11;
        let customer = json!({"channel": "email", "seller_id": seller, "text": "hola"});
        all.push(at(
            "answered-late",
            "message.received",
            "2026-03-02T08:05:00.000Z",
            customer.clone(),
        ));
        all.push(at(
            "closed-late",
            "message.received",
            "2026-03-02T08:06:00.000Z",
            customer,
        ));
        all.push(at(
            "answered-late",
            "message.sent",
            "2026-03-02T09:15:00.000Z",
            json!({"seller_id": seller, "automated": false}),
        ));
        all.push(at(
            "closed-late",
            "conversation.closed",
            "2026-03-02T09:11:00.000Z",
            json!({}),
        ));
    }
    for t in TENANTS {
        // Two hours before the tenant's newest event: beyond the allowed lateness (1 h).
        all.push(json!({
            "event_id": uuid::Uuid::new_v4().to_string(), "type": "message.received",
            "tenant_id": t, "occurred_at": "2026-03-02T06:10:00.000Z",
            "conversation_id": format!("t{t}-too-late"), "channel": "web",
            "seller_id": t * 1000 + 10, "text": "hola"
        }));
    }
    all
}

// ---------------------------------------------------------------------------------------------
// The independent model

/// One answered wait: the first customer message after the last reply or close, to the first
/// non-automated reply at or after it (contract §3.2, conversations.rs).
#[derive(Debug, Clone)]
struct Pair {
    conv: String,
    seller: u64,
    reply_ms: i64,
    secs: f64,
}

/// A wait unanswered past its deadline (an unanswered alert that stands).
#[derive(Debug, Clone)]
struct Episode {
    tenant: u64,
    conv: String,
    deadline_ms: i64,
    /// Channel of the customer message that started the wait.
    channel: String,
    /// When and how it ended later: `resolved` (a reply) or `closed`.
    end: Option<(i64, &'static str)>,
}

#[derive(Default)]
struct Model {
    /// Distinct events, first delivery first (what `events` holds).
    raw: Vec<Ev>,
    /// Of those, the ones the processors apply (not too late).
    applied: Vec<Ev>,
    too_late: Vec<Ev>,
    pairs: Vec<(u64, Pair)>,
    /// Waits unanswered past their deadline.
    unanswered: Vec<Episode>,
}

impl Model {
    fn build(deliveries: &[Value]) -> Model {
        let mut m = Model::default();
        let mut seen = HashSet::new();
        let mut max_ms: HashMap<u64, i64> = HashMap::new();
        for d in deliveries {
            let id = d["event_id"].as_str().unwrap().to_string();
            if !seen.insert(id.clone()) {
                continue;
            }
            let ev = Ev {
                id,
                tenant: d["tenant_id"].as_u64().unwrap(),
                ty: d["type"].as_str().unwrap().to_string(),
                ms: parse_ms(d["occurred_at"].as_str().unwrap()),
                v: d.clone(),
            };
            m.raw.push(ev.clone());
            let max = max_ms.entry(ev.tenant).or_insert(ev.ms);
            if ev.ms < *max - ALLOWED_LATENESS_MS {
                m.too_late.push(ev);
                continue;
            }
            *max = (*max).max(ev.ms);
            m.applied.push(ev);
        }
        m.conversations();
        m
    }

    fn conversations(&mut self) {
        let mut by_conv: BTreeMap<(u64, String), Vec<&Ev>> = BTreeMap::new();
        for e in &self.applied {
            if matches!(
                e.ty.as_str(),
                "message.received" | "message.sent" | "conversation.closed"
            ) {
                by_conv
                    .entry((e.tenant, e.s("conversation_id").to_string()))
                    .or_default()
                    .push(e);
            }
        }
        for ((tenant, conv), mut evs) in by_conv {
            evs.sort_by_key(|e| e.ms); // stable: delivery order on ties
            let mut wait: Option<(i64, String)> = None;
            for e in evs {
                match e.ty.as_str() {
                    "message.received" => {
                        wait.get_or_insert((e.ms, e.s("channel").to_string()));
                    }
                    "message.sent" if e.automated() => {}
                    _ => {
                        let Some((start, channel)) = wait.take() else {
                            continue;
                        };
                        if e.ms > start + UNANSWERED_AFTER_MS {
                            let how = if e.ty == "message.sent" {
                                "resolved"
                            } else {
                                "closed"
                            };
                            self.unanswered.push(Episode {
                                tenant,
                                conv: conv.clone(),
                                deadline_ms: start + UNANSWERED_AFTER_MS,
                                channel,
                                end: Some((e.ms, how)),
                            });
                        }
                        if e.ty == "message.sent" {
                            self.pairs.push((
                                tenant,
                                Pair {
                                    conv: conv.clone(),
                                    seller: e.u("seller_id"),
                                    reply_ms: e.ms,
                                    secs: (e.ms - start) as f64 / 1000.0,
                                },
                            ));
                        }
                    }
                }
            }
            if let Some((start, channel)) = wait {
                self.unanswered.push(Episode {
                    tenant,
                    conv,
                    deadline_ms: start + UNANSWERED_AFTER_MS,
                    channel,
                    end: None,
                });
            }
        }
    }

    fn raw_of(&self, t: u64, ty: &str) -> impl Iterator<Item = &Ev> + '_ {
        let ty = ty.to_string();
        self.raw.iter().filter(move |e| e.tenant == t && e.ty == ty)
    }

    fn applied_of(&self, t: u64, ty: &str) -> impl Iterator<Item = &Ev> + '_ {
        let ty = ty.to_string();
        self.applied
            .iter()
            .filter(move |e| e.tenant == t && e.ty == ty)
    }

    fn pairs_of(&self, t: u64) -> impl Iterator<Item = &Pair> + '_ {
        self.pairs
            .iter()
            .filter(move |(pt, _)| *pt == t)
            .map(|(_, p)| p)
    }

    /// Latest status of each lead by event time, among `evs`, before `before_ms`.
    fn statuses<'a>(
        evs: impl Iterator<Item = &'a Ev>,
        before_ms: i64,
    ) -> HashMap<String, (i64, String)> {
        let mut out: HashMap<String, (i64, String)> = HashMap::new();
        for e in evs.filter(|e| e.ty == "lead.status_changed" && e.ms < before_ms) {
            let cur = out
                .entry(e.s("lead_id").to_string())
                .or_insert((i64::MIN, String::new()));
            if e.ms >= cur.0 {
                *cur = (e.ms, e.s("status").to_string());
            }
        }
        out
    }

    /// The expected number of notifications that stand (never withdrawn), for a lower bound.
    fn standing_notifications(&self, t: u64) -> usize {
        let unanswered = self.unanswered.iter().filter(|u| u.tenant == t).count();
        let timeouts: u64 = self.session_timeouts(t).values().sum();
        let follow_ups: usize = self
            .follow_ups(t)
            .iter()
            .map(|f| 1 + usize::from(f.before))
            .sum();
        let hot = self.hot_leads(t).values().filter(|h| h.notified).count();
        unanswered + timeouts as usize + follow_ups + hot
    }

    /// Session timeouts per agent (sessions.rs): a gap of more than the timeout between beats,
    /// an end after the deadline, or no end at all.
    fn session_timeouts(&self, t: u64) -> BTreeMap<u64, u64> {
        let mut sessions: BTreeMap<&str, Vec<&Ev>> = BTreeMap::new();
        for e in self
            .applied
            .iter()
            .filter(|e| e.tenant == t && e.ty.starts_with("session."))
        {
            sessions.entry(e.s("session_id")).or_default().push(e);
        }
        let mut out = BTreeMap::new();
        for (_, mut evs) in sessions {
            evs.sort_by_key(|e| e.ms);
            let agent = evs[0].u("agent_id");
            let mut last_beat: Option<i64> = None;
            let mut timeouts = 0;
            let mut ended = false;
            for e in evs {
                let late = last_beat.is_some_and(|b| e.ms > b + SESSION_TIMEOUT_MS);
                if late {
                    timeouts += 1;
                }
                if e.ty == "session.ended" {
                    ended = true;
                    break;
                }
                last_beat = Some(e.ms);
            }
            if !ended {
                timeouts += 1;
            }
            *out.entry(agent).or_insert(0) += timeouts;
        }
        out
    }

    fn follow_ups(&self, t: u64) -> Vec<FollowUp> {
        let statuses = Self::statuses(self.applied.iter().filter(|e| e.tenant == t), i64::MAX);
        let mut latest: BTreeMap<String, &Ev> = BTreeMap::new();
        for e in self.applied_of(t, "lead.follow_up_scheduled") {
            let cur = latest.entry(e.s("lead_id").to_string()).or_insert(e);
            if (e.ms, &e.id) > (cur.ms, &cur.id) {
                *cur = e;
            }
        }
        latest
            .into_iter()
            .filter(|(lead, _)| {
                statuses
                    .get(lead)
                    .is_none_or(|(_, s)| s == "interested" || s == "negotiation")
            })
            .map(|(lead, e)| {
                let due_ms = parse_ms(e.s("due_at"));
                FollowUp {
                    lead,
                    seller: e.u("seller_id"),
                    due_ms,
                    before: due_ms - FOLLOW_UP_BEFORE_MS > e.ms,
                }
            })
            .collect()
    }

    /// Each lead's hot-lead facts: the highest score it reached and whether it was notified
    /// (scoring.rs weights; the intent signals of the simulator's lines read by hand below).
    fn hot_leads(&self, t: u64) -> BTreeMap<String, Hot> {
        let mut customer: HashMap<&str, Vec<&Ev>> = HashMap::new();
        let mut replies: HashMap<&str, Vec<i64>> = HashMap::new();
        for e in self.applied.iter().filter(|e| e.tenant == t) {
            match e.ty.as_str() {
                "message.received" => customer.entry(e.s("conversation_id")).or_default().push(e),
                "message.sent" if !e.automated() => replies
                    .entry(e.s("conversation_id"))
                    .or_default()
                    .push(e.ms),
                _ => {}
            }
        }
        let mut out = BTreeMap::new();
        for lead in self.applied_of(t, "lead.created") {
            let source = match lead.s("source") {
                "META_ADS" => 0.30,
                "REFERRAL" => 0.25,
                "WEBSITE" => 0.20,
                _ => 0.0,
            };
            let location = if HIGH_VALUE_LOCATIONS.contains(&lead.s("location")) {
                0.10
            } else {
                0.0
            };
            let conv = lead.s("conversation_id");
            let mut msgs = customer.get(conv).cloned().unwrap_or_default();
            msgs.sort_by_key(|e| e.ms);
            let conv_replies = replies.get(conv).cloned().unwrap_or_default();
            let mut best: f64 = source + location;
            let mut notified = false;
            let mut signals = BTreeSet::new();
            for (n, m) in msgs.iter().enumerate() {
                signals.extend(intent_signals(m.s("text")));
                let engagement = if n + 1 > 5 { 0.20 } else { 0.0 };
                let intent = (signals.len() as f64 * 0.10).min(0.25);
                let score = source + engagement + 0.15 + intent + location;
                // Scores only from the lead's creation on.
                if m.ms < lead.ms {
                    continue;
                }
                best = best.max(score);
                let contacted = conv_replies
                    .iter()
                    .any(|r| *r <= m.ms && *r >= m.ms - HOT_NO_CONTACT_MS);
                if score >= HOT_THRESHOLD - 1e-9 && !contacted {
                    notified = true;
                }
            }
            out.insert(
                lead.s("lead_id").to_string(),
                Hot {
                    hot: best >= HOT_THRESHOLD - 1e-9,
                    notified,
                },
            );
        }
        out
    }
}

struct FollowUp {
    lead: String,
    seller: u64,
    due_ms: i64,
    before: bool,
}

struct Hot {
    hot: bool,
    notified: bool,
}

/// The buying signals of the simulator's customer lines, read by hand from contract §3.3's intent
/// component (buying signals in the customer's messages, Spanish or English) and the concepts of
/// `scoring.rs` (price, quote, buy, availability, financing, visit, discount).
fn intent_signals(text: &str) -> Vec<&'static str> {
    match text {
        "¿Cuál es el precio del plan anual?" | "Hi, how much is the premium plan?" => {
            vec!["price"]
        }
        "Quiero comprar dos unidades" | "I want to buy it today" => vec!["buy"],
        "¿Está disponible para entrega esta semana?" | "Is it available in blue?" => {
            vec!["availability"]
        }
        "Necesito una cotización, por favor" | "Can you send me a quote?" => vec!["quote"],
        "¿Tienen descuento por volumen?" => vec!["discount"],
        "Hola, quisiera información"
        | "Gracias, lo pienso y les escribo"
        | "Ok, thanks"
        | "hola" => {
            vec![]
        }
        other => panic!("the test does not know the buying signals of {other:?}"),
    }
}

/// ClickHouse `quantileExact(q)`: the `floor(q·n)`-th smallest (0-based).
fn quantile_exact(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((q * v.len() as f64) as usize).min(v.len() - 1);
    v[i]
}

/// ClickHouse `quantileExactWeighted(q)` with unit weights: the first value, in increasing
/// order, at which the running count reaches `ceil(q·n)` (computed in f64 as ClickHouse does).
fn nearest_rank(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let threshold = (v.len() as f64 * q).ceil() as usize;
    v[threshold.max(1) - 1]
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

// ---------------------------------------------------------------------------------------------
// Comparing answers

type Rows = Vec<BTreeMap<String, String>>;

fn parse_tsv(text: &str) -> Rows {
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split('\t')
        .map(String::from)
        .collect();
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split('\t').map(String::from))
                .collect()
        })
        .collect()
}

/// An expected cell: exact text, or a number within a tolerance, or NULL.
#[derive(Debug, Clone)]
enum Cell {
    Text(String),
    Num(f64, f64),
    Null,
}

fn num(x: f64) -> Cell {
    Cell::Num(x, 1e-6)
}
/// A value the query rounds to `decimals`: within half a unit (plus float noise).
fn rounded(x: f64, decimals: i32) -> Cell {
    Cell::Num(x, 0.5 * 10f64.powi(-decimals) + 1e-9)
}
fn text(s: impl Into<String>) -> Cell {
    Cell::Text(s.into())
}

/// Compares rows keyed by `key` columns with the expected rows (same keys, every listed column
/// equal within its tolerance); in `ordered` mode also the row order.
fn compare(
    got: &Rows,
    key: &[&str],
    expected: &[Vec<(&str, Cell)>],
    ordered: bool,
) -> Result<(), String> {
    let key_of = |r: &BTreeMap<String, String>| -> String {
        key.iter()
            .map(|k| {
                r.get(*k)
                    .cloned()
                    .unwrap_or_else(|| format!("<no column {k}>"))
            })
            .collect::<Vec<_>>()
            .join("|")
    };
    let exp_key = |r: &Vec<(&str, Cell)>| -> String {
        key.iter()
            .map(|k| match r.iter().find(|(c, _)| c == k).map(|(_, v)| v) {
                Some(Cell::Text(s)) => s.clone(),
                Some(Cell::Num(x, _)) => format!("{x}"),
                _ => "?".into(),
            })
            .collect::<Vec<_>>()
            .join("|")
    };
    let got_keys: Vec<String> = got.iter().map(key_of).collect();
    let exp_keys: Vec<String> = expected.iter().map(exp_key).collect();
    let (gs, es): (BTreeSet<_>, BTreeSet<_>) =
        (got_keys.iter().collect(), exp_keys.iter().collect());
    if gs != es || got_keys.len() != exp_keys.len() {
        return Err(format!(
            "rows differ by key {key:?}:\n  only in ClickHouse: {:?}\n  only expected: {:?}\n  ({} rows vs {} expected)",
            gs.difference(&es).collect::<Vec<_>>(),
            es.difference(&gs).collect::<Vec<_>>(),
            got_keys.len(),
            exp_keys.len()
        ));
    }
    if ordered && got_keys != exp_keys {
        return Err(format!(
            "row order differs: got {got_keys:?}, expected {exp_keys:?}"
        ));
    }
    let mut errors = Vec::new();
    for exp in expected {
        let k = exp_key(exp);
        let row = &got[got_keys.iter().position(|g| *g == k).unwrap()];
        for (col, cell) in exp {
            let Some(v) = row.get(*col) else {
                errors.push(format!("[{k}] no column {col}"));
                continue;
            };
            let ok = match cell {
                Cell::Text(s) => v == s,
                Cell::Null => v == "\\N",
                Cell::Num(x, tol) => v.parse::<f64>().is_ok_and(|g| (g - x).abs() <= *tol),
            };
            if !ok {
                errors.push(format!("[{k}] {col} = {v}, expected {cell:?}"));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n  "))
    }
}

// ---------------------------------------------------------------------------------------------
// The expected answer of each question

fn in_range(ms: i64) -> bool {
    ms >= parse_ms(RANGE.0) && ms < parse_ms(RANGE.1)
}

fn check(n: usize, rows: &Rows, m: &Model, t: u64) -> Result<(), String> {
    match n {
        1 => {
            let mut groups: BTreeMap<(String, u64), Vec<f64>> = BTreeMap::new();
            for p in m.pairs_of(t).filter(|p| in_range(p.reply_ms)) {
                groups
                    .entry((fmt_date(p.reply_ms), p.seller))
                    .or_default()
                    .push(p.secs);
            }
            let exp: Vec<_> = groups
                .into_iter()
                .map(|((day, seller), xs)| {
                    vec![
                        ("day", text(day)),
                        ("seller_id", text(seller.to_string())),
                        ("answered", num(xs.len() as f64)),
                        ("mean_s", rounded(mean(&xs), 1)),
                        ("p50_s", rounded(quantile_exact(&xs, 0.5), 1)),
                        ("p90_s", rounded(quantile_exact(&xs, 0.9), 1)),
                        ("max_s", rounded(xs.iter().cloned().fold(0.0, f64::max), 1)),
                    ]
                })
                .collect();
            compare(rows, &["day", "seller_id"], &exp, true)
        }
        2 => {
            let mut groups: BTreeMap<i64, (u64, BTreeSet<&str>)> = BTreeMap::new();
            for u in m.unanswered.iter().filter(|u| u.tenant == t) {
                let g = groups.entry(hour_of(u.deadline_ms)).or_default();
                g.0 += 1;
                g.1.insert(&u.conv);
            }
            let exp: Vec<_> = groups
                .into_iter()
                .map(|(h, (n, convs))| {
                    vec![
                        ("hour_utc", text(h.to_string())),
                        ("unanswered_waits", num(n as f64)),
                        ("conversations", num(convs.len() as f64)),
                    ]
                })
                .collect();
            compare(rows, &["hour_utc"], &exp, true)
        }
        3 => {
            let mut reached: HashMap<&str, BTreeSet<&str>> = HashMap::new();
            for e in m.raw_of(t, "lead.status_changed") {
                reached
                    .entry(e.s("lead_id"))
                    .or_default()
                    .insert(e.s("status"));
            }
            let mut by_source: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for e in m.raw_of(t, "lead.created") {
                by_source
                    .entry(e.s("source"))
                    .or_default()
                    .push(e.s("lead_id"));
            }
            let exp: Vec<_> = by_source
                .into_iter()
                .map(|(source, leads)| {
                    let count = |st: &str| {
                        leads
                            .iter()
                            .filter(|l| reached.get(*l).is_some_and(|s| s.contains(st)))
                            .count() as f64
                    };
                    let n = leads.len() as f64;
                    vec![
                        ("source", text(source)),
                        ("leads", num(n)),
                        ("contacted", num(count("contacted"))),
                        ("interested", num(count("interested"))),
                        ("negotiation", num(count("negotiation"))),
                        ("converted", num(count("converted"))),
                        ("lost", num(count("lost"))),
                        ("conversion_rate", rounded(count("converted") / n, 3)),
                    ]
                })
                .collect();
            compare(rows, &["source"], &exp, true)
        }
        4 => {
            let statuses = Model::statuses(m.raw.iter().filter(|e| e.tenant == t), i64::MAX);
            let mut groups: BTreeMap<u8, (f64, f64, f64)> = BTreeMap::new();
            for (lead, h) in m.hot_leads(t) {
                let g = groups.entry(u8::from(h.hot)).or_default();
                g.0 += 1.0;
                g.1 += f64::from(u8::from(h.notified));
                if statuses.get(&lead).is_some_and(|(_, s)| s == "converted") {
                    g.2 += 1.0;
                }
            }
            let exp: Vec<_> = groups
                .into_iter()
                .map(|(hot, (n, notified, converted))| {
                    vec![
                        ("hot", text(hot.to_string())),
                        ("leads", num(n)),
                        ("notified", num(notified)),
                        ("converted", num(converted)),
                        ("conversion_rate", rounded(converted / n, 3)),
                    ]
                })
                .collect();
            compare(rows, &["hot"], &exp, true)
        }
        5 => {
            let mut activity: HashMap<&str, i64> = HashMap::new();
            let mut conv_of: HashMap<&str, &str> = HashMap::new();
            for e in m.raw.iter().filter(|e| e.tenant == t) {
                match e.ty.as_str() {
                    "lead.status_changed" => {
                        let a = activity.entry(e.s("lead_id")).or_insert(0);
                        *a = (*a).max(e.ms);
                    }
                    "lead.created" if !e.s("conversation_id").is_empty() => {
                        conv_of.insert(e.s("lead_id"), e.s("conversation_id"));
                    }
                    _ => {}
                }
            }
            let mut sent: HashMap<&str, i64> = HashMap::new();
            for e in m.raw_of(t, "message.sent") {
                let s = sent.entry(e.s("conversation_id")).or_insert(0);
                *s = (*s).max(e.ms);
            }
            let mut groups: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
            for f in m.follow_ups(t) {
                let last = activity.get(f.lead.as_str()).copied().unwrap_or(0).max(
                    conv_of
                        .get(f.lead.as_str())
                        .and_then(|c| sent.get(c))
                        .copied()
                        .unwrap_or(0),
                );
                let g = groups.entry(f.seller).or_default();
                g.0 += 1.0;
                if last < f.due_ms {
                    g.1 += 1.0;
                }
            }
            let exp: Vec<_> = groups
                .into_iter()
                .map(|(seller, (due, missed))| {
                    vec![
                        ("seller_id", text(seller.to_string())),
                        ("came_due", num(due)),
                        ("missed", num(missed)),
                    ]
                })
                .collect();
            compare(rows, &["seller_id"], &exp, true)
        }
        6 => {
            let mut sessions: BTreeMap<u64, f64> = BTreeMap::new();
            for e in m.raw_of(t, "session.started") {
                *sessions.entry(e.u("agent_id")).or_default() += 1.0;
            }
            let timeouts = m.session_timeouts(t);
            let exp: Vec<_> = sessions
                .into_iter()
                .map(|(agent, n)| {
                    let to = timeouts.get(&agent).copied().unwrap_or(0) as f64;
                    vec![
                        ("agent_id", text(agent.to_string())),
                        ("sessions", num(n)),
                        ("timeouts", num(to)),
                        ("timeout_rate", rounded(to / n, 3)),
                    ]
                })
                .collect();
            compare(rows, &["agent_id"], &exp, true)
        }
        7 => {
            let week = parse_ms(THIS_WEEK);
            // (received, replies, leads) × (this, last)
            let mut groups: BTreeMap<u64, [f64; 6]> = BTreeMap::new();
            for e in m.raw.iter().filter(|e| e.tenant == t && in_range(e.ms)) {
                let col = match e.ty.as_str() {
                    "message.received" => 0,
                    "message.sent" if !e.automated() => 2,
                    "lead.created" => 4,
                    _ => continue,
                };
                if e.seller() == 0 {
                    continue;
                }
                let col = col + usize::from(e.ms < week);
                groups.entry(e.seller()).or_default()[col] += 1.0;
            }
            let exp: Vec<_> = groups
                .into_iter()
                .map(|(seller, c)| {
                    vec![
                        ("seller_id", text(seller.to_string())),
                        ("received_this_week", num(c[0])),
                        ("received_last_week", num(c[1])),
                        ("replies_this_week", num(c[2])),
                        ("replies_last_week", num(c[3])),
                        ("leads_this_week", num(c[4])),
                        ("leads_last_week", num(c[5])),
                        (
                            "received_change",
                            if c[1] == 0.0 {
                                Cell::Null
                            } else {
                                rounded(c[0] / c[1] - 1.0, 3)
                            },
                        ),
                    ]
                })
                .collect();
            compare(rows, &["seller_id"], &exp, true)
        }
        8 => {
            // received, replies, bot replies, answered, response seconds
            let mut groups: BTreeMap<(i64, u64), [f64; 5]> = BTreeMap::new();
            for e in m.raw.iter().filter(|e| e.tenant == t && in_range(e.ms)) {
                let col = match e.ty.as_str() {
                    "message.received" => 0,
                    "message.sent" if e.automated() => 2,
                    "message.sent" => 1,
                    _ => continue,
                };
                if e.seller() == 0 {
                    continue;
                }
                let hour = e.ms.div_euclid(HOUR_MS) * HOUR_MS;
                groups.entry((hour, e.seller())).or_default()[col] += 1.0;
            }
            for p in m.pairs_of(t).filter(|p| in_range(p.reply_ms)) {
                let hour = p.reply_ms.div_euclid(HOUR_MS) * HOUR_MS;
                let g = groups.entry((hour, p.seller)).or_default();
                g[3] += 1.0;
                g[4] += p.secs;
            }
            let exp: Vec<_> = groups
                .into_iter()
                .map(|((hour, seller), c)| {
                    vec![
                        ("hour", text(fmt_dt(hour))),
                        ("seller_id", text(seller.to_string())),
                        ("received", num(c[0])),
                        ("replies", num(c[1])),
                        ("bot_replies", num(c[2])),
                        ("answered", num(c[3])),
                        (
                            "mean_response_s",
                            if c[3] == 0.0 {
                                Cell::Null
                            } else {
                                rounded(c[4] / c[3], 1)
                            },
                        ),
                    ]
                })
                .collect();
            compare(rows, &["hour", "seller_id"], &exp, true)
        }
        9 => {
            let mut groups: BTreeMap<i64, (f64, BTreeSet<&str>)> = BTreeMap::new();
            for e in m.raw_of(t, "message.received").filter(|e| in_range(e.ms)) {
                let h = hour_of(e.ms + BOGOTA_OFFSET_H * HOUR_MS);
                let g = groups.entry(h).or_default();
                g.0 += 1.0;
                g.1.insert(e.s("conversation_id"));
            }
            let mut exp: Vec<_> = groups.into_iter().collect();
            exp.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0).then(a.0.cmp(&b.0)));
            let exp: Vec<_> = exp
                .into_iter()
                .map(|(h, (n, convs))| {
                    vec![
                        ("local_hour", text(h.to_string())),
                        ("customer_messages", num(n)),
                        ("conversations", num(convs.len() as f64)),
                    ]
                })
                .collect();
            compare(rows, &["local_hour"], &exp, true)
        }
        10 => {
            let mut groups: BTreeMap<&str, (f64, BTreeSet<&str>)> = BTreeMap::new();
            let mut total = 0.0;
            for e in m.raw_of(t, "message.received") {
                let g = groups.entry(e.s("channel")).or_default();
                g.0 += 1.0;
                g.1.insert(e.s("conversation_id"));
                total += 1.0;
            }
            let exp: Vec<_> = groups
                .into_iter()
                .map(|(ch, (n, convs))| {
                    vec![
                        ("channel", text(ch)),
                        ("messages", num(n)),
                        ("conversations", num(convs.len() as f64)),
                        ("share", rounded(n / total, 3)),
                    ]
                })
                .collect();
            compare(rows, &["channel"], &exp, true)
        }
        11 => {
            let late: Vec<&Ev> = m.too_late.iter().filter(|e| e.tenant == t).collect();
            let exp: Vec<_> = if late.is_empty() {
                vec![]
            } else {
                vec![vec![
                    ("stage", text("processors")),
                    ("records", num(late.len() as f64)),
                ]]
            };
            compare(rows, &["stage"], &exp, true)?;
            for r in rows {
                if !r["origin_topic"].ends_with("events") {
                    return Err(format!(
                        "origin_topic {} is not the events topic",
                        r["origin_topic"]
                    ));
                }
                if !late.iter().any(|e| r["example_error"].contains(&e.id)) {
                    return Err(format!(
                        "example_error names none of the too-late events {:?}: {}",
                        late.iter().map(|e| &e.id).collect::<Vec<_>>(),
                        r["example_error"]
                    ));
                }
                // failed_at is the refused record's Kafka timestamp: during this test.
                let today = fmt_date(Utc::now().timestamp_millis());
                if !r["first"].starts_with(&today[..7]) || r["first"] > r["last"] {
                    return Err(format!(
                        "first/last {} {} are not wall-clock times of this run",
                        r["first"], r["last"]
                    ));
                }
            }
            Ok(())
        }
        12 => {
            let mut errors = Vec::new();
            let tenant_evs = || m.applied.iter().filter(|e| e.tenant == t);
            for r in rows {
                let seller: u64 = r["seller_id"].parse().unwrap();
                let as_of = parse_ms(&format!("{}Z", r["as_of"].replace(' ', "T")));
                // A snapshot at minute B reflects the events applied before the watermark
                // (newest event time − watermark delay) reached B: in order, those before B +
                // the delay.
                let before = as_of + WATERMARK_DELAY_MS;
                // The engine keeps a lead while it had an event within the seller windows (7
                // days: processors/src/engine/retention.rs); the week-old traffic's leads are
                // forgotten by the main traffic's snapshots. A lead's events: its `lead.*` and
                // the customer messages of the conversation its `lead.created` names.
                let kept_since = as_of - SELLER_WINDOWS_MS;
                let touched = |lead: &Ev| {
                    let conv = lead.s("conversation_id");
                    tenant_evs().any(|e| {
                        e.ms < before
                            && e.ms >= kept_since
                            && ((e.ty.starts_with("lead.") && e.s("lead_id") == lead.s("lead_id"))
                                || (e.ty == "message.received"
                                    && !conv.is_empty()
                                    && e.s("conversation_id") == conv))
                    })
                };
                let leads: Vec<&str> = tenant_evs()
                    .filter(|e| {
                        e.ty == "lead.created"
                            && e.u("seller_id") == seller
                            && e.ms < before
                            && touched(e)
                    })
                    .map(|e| e.s("lead_id"))
                    .collect();
                let statuses = Model::statuses(tenant_evs(), before);
                let converted = leads
                    .iter()
                    .filter(|l| statuses.get(**l).is_some_and(|(_, s)| s == "converted"))
                    .count();
                let exp = [("leads", leads.len()), ("converted", converted)];
                for (col, want) in exp {
                    if r[col] != want.to_string() {
                        errors.push(format!(
                            "seller {seller} at {}: {col} = {}, expected {want}",
                            r["as_of"], r[col]
                        ));
                    }
                }
                if !["low", "medium", "high"].contains(&r["activity"].as_str()) {
                    errors.push(format!("seller {seller}: activity {}", r["activity"]));
                }
            }
            // At the latest snapshot time, ranks are 1..n by productivity desc, then seller id.
            if let Some(latest) = rows.iter().map(|r| r["as_of"].clone()).max() {
                let mut at_latest: Vec<(f64, u64, u64)> = rows
                    .iter()
                    .filter(|r| r["as_of"] == latest)
                    .map(|r| {
                        (
                            r["productivity"].parse().unwrap(),
                            r["seller_id"].parse().unwrap(),
                            r["rank"].parse().unwrap(),
                        )
                    })
                    .collect();
                at_latest.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                for (i, (_, seller, rank)) in at_latest.iter().enumerate() {
                    if *rank as usize != i + 1 && at_latest.len() == rows.len() {
                        errors.push(format!(
                            "seller {seller} has rank {rank}, expected {}",
                            i + 1
                        ));
                    }
                }
            }
            // Every seller of the tenant with leads shows up.
            let sellers: BTreeSet<String> = rows.iter().map(|r| r["seller_id"].clone()).collect();
            for e in m.applied_of(t, "lead.created") {
                if !sellers.contains(&e.u("seller_id").to_string()) {
                    errors.push(format!("seller {} is missing", e.u("seller_id")));
                    break;
                }
            }
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.join("\n  "))
            }
        }
        13 => {
            let mut first: BTreeMap<&str, (i64, f64)> = BTreeMap::new();
            for p in m.pairs_of(t) {
                let f = first.entry(p.conv.as_str()).or_insert((i64::MAX, 0.0));
                if p.reply_ms < f.0 {
                    *f = (p.reply_ms, p.secs);
                }
            }
            let mut channel: HashMap<&str, &str> = HashMap::new();
            for e in m.raw_of(t, "message.received") {
                channel.insert(e.s("conversation_id"), e.s("channel"));
            }
            let mut groups: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            for (conv, (_, secs)) in first {
                if let Some(ch) = channel.get(conv) {
                    groups.entry(ch).or_default().push(secs);
                }
            }
            let exp: Vec<_> = groups
                .into_iter()
                .map(|(ch, xs)| {
                    vec![
                        ("channel", text(ch)),
                        ("conversations", num(xs.len() as f64)),
                        ("mean_s", rounded(mean(&xs), 1)),
                        ("p50_s", rounded(quantile_exact(&xs, 0.5), 1)),
                    ]
                })
                .collect();
            compare(rows, &["channel"], &exp, true)
        }
        14 => {
            let statuses = Model::statuses(m.raw.iter().filter(|e| e.tenant == t), i64::MAX);
            // leads, converted, lost, open, value won, value open
            let mut groups: BTreeMap<u64, [f64; 6]> = BTreeMap::new();
            for e in m.raw_of(t, "lead.created") {
                let g = groups.entry(e.u("seller_id")).or_default();
                let value = e.v["estimated_value"].as_f64().unwrap_or(0.0);
                let status = statuses.get(e.s("lead_id")).map(|(_, s)| s.as_str());
                g[0] += 1.0;
                match status {
                    Some("converted") => {
                        g[1] += 1.0;
                        g[4] += value;
                    }
                    Some("lost") => g[2] += 1.0,
                    _ => {
                        g[3] += 1.0;
                        g[5] += value;
                    }
                }
            }
            let exp: Vec<_> = groups
                .into_iter()
                .map(|(seller, c)| {
                    vec![
                        ("seller_id", text(seller.to_string())),
                        ("leads", num(c[0])),
                        ("converted", num(c[1])),
                        ("lost", num(c[2])),
                        ("open", num(c[3])),
                        ("value_won", rounded(c[4], 2)),
                        ("value_open", rounded(c[5], 2)),
                    ]
                })
                .collect();
            compare(rows, &["seller_id"], &exp, true)
        }
        15 => {
            let events = m.raw.iter().filter(|e| e.tenant == t).count() as f64;
            let pairs = m.pairs_of(t).count() as f64;
            compare(
                rows,
                &["tbl"],
                &[
                    vec![
                        ("tbl", text("events")),
                        ("row_count", num(events)),
                        ("distinct_ids", num(events)),
                    ],
                    vec![("tbl", text("response_times"))],
                    vec![("tbl", text("notifications"))],
                    vec![("tbl", text("lead_scores"))],
                ],
                false,
            )?;
            let get = |tbl: &str, col: &str| -> f64 {
                rows.iter().find(|r| r["tbl"] == tbl).unwrap()[col]
                    .parse()
                    .unwrap()
            };
            if get("response_times", "row_count") < pairs {
                return Err("response_times: fewer rows than samples".into());
            }
            for tbl in ["response_times", "notifications", "lead_scores"] {
                if get(tbl, "row_count") != get(tbl, "distinct_ids") {
                    return Err(format!("{tbl}: rows != distinct ids"));
                }
            }
            let standing = m.standing_notifications(t) as f64;
            if get("notifications", "row_count") < standing {
                return Err(format!(
                    "fewer notifications than the {standing} that stand"
                ));
            }
            let leads = m.applied_of(t, "lead.created").count() as f64;
            if get("lead_scores", "row_count") < leads {
                return Err(format!("fewer lead scores than the {leads} leads"));
            }
            Ok(())
        }
        16 => {
            #[derive(Default)]
            struct Day {
                secs: Vec<f64>,
                unanswered: u64,
            }
            let mut days: BTreeMap<String, Day> = BTreeMap::new();
            for p in m.pairs_of(t).filter(|p| in_range(p.reply_ms)) {
                days.entry(fmt_date(p.reply_ms))
                    .or_default()
                    .secs
                    .push(p.secs);
            }
            for u in m.unanswered.iter().filter(|u| u.tenant == t) {
                if in_range(u.deadline_ms) {
                    days.entry(fmt_date(u.deadline_ms)).or_default().unanswered += 1;
                }
            }
            let exp: Vec<_> = days
                .into_iter()
                .map(|(day, d)| {
                    let (mean_s, p50, p90) = if d.secs.is_empty() {
                        (Cell::Null, 0.0, 0.0)
                    } else {
                        (
                            rounded(mean(&d.secs), 1),
                            nearest_rank(&d.secs, 0.5),
                            nearest_rank(&d.secs, 0.9),
                        )
                    };
                    vec![
                        ("day", text(day)),
                        ("answered", num(d.secs.len() as f64)),
                        ("mean_s", mean_s),
                        ("p50_s", rounded(p50, 1)),
                        ("p90_s", rounded(p90, 1)),
                        ("unanswered_alerts", num(d.unanswered as f64)),
                    ]
                })
                .collect();
            compare(rows, &["day"], &exp, true)
        }
        17 => {
            // Leads: lead.created rows of `events` (a view on it counts them). Conversions:
            // applied status changes to converted of leads whose lead.created was applied, for
            // that lead's seller, on the day of the change.
            let mut groups: BTreeMap<(String, u64), [f64; 2]> = BTreeMap::new();
            for e in m.raw_of(t, "lead.created").filter(|e| in_range(e.ms)) {
                if e.seller() != 0 {
                    groups.entry((fmt_date(e.ms), e.seller())).or_default()[0] += 1.0;
                }
            }
            let seller_of: HashMap<&str, u64> = m
                .applied_of(t, "lead.created")
                .map(|e| (e.s("lead_id"), e.u("seller_id")))
                .collect();
            let mut conversions = 0;
            for e in m.applied_of(t, "lead.status_changed") {
                let Some(seller) = seller_of.get(e.s("lead_id")) else {
                    continue;
                };
                if e.s("status") == "converted" && in_range(e.ms) {
                    groups.entry((fmt_date(e.ms), *seller)).or_default()[1] += 1.0;
                    conversions += 1;
                }
            }
            if conversions == 0 {
                return Err("the traffic has no conversion to check".into());
            }
            let exp: Vec<_> = groups
                .into_iter()
                .map(|((day, seller), c)| {
                    vec![
                        ("day", text(day)),
                        ("seller_id", text(seller.to_string())),
                        ("leads", num(c[0])),
                        ("converted", num(c[1])),
                        (
                            "converted_per_lead",
                            if c[0] == 0.0 {
                                Cell::Null
                            } else {
                                rounded(c[1] / c[0], 3)
                            },
                        ),
                    ]
                })
                .collect();
            compare(rows, &["day", "seller_id"], &exp, true)
        }
        18 => {
            // episodes, still open, closed unanswered, answered: seconds past the deadline
            // (whole seconds, as the view's DateTime columns keep them)
            #[derive(Default)]
            struct Day {
                episodes: f64,
                open: f64,
                closed: f64,
                late_seconds: Vec<f64>,
            }
            let mut groups: BTreeMap<(String, String), Day> = BTreeMap::new();
            for u in m.unanswered.iter().filter(|u| u.tenant == t) {
                if !in_range(u.deadline_ms) {
                    continue;
                }
                let g = groups
                    .entry((fmt_date(u.deadline_ms), u.channel.clone()))
                    .or_default();
                g.episodes += 1.0;
                match u.end {
                    None => g.open += 1.0,
                    Some((_, "closed")) => g.closed += 1.0,
                    Some((at, _)) => g
                        .late_seconds
                        .push((at.div_euclid(1000) - u.deadline_ms.div_euclid(1000)) as f64),
                }
            }
            if !groups.values().any(|g| g.open > 0.0)
                || !groups.values().any(|g| !g.late_seconds.is_empty())
            {
                return Err("the traffic has no open or no answered episode to check".into());
            }
            let exp: Vec<_> = groups
                .into_iter()
                .map(|((day, channel), g)| {
                    vec![
                        ("day", text(day)),
                        ("channel", text(channel)),
                        ("episodes", num(g.episodes)),
                        ("still_open", num(g.open)),
                        ("closed_unanswered", num(g.closed)),
                        ("answered", num(g.late_seconds.len() as f64)),
                        (
                            "mean_minutes_late",
                            if g.late_seconds.is_empty() {
                                Cell::Null
                            } else {
                                rounded(mean(&g.late_seconds) / 60.0, 1)
                            },
                        ),
                    ]
                })
                .collect();
            compare(rows, &["day", "channel"], &exp, true)
        }
        _ => Err(format!(
            "question {n} has no check in tests/analytics.rs: add one"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// The doc

struct Question {
    n: usize,
    title: String,
    sql: String,
}

/// Every ```sql block of the doc with the `## N. title` heading above it.
fn questions(doc: &str) -> Vec<Question> {
    let mut out = Vec::new();
    let mut title = String::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if let Some(h) = line.strip_prefix("## ") {
            title = h.trim().to_string();
        } else if line.trim() == "```sql" {
            let sql: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            out.push(Question {
                n: out.len() + 1,
                title: title.clone(),
                sql: sql.join("\n"),
            });
        }
    }
    out
}

/// A Grafana panel's SQL with the guide's literals back in place of Grafana's variables:
/// `${tenant}` → `42`, `$__timeFilter(col)` → the guide's two weeks.
fn undo_grafana(sql: &str) -> String {
    let mut out = sql.replace("${tenant}", "42");
    while let Some(start) = out.find("$__timeFilter(") {
        let rest = &out[start + "$__timeFilter(".len()..];
        let end = rest.find(')').expect("$__timeFilter(column)");
        let col = rest[..end].to_string();
        let range = format!("{col} >= '2026-02-23 00:00:00' AND {col} < '2026-03-09 00:00:00'");
        out = format!("{}{range}{}", &out[..start], &rest[end + 1..]);
    }
    out
}

fn substitute(sql: &str, db: &str, tenant: u64) -> String {
    sql.replace("vigia.", &format!("{db}."))
        .replace("tenant_id = 42", &format!("tenant_id = {tenant}"))
}

async fn ch_try(sql: &str) -> Result<String, String> {
    let r = reqwest::Client::new()
        .post(clickhouse_url())
        .body(sql.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let ok = r.status().is_success();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if ok {
        Ok(text)
    } else {
        Err(text)
    }
}

const TABLES: [&str; 7] = [
    "events",
    "response_times",
    "notifications",
    "lead_scores",
    "dead_letters",
    "seller_hourly",
    "seller_metrics",
];

async fn table_counts(db: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for t in TABLES {
        out.push(ch_count(db, t, "").await);
    }
    out
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "end to end: needs scripts/services.sh up (Kafka API, ClickHouse 18.16) and python3 for chdb"]
async fn every_documented_analyst_query_answers_what_the_events_say_on_18_16_and_current() {
    let started = Instant::now();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join(DOC)).expect("docs/analytics.md");
    let qs = questions(&doc);
    assert!(
        qs.len() >= 12,
        "docs/analytics.md has only {} queries",
        qs.len()
    );

    let deliveries = traffic();
    let model = Model::build(&deliveries);
    println!(
        "traffic: {} deliveries, {} distinct events, {} too late, {} response-time pairs ({:.1}s)",
        deliveries.len(),
        model.raw.len(),
        model.too_late.len(),
        model.pairs.len(),
        started.elapsed().as_secs_f64()
    );

    let ns = Namespace::new("analytics");
    let config = ns.data_dir.join("vigia.toml");
    std::fs::write(
        &config,
        format!(
            "[processors.defaults]\nhigh_value_locations = {:?}\n",
            HIGH_VALUE_LOCATIONS
        ),
    )
    .unwrap();
    let ns = ns.env("VIGIA_CONFIG", config.to_str().unwrap());
    let vigia = ns.spawn("serve");
    let db = ns.database();

    // In delivery order, in chunks; within a chunk one request per tenant (tenants are
    // independent, and each tenant's events keep their order).
    for chunk in deliveries.chunks(100) {
        for t in TENANTS {
            let batch: Vec<&Value> = chunk.iter().filter(|e| e["tenant_id"] == t).collect();
            if !batch.is_empty() {
                post_retrying(&vigia, t, &json!(batch)).await;
            }
        }
    }
    println!("posted ({:.1}s)", started.elapsed().as_secs_f64());

    let within = Duration::from_secs(120);
    let n_events = model.raw.len() as u64;
    let got = eventually(within, n_events, || ch_count(&db, "events", "")).await;
    assert_eq!(
        got,
        n_events,
        "distinct events in ClickHouse; log:\n{}",
        vigia.log()
    );
    let n_pairs = model.pairs.len() as u64;
    let got = eventually(within, n_pairs, || {
        ch_count(&db, "response_times_current", "")
    })
    .await;
    assert_eq!(got, n_pairs, "response-time samples standing");
    let retractions = ch_count(&db, "response_times", "sign = -1").await;
    println!("{n_pairs} samples stand, after {retractions} retractions");
    assert!(
        retractions >= 2 * TENANTS.len() as u64,
        "the late events were corrected: {retractions} retractions"
    );
    let n_late = model.too_late.len() as u64;
    let got = eventually(within, n_late, || ch_count(&db, "dead_letters", "")).await;
    assert_eq!(got, n_late, "dead letters");
    // The processors' outputs have settled when no table changes for 3 s.
    let mut last = table_counts(&db).await;
    let mut stable_since = Instant::now();
    let settle_deadline = Instant::now() + within;
    while stable_since.elapsed() < Duration::from_secs(3) {
        assert!(
            Instant::now() < settle_deadline,
            "ClickHouse never settled: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = table_counts(&db).await;
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    println!(
        "settled: {:?} rows in {TABLES:?} ({:.1}s)",
        last,
        started.elapsed().as_secs_f64()
    );

    // Every question, for every tenant, on 18.16.
    let dump = ns.data_dir.join("chdb");
    std::fs::create_dir_all(dump.join("results")).unwrap();
    let mut failures = Vec::new();
    for q in &qs {
        for t in TENANTS {
            let sql = format!(
                "{}\nFORMAT TabSeparatedWithNames",
                substitute(&q.sql, &db, t)
            );
            match ch_try(&sql).await {
                Err(e) => failures.push(format!(
                    "question {} ({}), tenant {t}: ClickHouse 18.16 refused it: {e}",
                    q.n, q.title
                )),
                Ok(text) => {
                    std::fs::write(dump.join(format!("results/q{}_t{t}.tsv", q.n)), &text).unwrap();
                    let rows = parse_tsv(&text);
                    if rows.is_empty() && !(q.n == 11 && model.too_late.is_empty()) {
                        failures.push(format!(
                            "question {} ({}), tenant {t}: no rows, the check would prove nothing",
                            q.n, q.title
                        ));
                    }
                    if let Err(e) = check(q.n, &rows, &model, t) {
                        failures.push(format!(
                            "question {} ({}), tenant {t}: the answer differs from the events:\n  {e}",
                            q.n, q.title
                        ));
                    }
                }
            }
        }
    }
    println!(
        "{} questions checked on 18.16 ({:.1}s)",
        qs.len(),
        started.elapsed().as_secs_f64()
    );

    // The Grafana dashboard's panels: each is a question of the guide with Grafana's variables
    // put in (scripts/grafana-dashboard.py). Undoing exactly that must give the question back,
    // and the panel's query must answer what the question answered.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docker/grafana/dashboards/ceo-overview.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 4, "the CEO overview has its panels");
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        let Some(n) = panel["description"]
            .as_str()
            .and_then(|d| d.strip_prefix("docs/analytics.md question "))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            failures.push(format!(
                "Grafana panel {title:?}: its description does not name its question"
            ));
            continue;
        };
        let raw = panel["targets"][0]["rawSql"].as_str().unwrap_or_default();
        let undone = undo_grafana(raw);
        if undone != qs[n - 1].sql {
            failures.push(format!(
                "Grafana panel {title:?} is not question {n} of the guide:\n{raw}"
            ));
            continue;
        }
        let sql = format!(
            "{}\nFORMAT TabSeparatedWithNames",
            substitute(&undone, &db, 1)
        );
        let answer = ch_try(&sql).await.unwrap_or_else(|e| e);
        let expected =
            std::fs::read_to_string(dump.join(format!("results/q{n}_t1.tsv"))).unwrap_or_default();
        if answer != expected {
            failures.push(format!(
                "Grafana panel {title:?} answers differently from question {n}"
            ));
        }
    }
    println!("{} Grafana panels checked", panels.len());

    // The same tables and queries on current ClickHouse.
    for t in TABLES {
        if t == "seller_hourly" {
            continue; // rebuilt by its materialized views from events and response_times
        }
        let text = ch_query(&format!(
            "SELECT * FROM {db}.{t} FORMAT TabSeparatedWithNames"
        ))
        .await;
        std::fs::write(dump.join(format!("{t}.tsv")), text).unwrap();
    }
    match chdb_check(&root, &dump) {
        ChdbOutcome::Ok(report) => println!("current ClickHouse (chdb):\n{report}"),
        ChdbOutcome::Unavailable(why) => {
            println!("SKIPPED the current-ClickHouse check: {why}")
        }
        ChdbOutcome::Failed(report) => failures.push(format!(
            "current ClickHouse (chdb) disagrees with 18.16:\n{report}"
        )),
    }

    println!("total {:.1}s", started.elapsed().as_secs_f64());
    if failures.is_empty() {
        drop_database(&db).await;
        let _ = std::fs::remove_dir_all(&ns.data_dir);
    }
    assert!(
        failures.is_empty(),
        "{} failure(s) (data kept in database {db} and {}):\n{}",
        failures.len(),
        ns.data_dir.display(),
        failures.join("\n\n")
    );
}

/// Posts a batch, resending it on a retryable 503 (safe: `event_id` is the idempotency key).
async fn post_retrying(v: &Vigia, tenant: u64, body: &Value) {
    for attempt in 1..=10 {
        let (status, answer) = post_events(v, tenant, body).await;
        match status {
            202 => return,
            503 if attempt < 10 => {
                println!("ingest answered 503 (attempt {attempt}), resending: {answer}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            _ => panic!("ingest refused a batch: {status} {answer}"),
        }
    }
}

enum ChdbOutcome {
    Ok(String),
    Unavailable(String),
    Failed(String),
}

/// Runs `scripts/chdb-check.sh` on the dump: exit 0 = same answers, 3 = python3 venv/pip
/// unavailable, anything else = a difference (its report).
fn chdb_check(root: &Path, dump: &Path) -> ChdbOutcome {
    let out = Command::new("bash")
        .arg(root.join("scripts/chdb-check.sh"))
        .arg("--dump")
        .arg(dump)
        .arg("--tenants")
        .arg(TENANTS.map(|t| t.to_string()).join(","))
        .current_dir(root)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => return ChdbOutcome::Unavailable(format!("cannot run bash: {e}")),
    };
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => ChdbOutcome::Ok(report),
        Some(3) => ChdbOutcome::Unavailable(report),
        _ => ChdbOutcome::Failed(report),
    }
}
