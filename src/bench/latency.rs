//! Where a notification's time goes, hop by hop, for `vigia bench pipeline`: a *tap* reads the
//! run's `events` and `notifications` topics (a consumer group of its own, like any other
//! reader) and holds a CEO WebSocket per tenant, so that each alert is seen three times — its
//! deadline (`created_at`), the Kafka timestamp the processors gave its record when they fired
//! it, the moment a consumer could read it, and the frame on the CEO's socket — and each event
//! twice (its `occurred_at` and Kafka timestamp, then the moment a consumer could read it: the
//! in-flight time a lower `watermark_delay` must cover).
//!
//! Also the burst behind the idle deadline figure: conversations whose customer writes once
//! and is never answered, posted over a few seconds, so that their deadlines fall in a stretch
//! where nothing is posted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message as _;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::simulate::percentile;

/// An event as the tap read it.
struct EventSeen {
    occurred_at: DateTime<Utc>,
    written: DateTime<Utc>,
    read: DateTime<Utc>,
}

/// A notification as the tap read it.
struct NotificationSeen {
    id: Uuid,
    kind: String,
    withdrawal: bool,
    state: Option<String>,
    created_at: DateTime<Utc>,
    written: DateTime<Utc>,
    read: DateTime<Utc>,
}

#[derive(Default)]
struct KafkaSeen {
    events: Vec<EventSeen>,
    notifications: Vec<NotificationSeen>,
}

/// The notification kinds that fire at a deadline.
const DEADLINE_KINDS: [&str; 3] = [
    "unanswered_conversation",
    "follow_up_reminder",
    "session_timeout",
];

/// Each notification frame a socket received: (notification id, when).
type Frames = Vec<(Uuid, DateTime<Utc>)>;

pub(super) struct Tap {
    stop: CancellationToken,
    kafka: JoinHandle<Result<KafkaSeen>>,
    sockets: Vec<JoinHandle<Frames>>,
}

impl Tap {
    /// Starts reading the topics of `prefix` and a CEO socket of each of `tenants` at `ws_base`
    /// (`ws://host:port`); returns once the sockets are open.
    pub async fn start(
        config: &Config,
        prefix: &str,
        ws_base: &str,
        secret: &str,
        tenants: u64,
    ) -> Result<Tap> {
        let stop = CancellationToken::new();
        let topics = vigia_schemas::Topics::with_prefix(prefix);
        let consumer: StreamConsumer =
            crate::kafka::base_client_config(&config.kafka, "vigia-bench-tap")
                .set("group.id", format!("{prefix}bench-tap"))
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .set("fetch.wait.max.ms", "10")
                .create()
                .context("cannot create the tap's consumer")?;
        consumer.subscribe(&[&topics.events, &topics.notifications])?;
        let events_topic = topics.events.clone();
        let kafka = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut seen = KafkaSeen::default();
                loop {
                    let m = tokio::select! {
                        _ = stop.cancelled() => break,
                        m = consumer.recv() => m,
                    };
                    let Ok(m) = m else { continue };
                    let read = Utc::now();
                    let Some(written) = m
                        .timestamp()
                        .to_millis()
                        .and_then(DateTime::from_timestamp_millis)
                    else {
                        continue;
                    };
                    let Some(Ok(v)) = m.payload().map(serde_json::from_slice::<Value>) else {
                        continue;
                    };
                    let time = |k: &str| v[k].as_str().and_then(|s| s.parse().ok());
                    if m.topic() == events_topic {
                        if let Some(occurred_at) = time("occurred_at") {
                            seen.events.push(EventSeen {
                                occurred_at,
                                written,
                                read,
                            });
                        }
                    } else if let (Some(id), Some(kind), Some(created_at)) = (
                        v["id"].as_str().and_then(|s| s.parse().ok()),
                        v["type"].as_str(),
                        time("created_at"),
                    ) {
                        seen.notifications.push(NotificationSeen {
                            id,
                            kind: kind.to_string(),
                            withdrawal: v["withdraws"].is_string(),
                            state: v["data"]["state"].as_str().map(str::to_string),
                            created_at,
                            written,
                            read,
                        });
                    }
                }
                Ok(seen)
            }
        });
        let mut sockets = Vec::new();
        for tenant in 1..=tenants {
            let token = vigia_gateway::issue_token(
                secret,
                crate::simulate::Generator::ceo_id(tenant),
                tenant,
                vigia_schemas::Role::Ceo,
                Duration::from_secs(24 * 3600),
            );
            let url = format!("{ws_base}/ws?token={token}");
            let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .with_context(|| format!("cannot open the tap's CEO WebSocket at {ws_base}"))?;
            let stop = stop.clone();
            sockets.push(tokio::spawn(async move {
                let (mut write, mut read) = ws.split();
                let mut frames = Vec::new();
                loop {
                    let msg = tokio::select! {
                        _ = stop.cancelled() => break,
                        m = read.next() => m,
                    };
                    let Some(Ok(msg)) = msg else { break };
                    let now = Utc::now();
                    let Ok(text) = msg.into_text() else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if v["type"] == "ping" {
                        let pong = Message::Text(r#"{"type":"pong"}"#.into());
                        if write.send(pong).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    if v["type"] != "notification" {
                        continue;
                    }
                    let n = if v["notification"].is_object() {
                        &v["notification"]
                    } else {
                        &v["data"]
                    };
                    if let Some(id) = n["id"].as_str().and_then(|s| s.parse().ok()) {
                        frames.push((id, now));
                    }
                }
                frames
            }));
        }
        Ok(Tap {
            stop,
            kafka,
            sockets,
        })
    }

    /// Stops the tap and sums up what it saw of the causes at or after `from`.
    pub async fn finish(self, from: DateTime<Utc>) -> Result<Breakdown> {
        self.stop.cancel();
        let seen = self.kafka.await??;
        let mut frames = HashMap::new();
        for s in self.sockets {
            for (id, at) in s.await.unwrap_or_default() {
                frames.entry(id).or_insert(at);
            }
        }
        Ok(Breakdown::new(&seen, &frames, from))
    }
}

/// Milliseconds from `a` to `b`.
fn ms(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

/// p50 / p99 / max of a sample, and its size.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Figures {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub n: usize,
}

impl Figures {
    fn of(mut xs: Vec<f64>) -> Figures {
        Figures {
            p50: percentile(&mut xs, 0.5),
            p99: percentile(&mut xs, 0.99),
            max: xs.iter().copied().fold(f64::NAN, f64::max),
            n: xs.len(),
        }
    }

    pub fn cell(&self) -> String {
        if self.n == 0 {
            return "– (0)".into();
        }
        format!(
            "{:.1} / {:.1} / {:.0} ({})",
            self.p50, self.p99, self.max, self.n
        )
    }
}

/// Each hop's figures (ms).
#[derive(Debug, Clone, Default)]
pub(super) struct Breakdown {
    /// Event `occurred_at` → its Kafka timestamp (simulator's posting, HTTP, ingest).
    pub event_to_kafka: Figures,
    /// Event's Kafka timestamp → read by a consumer.
    pub event_kafka_to_read: Figures,
    /// Event `occurred_at` → read by a consumer: how long an event is in flight.
    pub event_in_flight: Figures,
    /// Deadline → the alert's Kafka timestamp (watermark delay, timer, write-ahead commit).
    pub alert_fired: Figures,
    /// Alert's Kafka timestamp → read by a consumer.
    pub alert_kafka_to_read: Figures,
    /// Alert read by a consumer → frame on the CEO's socket (gateway: fetch, inbox, push).
    pub alert_read_to_frame: Figures,
    /// Deadline → frame, every deadline kind.
    pub alert_total: Figures,
    /// Answer's `occurred_at` → the withdrawal's Kafka timestamp (ingest, Kafka, processors).
    pub withdrawal_produced: Figures,
    /// Withdrawal's Kafka timestamp → frame.
    pub withdrawal_to_frame: Figures,
    /// Answer → frame (end to end).
    pub withdrawal_total: Figures,
    /// Deadline alerts seen on Kafka, and the withdrawals of them with state `corrected`.
    pub alerts: usize,
    pub corrected: usize,
}

impl Breakdown {
    fn new(seen: &KafkaSeen, frames: &HashMap<Uuid, DateTime<Utc>>, from: DateTime<Utc>) -> Self {
        let events: Vec<&EventSeen> = seen
            .events
            .iter()
            .filter(|e| e.occurred_at >= from)
            .collect();
        let hop =
            |f: &dyn Fn(&EventSeen) -> f64| Figures::of(events.iter().map(|e| f(e)).collect());
        let mut b = Breakdown {
            event_to_kafka: hop(&|e| ms(e.occurred_at, e.written)),
            event_kafka_to_read: hop(&|e| ms(e.written, e.read)),
            event_in_flight: hop(&|e| ms(e.occurred_at, e.read)),
            ..Breakdown::default()
        };
        let mut hops: [Vec<f64>; 7] = Default::default();
        let mut first = HashMap::new();
        for n in &seen.notifications {
            // A notification re-read (a replay) counts once, as first produced.
            first.entry(n.id).or_insert(n);
        }
        for n in first.values() {
            if n.created_at < from {
                continue;
            }
            let frame = frames.get(&n.id).copied();
            let deadline = DEADLINE_KINDS.contains(&n.kind.as_str());
            if deadline && !n.withdrawal {
                b.alerts += 1;
                hops[0].push(ms(n.created_at, n.written));
                hops[1].push(ms(n.written, n.read));
                if let Some(f) = frame {
                    hops[2].push(ms(n.read, f));
                    hops[3].push(ms(n.created_at, f));
                }
            } else if n.withdrawal && n.state.as_deref() == Some("corrected") {
                b.corrected += 1;
            } else if n.withdrawal && n.kind == "unanswered_conversation" {
                hops[4].push(ms(n.created_at, n.written));
                if let Some(f) = frame {
                    hops[5].push(ms(n.written, f));
                    hops[6].push(ms(n.created_at, f));
                }
            }
        }
        let [a, b1, c, d, e, f, g] = hops.map(Figures::of);
        b.alert_fired = a;
        b.alert_kafka_to_read = b1;
        b.alert_read_to_frame = c;
        b.alert_total = d;
        b.withdrawal_produced = e;
        b.withdrawal_to_frame = f;
        b.withdrawal_total = g;
        b
    }

    /// Markdown table rows: `| hop | p50 / p99 / max ms (n) |`.
    pub fn rows(&self) -> String {
        let mut rows = String::new();
        for (name, f) in [
            ("event `occurred_at` → its Kafka timestamp (posting, HTTP, ingest)", self.event_to_kafka),
            ("event's Kafka timestamp → read by a consumer", self.event_kafka_to_read),
            ("**event in flight**: `occurred_at` → read by a consumer", self.event_in_flight),
            ("deadline → alert's Kafka timestamp (watermark delay, timer, write-ahead commit, produce)", self.alert_fired),
            ("alert's Kafka timestamp → read by a consumer", self.alert_kafka_to_read),
            ("alert read by a consumer → frame on the CEO's socket (gateway)", self.alert_read_to_frame),
            ("**deadline → frame**", self.alert_total),
            ("answer `occurred_at` → withdrawal's Kafka timestamp (ingest, Kafka, processors)", self.withdrawal_produced),
            ("withdrawal's Kafka timestamp → frame (Kafka, gateway)", self.withdrawal_to_frame),
            ("**answer → frame (end to end)**", self.withdrawal_total),
        ] {
            rows += &format!("| {name} | {} |\n", f.cell());
        }
        rows
    }

    /// Share of the alerts withdrawn as `corrected`.
    pub fn corrected_share(&self) -> f64 {
        self.corrected as f64 / self.alerts.max(1) as f64
    }

    pub fn json(&self) -> Value {
        let f = |x: Figures| json!({"p50": x.p50, "p99": x.p99, "max": x.max, "n": x.n});
        json!({
            "event_in_flight": f(self.event_in_flight),
            "alert_fired": f(self.alert_fired),
            "alert_total": f(self.alert_total),
            "withdrawal_total": f(self.withdrawal_total),
            "alerts": self.alerts,
            "corrected": self.corrected,
        })
    }
}

/// Posts `conversations` customer messages of `tenant` (each a new conversation, never
/// answered), evenly over `span`, one request each, stamped with the time they are posted.
pub(super) async fn post_unanswered_burst(
    ingest: &str,
    api_key: &str,
    tenant: u64,
    conversations: usize,
    span: Duration,
) -> Result<()> {
    let client = reqwest::Client::new();
    let url = format!("{ingest}/v1/events");
    let run = Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    let gap = span / conversations.max(1) as u32;
    for i in 0..conversations {
        tokio::time::sleep_until((started + gap * i as u32).into()).await;
        let event = json!({
            "event_id": Uuid::new_v4().to_string(),
            "type": "message.received",
            "tenant_id": tenant,
            "occurred_at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "conversation_id": format!("burst-{}-{i}", &run[..8]),
            "channel": "whatsapp",
            "seller_id": crate::simulate::Generator::ceo_id(tenant) + 1,
            "text": "Hola, ¿hay alguien?",
        });
        let response = client
            .post(&url)
            .header("X-API-Key", api_key)
            .json(&[event])
            .send()
            .await
            .context("cannot post the idle burst")?;
        if response.status().as_u16() != 202 {
            anyhow::bail!(
                "ingest refused a burst event: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_780_000_000_000 + ms).unwrap()
    }

    fn notification(
        id: u128,
        kind: &str,
        withdrawal: bool,
        state: Option<&str>,
        created: i64,
    ) -> NotificationSeen {
        NotificationSeen {
            id: Uuid::from_u128(id),
            kind: kind.into(),
            withdrawal,
            state: state.map(str::to_string),
            created_at: at(created),
            written: at(created + 40),
            read: at(created + 45),
        }
    }

    #[test]
    fn hops_are_split_by_kind_and_corrections_counted() {
        let seen = KafkaSeen {
            events: vec![EventSeen {
                occurred_at: at(0),
                written: at(3),
                read: at(10),
            }],
            notifications: vec![
                notification(1, "unanswered_conversation", false, None, 100),
                notification(2, "session_timeout", false, None, 200),
                // Before the measured window: left out.
                notification(3, "unanswered_conversation", false, None, -100),
                notification(4, "unanswered_conversation", true, Some("corrected"), 100),
                notification(5, "unanswered_conversation", true, Some("resolved"), 300),
                // A replay re-read: counted once.
                notification(1, "unanswered_conversation", false, None, 100),
            ],
        };
        let frames = HashMap::from([(Uuid::from_u128(1), at(150)), (Uuid::from_u128(5), at(360))]);
        let b = Breakdown::new(&seen, &frames, at(0));
        assert_eq!((b.alerts, b.corrected), (2, 1));
        assert_eq!(b.corrected_share(), 0.5);
        assert_eq!(b.event_in_flight.p50, 10.0);
        assert_eq!(b.alert_fired.n, 2);
        assert_eq!(b.alert_fired.p50, 40.0);
        // Only alert 1 reached the socket.
        assert_eq!((b.alert_total.n, b.alert_total.p50), (1, 50.0));
        assert_eq!(
            (b.alert_read_to_frame.n, b.alert_read_to_frame.p50),
            (1, 5.0)
        );
        assert_eq!((b.withdrawal_total.n, b.withdrawal_total.p50), (1, 60.0));
        assert_eq!(b.withdrawal_to_frame.p50, 20.0);
    }
}
