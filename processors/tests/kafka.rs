//! The processors against a real Kafka broker (the local Apache Kafka): `VIGIA_KAFKA_BROKERS`
//! (default 127.0.0.1:9092). Each test uses its own topic prefix and consumer group, so tests and
//! runs do not see each other. Without a broker these tests fail (creating the topics fails),
//! saying so. Ignored by default; run with
//! `cargo test -p vigia-processors --test kafka -- --ignored`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::registry::Registry;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use vigia_processors::{Config, PartitionEngine};
use vigia_schemas::*;

/// Logs to the test output with RUST_LOG (e.g. `RUST_LOG=vigia_processors=debug`).
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn brokers() -> String {
    std::env::var("VIGIA_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn base() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers())
        .set("socket.timeout.ms", "10000");
    c
}

fn unique(name: &str) -> String {
    format!(
        "test-proc-{name}-{}-{}",
        std::process::id(),
        Utc::now().timestamp_micros()
    )
}

const EVENT_PARTITIONS: i32 = 2;

async fn create_topics(topics: &Topics) {
    let admin: AdminClient<DefaultClientContext> = base().create().unwrap();
    let new: Vec<NewTopic> = topics
        .all()
        .iter()
        .map(|name| {
            let partitions = if *name == topics.events {
                EVENT_PARTITIONS
            } else {
                1
            };
            let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
            if *name == topics.checkpoints {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let results = admin.create_topics(&new, &opts).await.unwrap_or_else(|e| {
        panic!(
            "cannot create topics on the Kafka broker at {} ({e}); start one (bash \
             scripts/services.sh up kafka) or set VIGIA_KAFKA_BROKERS",
            brokers()
        )
    });
    for r in results {
        r.unwrap_or_else(|(name, code)| panic!("cannot create topic {name}: {code}"));
    }
    // Topic creation is asynchronous on some brokers: wait until metadata has every partition.
    let probe: StreamConsumer = base().set("group.id", "probe").create().unwrap();
    for _ in 0..100 {
        let md = probe.fetch_metadata(None, Duration::from_secs(5)).unwrap();
        let ready = topics.all().iter().all(|name| {
            md.topics()
                .iter()
                .any(|t| t.name() == *name && !t.partitions().is_empty())
        });
        if ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("topics did not appear in the broker's metadata");
}

async fn produce(topic: &str, events: &[Event]) {
    let producer: FutureProducer = base().set("acks", "all").create().unwrap();
    for e in events {
        let key = e.partition_key();
        let payload = e.to_json();
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

async fn produce_raw(topic: &str, key: &str, payload: &str) {
    let producer: FutureProducer = base().create().unwrap();
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// One record seen on an output topic, and when.
#[derive(Debug, Clone)]
struct Seen {
    topic: String,
    value: serde_json::Value,
    raw: String,
    at: DateTime<Utc>,
}

/// Reads every output topic from the beginning, in the background.
struct Collector {
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Collector {
    fn start(topics: &Topics) -> Collector {
        let consumer: StreamConsumer = base()
            .set("group.id", unique("collector"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for t in [
            &topics.notifications,
            &topics.response_times,
            &topics.lead_scores,
            &topics.seller_metrics,
            &topics.dead_letters,
        ] {
            tpl.add_partition_offset(t, 0, Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = {
            let seen = seen.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        m = consumer.recv() => {
                            let m = m.unwrap();
                            let raw = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                            seen.lock().unwrap().push(Seen {
                                topic: m.topic().to_string(),
                                value: serde_json::from_str(&raw).unwrap(),
                                raw,
                                at: Utc::now(),
                            });
                        }
                    }
                }
            })
        };
        Collector {
            seen,
            stop,
            task: Some(task),
        }
    }

    /// Stops reading and closes the consumer.
    async fn close(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    fn snapshot(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was seen, or panics after `limit`.
    async fn wait_for(&self, what: &str, limit: Duration, done: impl Fn(&[Seen]) -> bool) {
        let until = tokio::time::Instant::now() + limit;
        loop {
            if done(&self.snapshot()) {
                return;
            }
            if tokio::time::Instant::now() > until {
                panic!("timed out waiting for {what}; saw {:#?}", self.snapshot());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Checkpoints on (the default), taken often and split into small pieces, so every test here
/// also runs with restores from multi-piece checkpoints.
fn test_config(group: &str) -> Config {
    let mut c = Config {
        group_id: group.into(),
        watermark_delay: Duration::from_millis(300),
        tick: Duration::from_millis(100),
        commit_interval: Duration::from_millis(200),
        checkpoint_interval: Duration::from_millis(300),
        checkpoint_piece_bytes: 2048,
        ..Config::default()
    };
    c.defaults.unanswered_after = Duration::from_secs(2);
    c
}

/// Starts the processors in the background; the handle gives their metrics once they stop.
fn start_observed(
    config: Config,
    topics: &Topics,
) -> (CancellationToken, tokio::task::JoinHandle<String>) {
    let stop = CancellationToken::new();
    let topics = topics.clone();
    let token = stop.clone();
    let handle = tokio::spawn(async move {
        let mut registry = Registry::default();
        vigia_processors::run(config, &base(), &topics, &mut registry, token)
            .await
            .expect("the processors run without error");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    });
    (stop, handle)
}

/// A sample's value in Prometheus text (0 when absent), e.g.
/// `vigia_processor_full_replays_total{reason="unreadable"}`.
fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Starts the processors in the background.
fn start(config: Config, topics: &Topics) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let topics = topics.clone();
    let token = stop.clone();
    let handle = tokio::spawn(async move {
        let mut registry = Registry::default();
        vigia_processors::run(config, &base(), &topics, &mut registry, token)
            .await
            .expect("the processors run without error");
    });
    (stop, handle)
}

fn ev(tenant: u64, at: DateTime<Utc>, payload: Payload) -> Event {
    Event {
        event_id: Uuid::new_v4(),
        tenant_id: tenant,
        occurred_at: at,
        payload,
    }
}

fn received(tenant: u64, conv: &str, at: DateTime<Utc>, seller: Option<u64>, text: &str) -> Event {
    ev(
        tenant,
        at,
        Payload::MessageReceived(MessageReceived {
            conversation_id: conv.into(),
            channel: Channel::Web,
            seller_id: seller,
            phone_number: None,
            text: Some(text.into()),
        }),
    )
}

fn sent(tenant: u64, conv: &str, at: DateTime<Utc>, seller: u64) -> Event {
    ev(
        tenant,
        at,
        Payload::MessageSent(MessageSent {
            conversation_id: conv.into(),
            seller_id: seller,
            automated: false,
        }),
    )
}

fn lead(tenant: u64, lead: &str, conv: &str, at: DateTime<Utc>) -> Event {
    ev(
        tenant,
        at,
        Payload::LeadCreated(LeadCreated {
            lead_id: lead.into(),
            source: LeadSource::MetaAds,
            seller_id: Some(7),
            name: None,
            phone_number: None,
            location: None,
            estimated_value: None,
            conversation_id: Some(conv.into()),
        }),
    )
}

fn ms(n: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(n)
}

fn of<'a>(seen: &'a [Seen], topic: &str) -> Vec<&'a Seen> {
    seen.iter().filter(|s| s.topic == topic).collect()
}

fn unanswered_id(e: &Event) -> Uuid {
    let Payload::MessageReceived(m) = &e.payload else {
        panic!("not a customer message")
    };
    derive_id(
        "notification/unanswered",
        &[
            &e.tenant_id.to_string(),
            m.conversation_id.as_str(),
            &e.event_id.to_string(),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka at VIGIA_KAFKA_BROKERS (default 127.0.0.1:9092)"]
async fn an_unanswered_conversation_is_notified_at_its_deadline_on_an_idle_stream() {
    init_logs();
    let topics = Topics::with_prefix(&format!("{}.", unique("idle")));
    create_topics(&topics).await;
    let collector = Collector::start(&topics);
    let (stop, handle) = start(test_config(&unique("group")), &topics);

    let now = Utc::now();
    let waiting = received(1, "c1", now, Some(7), "hola, ¿precio?");
    let answered = received(2, "c2", now, Some(8), "hola");
    let reply = sent(2, "c2", now + ms(300), 8);
    produce(
        &topics.events,
        &[waiting.clone(), answered.clone(), reply.clone()],
    )
    .await;
    produce_raw(&topics.events, "1", "this is not an event").await;

    let expected = unanswered_id(&waiting);
    collector
        .wait_for(
            "the unanswered notification",
            Duration::from_secs(20),
            |s| {
                of(s, &topics.notifications)
                    .iter()
                    .any(|n| n.value["id"] == serde_json::json!(expected))
            },
        )
        .await;
    let deadline = now + ms(2000);
    let seen = collector.snapshot();
    let n = of(&seen, &topics.notifications)
        .into_iter()
        .find(|n| n.value["id"] == serde_json::json!(expected))
        .unwrap()
        .clone();
    let notification: Notification = serde_json::from_value(n.value.clone()).unwrap();
    assert_eq!(
        notification.created_at, deadline,
        "event time, not wall time"
    );
    assert_eq!(notification.audience, Audience::User { user_id: 7 });
    assert_eq!(notification.kind, NotificationType::UnansweredConversation);
    // Fired by the clock, at about the deadline: after it, and within delay + tick + slack.
    let lag = (n.at - deadline).num_milliseconds();
    assert!(lag >= 0, "fired {lag} ms before the deadline");
    assert!(lag < 3000, "fired {lag} ms after the deadline");

    // The answered conversation: a response-time sample, and no notification.
    collector
        .wait_for("the response-time sample", Duration::from_secs(10), |s| {
            !of(s, &topics.response_times).is_empty()
        })
        .await;
    let seen = collector.snapshot();
    let sample: ResponseTimeSample =
        serde_json::from_value(of(&seen, &topics.response_times)[0].value.clone()).unwrap();
    assert_eq!(sample.customer_event_id, answered.event_id);
    assert_eq!(sample.reply_event_id, reply.event_id);
    assert_eq!(sample.response_seconds, 0.3);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let seen = collector.snapshot();
    assert!(
        of(&seen, &topics.notifications)
            .iter()
            .all(|n| n.value["data"]["conversation_id"] != serde_json::json!("c2")),
        "c2 was answered in time"
    );
    // The poison record went to the dead letters and did not stall anything.
    let dead = of(&seen, &topics.dead_letters);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter: DeadLetter = serde_json::from_value(dead[0].value.clone()).unwrap();
    assert_eq!(letter.stage, "processors");
    assert_eq!(letter.topic, topics.events);
    assert_eq!(letter.payload, "this is not an event");
    assert!(
        letter.error.contains("not a valid event"),
        "{}",
        letter.error
    );
    // Lead scores: none (no lead); both customer messages were applied.
    assert!(of(&seen, &topics.lead_scores).is_empty());

    stop.cancel();
    handle.await.unwrap();
    collector.close().await;
    // Topics are left in place for a look after a failure (each test has its own prefix);
    // the local broker's data lives under .data/ of the clone.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka at VIGIA_KAFKA_BROKERS (default 127.0.0.1:9092)"]
async fn an_idle_deadline_fires_on_its_timer_and_an_answer_in_flight_corrects_it() {
    init_logs();
    let topics = Topics::with_prefix(&format!("{}.", unique("timer")));
    create_topics(&topics).await;
    let collector = Collector::start(&topics);
    // A polling tick this long would fire the deadline seconds late: only the timer set to
    // `deadline + watermark_delay` fires it within the bound below.
    let config = Config {
        watermark_delay: Duration::from_millis(50),
        tick: Duration::from_secs(30),
        ..test_config(&unique("group"))
    };
    let (stop, handle) = start(config, &topics);

    let now = Utc::now();
    let waiting = received(1, "c1", now, Some(7), "hola, ¿precio?");
    produce(&topics.events, std::slice::from_ref(&waiting)).await;
    let expected = unanswered_id(&waiting);
    let deadline = now + ms(2000);
    collector
        .wait_for(
            "the unanswered notification",
            Duration::from_secs(20),
            |s| {
                of(s, &topics.notifications)
                    .iter()
                    .any(|n| n.value["id"] == serde_json::json!(expected))
            },
        )
        .await;
    let seen = collector.snapshot();
    let alert = of(&seen, &topics.notifications)
        .into_iter()
        .find(|n| n.value["id"] == serde_json::json!(expected))
        .unwrap()
        .clone();
    let lag = (alert.at - deadline).num_milliseconds();
    assert!(
        lag >= 50,
        "fired {lag} ms after the deadline, before the delay"
    );
    // Loaded CI machines: generous, yet far below the 30 s tick.
    assert!(lag < 1500, "fired {lag} ms after the deadline");

    // The seller had answered just before the deadline, but the answer reached Kafka after the
    // alert fired: the alert is withdrawn as `corrected`, and no sample is lost.
    produce(&topics.events, &[sent(1, "c1", deadline - ms(10), 7)]).await;
    collector
        .wait_for("the corrected withdrawal", Duration::from_secs(20), |s| {
            of(s, &topics.notifications)
                .iter()
                .any(|n| n.value["withdraws"] == serde_json::json!(expected))
        })
        .await;
    let seen = collector.snapshot();
    let withdrawal = of(&seen, &topics.notifications)
        .into_iter()
        .find(|n| n.value["withdraws"] == serde_json::json!(expected))
        .unwrap()
        .clone();
    assert_eq!(
        withdrawal.value["data"]["state"], "corrected",
        "{withdrawal:?}"
    );
    collector
        .wait_for("the response-time sample", Duration::from_secs(10), |s| {
            !of(s, &topics.response_times).is_empty()
        })
        .await;

    stop.cancel();
    handle.await.unwrap();
    collector.close().await;
}

/// What the engine gives for `events`, by id: fed in production order (each tenant's events are
/// in one partition in that order), then a watermark far ahead.
fn expected_outputs(config: &Config, events: &[Event]) -> HashMap<Uuid, serde_json::Value> {
    let mut engine = PartitionEngine::new(Arc::new(config.clone()));
    let mut outs: Vec<vigia_processors::Output> =
        events.iter().flat_map(|e| engine.on_event(e)).collect();
    outs.extend(engine.advance_watermark(Utc::now() + chrono::Duration::days(1)));
    // The day ahead fires every pending deadline, and also tomorrow's 08:00 daily report,
    // which the live run does not reach: daily reports are left out on both sides (they have
    // their own tests in the engine).
    outs.into_iter()
        .filter(|o| !is_daily_report_output(o))
        .map(|o| {
            let value = match &o {
                vigia_processors::Output::Notification(n) => serde_json::to_value(n),
                vigia_processors::Output::ResponseTime(r) => serde_json::to_value(r),
                vigia_processors::Output::LeadScore(l) => serde_json::to_value(l),
                vigia_processors::Output::SellerMetrics(m) => serde_json::to_value(m),
                vigia_processors::Output::TooLate(t) => panic!("unexpected too late: {t}"),
                vigia_processors::Output::OverLimit(o) => panic!("unexpected over limit: {o}"),
            }
            .unwrap();
            (o.id().unwrap(), value)
        })
        .collect()
}

fn is_daily_report_output(o: &vigia_processors::Output) -> bool {
    matches!(o, vigia_processors::Output::Notification(n) if n.kind == vigia_schemas::NotificationType::DailyReport)
}

fn ids(seen: &[Seen]) -> Vec<Uuid> {
    seen.iter()
        .filter(|s| !s.topic.ends_with("dead_letters"))
        .filter(|s| s.value["type"] != "daily_report")
        .map(|s| serde_json::from_value(s.value["id"].clone()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka at VIGIA_KAFKA_BROKERS (default 127.0.0.1:9092)"]
async fn after_a_crash_and_a_restart_nothing_is_lost_and_no_new_id_appears() {
    init_logs();
    let topics = Topics::with_prefix(&format!("{}.", unique("restart")));
    create_topics(&topics).await;
    let group = unique("group");
    let config = test_config(&group);
    let collector = Collector::start(&topics);
    let t0 = Utc::now();

    // Phase 1: a wait that will fire, one answered, a lead with messages, on three tenants.
    let c1 = received(11, "c1", t0, Some(7), "hola");
    let mut phase1 = vec![
        c1.clone(),
        received(12, "c2", t0, None, "¿cuánto cuesta?"),
        sent(12, "c2", t0 + ms(500), 9),
        lead(13, "l1", "c3", t0),
    ];
    for i in 0..6 {
        phase1.push(received(
            13,
            "c3",
            t0 + ms(100 * i),
            None,
            "precio y cotización",
        ));
    }
    produce(&topics.events, &phase1).await;
    let (_stop, crashing) = start(config.clone(), &topics);
    let c1_id = unanswered_id(&c1);
    collector
        .wait_for("phase 1 outputs", Duration::from_secs(20), |s| {
            let ids = ids(s);
            ids.contains(&c1_id)
                && of(s, &topics.response_times).len() == 1
                && of(s, &topics.lead_scores).len() == 7
        })
        .await;
    // Crash: no draining, no final commit.
    crashing.abort();
    let _ = crashing.await;

    // Phase 2: the late reply to c1 (after its deadline: withdraws), a new wait on c4.
    let t1 = Utc::now();
    let c4 = received(11, "c4", t1, Some(7), "hola");
    let phase2 = vec![
        sent(11, "c1", t0 + ms(4000), 7),
        c4.clone(),
        ev(
            13,
            t1,
            Payload::LeadStatusChanged(LeadStatusChanged {
                lead_id: "l1".into(),
                status: LeadStatus::Contacted,
            }),
        ),
    ];
    produce(&topics.events, &phase2).await;
    let (stop, restarted) = start(config.clone(), &topics);
    let c4_id = unanswered_id(&c4);
    collector
        .wait_for("phase 2 outputs", Duration::from_secs(30), |s| {
            let ids = ids(s);
            ids.contains(&c4_id)
                && of(s, &topics.notifications)
                    .iter()
                    .any(|n| n.value["withdraws"] == serde_json::json!(c1_id))
                && of(s, &topics.lead_scores).len() >= 8
        })
        .await;
    // Clean stop: in-flight outputs delivered, offsets committed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    restarted.await.unwrap();
    let before_clean_restart = collector.snapshot().len();

    // Phase 3: after a clean stop, a restart re-sends nothing.
    let t2 = Utc::now();
    let phase3 = vec![sent(11, "c4", t2, 7)];
    produce(&topics.events, &phase3).await;
    let (stop, last) = start(config.clone(), &topics);
    collector
        .wait_for("phase 3 outputs", Duration::from_secs(30), |s| {
            of(s, &topics.response_times).len() >= 2
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    last.await.unwrap();

    let seen = collector.snapshot();
    let mut all_events = phase1.clone();
    all_events.extend(phase2);
    all_events.extend(phase3);
    let expected = expected_outputs(&config, &all_events);
    let observed: HashSet<Uuid> = ids(&seen).into_iter().collect();
    let expected_ids: HashSet<Uuid> = expected.keys().copied().collect();
    let new: Vec<&Uuid> = observed.difference(&expected_ids).collect();
    let lost: Vec<&Uuid> = expected_ids.difference(&observed).collect();
    assert!(
        new.is_empty(),
        "ids no run without a crash would give: {new:?}"
    );
    assert!(lost.is_empty(), "outputs lost: {lost:?}");
    // Every delivery of an id is the expected record, byte for byte the same each time.
    let mut raw_by_id: HashMap<Uuid, &str> = HashMap::new();
    for s in seen
        .iter()
        .filter(|s| !s.topic.ends_with("dead_letters") && s.value["type"] != "daily_report")
    {
        let id: Uuid = serde_json::from_value(s.value["id"].clone()).unwrap();
        assert_eq!(
            s.value, expected[&id],
            "record {id} differs from the expected one"
        );
        let first = raw_by_id.entry(id).or_insert(&s.raw);
        assert_eq!(
            *first,
            s.raw.as_str(),
            "record {id} re-sent with other bytes"
        );
    }
    // After the clean stop, the restart re-sends nothing caused by records before the committed
    // offset. The only possible repeats are notifications the wall clock fired for waits still
    // open: the committed offset carries the clock watermark in its metadata (Apache Kafka keeps
    // it), but a wait fired after the last commit cannot be known delivered.
    let after: Vec<Uuid> = ids(&seen[before_clean_restart..]);
    let earlier: HashSet<Uuid> = ids(&seen[..before_clean_restart]).into_iter().collect();
    let resent: Vec<&Seen> = seen[before_clean_restart..]
        .iter()
        .filter(|s| {
            ids(std::slice::from_ref(*s))
                .iter()
                .any(|id| earlier.contains(id))
        })
        .collect();
    for r in &resent {
        assert!(
            r.topic == topics.notifications
                && r.value["type"] == "unanswered_conversation"
                && r.value["withdraws"].is_null(),
            "a clean restart re-sent an output of an already committed record: {r:#?}"
        );
    }
    assert!(!after.is_empty());
    assert!(of(&seen, &topics.dead_letters).is_empty());
    collector.close().await;
    // Topics are left in place for a look after a failure (each test has its own prefix);
    // the local broker's data lives under .data/ of the clone.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka at VIGIA_KAFKA_BROKERS (default 127.0.0.1:9092)"]
async fn two_instances_give_the_outputs_of_one() {
    init_logs();
    let topics = Topics::with_prefix(&format!("{}.", unique("scale")));
    create_topics(&topics).await;
    let config = test_config(&unique("group"));
    let collector = Collector::start(&topics);
    let t0 = Utc::now();
    // Tenants 21..=26 spread over both partitions: each a wait answered in time and one not.
    let mut first = Vec::new();
    for tenant in 21..=26u64 {
        first.push(received(tenant, "a", t0, Some(7), "hola"));
        first.push(sent(tenant, "a", t0 + ms(200), 7));
        first.push(received(tenant, "b", t0, Some(8), "precio"));
    }
    produce(&topics.events, &first).await;
    let (stop_a, a) = start(config.clone(), &topics);
    collector
        .wait_for(
            "the first instance's outputs",
            Duration::from_secs(20),
            |s| of(s, &topics.response_times).len() == 6 && of(s, &topics.notifications).len() == 6,
        )
        .await;

    // A second instance joins: the partitions are shared out (the first keeps its engines).
    let (stop_b, b) = start(config.clone(), &topics);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let t1 = Utc::now();
    let mut second = Vec::new();
    for tenant in 21..=26u64 {
        second.push(sent(tenant, "b", t1, 8)); // withdraws "b"
        second.push(received(tenant, "c", t1, None, "hola")); // fires in 2 s
    }
    produce(&topics.events, &second).await;
    collector
        .wait_for(
            "the outputs after the rebalance",
            Duration::from_secs(30),
            |s| {
                of(s, &topics.notifications)
                    .iter()
                    .filter(|n| n.value["data"]["conversation_id"] == "c")
                    .count()
                    == 6
                    && of(s, &topics.response_times).len() >= 12
            },
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_a.cancel();
    stop_b.cancel();
    a.await.unwrap();
    b.await.unwrap();

    let seen = collector.snapshot();
    let mut all = first;
    all.extend(second);
    let expected = expected_outputs(&config, &all);
    let observed: HashSet<Uuid> = ids(&seen).into_iter().collect();
    let expected_ids: HashSet<Uuid> = expected.keys().copied().collect();
    assert_eq!(observed, expected_ids);
    for s in seen
        .iter()
        .filter(|s| !s.topic.ends_with("dead_letters") && s.value["type"] != "daily_report")
    {
        let id: Uuid = serde_json::from_value(s.value["id"].clone()).unwrap();
        assert_eq!(s.value, expected[&id]);
    }
    collector.close().await;
    // Topics are left in place for a look after a failure (each test has its own prefix);
    // the local broker's data lives under .data/ of the clone.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka at VIGIA_KAFKA_BROKERS (default 127.0.0.1:9092)"]
async fn a_tenant_flooding_new_conversations_is_dead_lettered_at_its_limit_others_go_on() {
    init_logs();
    let topics = Topics::with_prefix(&format!("{}.", unique("limit")));
    create_topics(&topics).await;
    let collector = Collector::start(&topics);
    let mut config = test_config(&unique("group"));
    config.tenants.insert(
        3,
        vigia_processors::ThresholdOverrides {
            max_conversations: Some(2),
            ..Default::default()
        },
    );
    let (stop, handle) = start(config, &topics);

    let now = Utc::now();
    let flood: Vec<Event> = (0..5)
        .map(|i| received(3, &format!("flood-{i}"), now + ms(i), None, "x"))
        .collect();
    let calm = received(4, "calm", now, Some(9), "hola");
    let mut events = flood.clone();
    events.push(calm.clone());
    produce(&topics.events, &events).await;

    // Tenant 4's conversation is alerted as usual; tenant 3's first two as well.
    collector
        .wait_for("three unanswered alerts", Duration::from_secs(20), |s| {
            of(s, &topics.notifications).len() >= 3
        })
        .await;
    collector
        .wait_for("three dead letters", Duration::from_secs(10), |s| {
            of(s, &topics.dead_letters).len() >= 3
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = collector.snapshot();
    let alerted: HashSet<String> = of(&seen, &topics.notifications)
        .iter()
        .map(|n| {
            n.value["data"]["conversation_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let expected: HashSet<String> = ["flood-0", "flood-1", "calm"].map(String::from).into();
    assert_eq!(alerted, expected);
    let dead = of(&seen, &topics.dead_letters);
    assert_eq!(dead.len(), 3, "{dead:?}");
    for (d, refused) in dead.iter().zip(&flood[2..]) {
        let letter: DeadLetter = serde_json::from_value(d.value.clone()).unwrap();
        assert_eq!(letter.stage, "processors");
        assert!(
            letter.error.contains("max_conversations")
                && letter.error.contains(&refused.event_id.to_string()),
            "{}",
            letter.error
        );
    }

    stop.cancel();
    handle.await.unwrap();
    collector.close().await;
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

/// Every record of the checkpoints topic (one partition here), in log order.
async fn stored_checkpoints(topics: &Topics) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let topic = topics.checkpoints.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = base()
            .set("group.id", unique("cp-reader"))
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        let (low, high) = consumer
            .fetch_watermarks(&topic, 0, Duration::from_secs(10))
            .unwrap();
        let mut out = Vec::new();
        if high <= low {
            return out;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        loop {
            match consumer.poll(Duration::from_secs(10)) {
                Some(Ok(m)) => {
                    out.push((
                        m.key().unwrap_or_default().to_vec(),
                        m.payload().map(<[u8]>::to_vec),
                    ));
                    if m.offset() + 1 >= high {
                        return out;
                    }
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return out,
                Some(Err(e)) => panic!("reading checkpoints: {e}"),
                None => panic!("reading checkpoints timed out"),
            }
        }
    })
    .await
    .unwrap()
}

/// What each `events` partition's slots hold now.
async fn checkpoints_by_partition(
    topics: &Topics,
) -> HashMap<i32, Vec<vigia_processors::checkpoint::Found>> {
    let stored = stored_checkpoints(topics).await;
    (0..EVENT_PARTITIONS)
        .map(|p| (p, vigia_processors::checkpoint::gather(p, &stored)))
        .collect()
}

/// The end offset of each `events` partition.
async fn event_ends(topics: &Topics) -> HashMap<i32, i64> {
    let topic = topics.events.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer =
            base().set("group.id", unique("ends")).create().unwrap();
        (0..EVENT_PARTITIONS)
            .map(|p| {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .unwrap();
                (p, high)
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Waits until every non-empty `events` partition has a readable checkpoint at its end: state
/// taken after every record produced so far.
async fn wait_for_checkpoints_at_the_end(topics: &Topics) {
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ends = event_ends(topics).await;
        let found = checkpoints_by_partition(topics).await;
        let done = ends.iter().filter(|(_, end)| **end > 0).all(|(p, end)| {
            found[p]
                .iter()
                .any(|f| !f.facts.unreadable && f.facts.offset == *end)
        });
        if done {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no checkpoint at the end of each partition: ends {ends:?}, found {:?}",
            found
                .iter()
                .map(|(p, f)| (p, f.iter().map(|f| f.facts).collect::<Vec<_>>()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many `events` partitions hold records (the tenants' keys decide).
async fn busy_partitions(topics: &Topics) -> f64 {
    event_ends(topics)
        .await
        .values()
        .filter(|end| **end > 0)
        .count() as f64
}

/// Writes `records` (key, value) to the checkpoints topic, as a processor would.
async fn write_checkpoint_records(topics: &Topics, records: Vec<(Vec<u8>, Vec<u8>)>) {
    let producer: FutureProducer = base().set("acks", "all").create().unwrap();
    for (key, value) in records {
        producer
            .send(
                FutureRecord::to(&topics.checkpoints)
                    .partition(0)
                    .key(&key)
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// Event time of a batch: a moment ahead, so that the batch is written before any of its
/// waits is due by the clock.
fn soon() -> DateTime<Utc> {
    Utc::now() + ms(1500)
}

/// Produces `events` in one go (all enqueued, then awaited): a batch written within
/// milliseconds, so that no record's log time passes a deadline of an earlier one in the batch
/// (as one-by-one writes on a loaded machine could: an answer written after its wait's
/// deadline is an alert and its withdrawal, not what an engine fed the batch alone gives).
async fn produce_batch(topic: &str, events: &[Event]) {
    let producer: FutureProducer = base()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let keys: Vec<(String, String)> = events
        .iter()
        .map(|e| (e.partition_key(), e.to_json()))
        .collect();
    let sends = keys.iter().map(|(key, payload)| {
        producer.send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
    });
    for r in futures::future::join_all(sends).await {
        r.map_err(|(e, _)| e).unwrap();
    }
}

/// A batch of traffic at `at` over tenants `tenants`: per tenant, `answered` conversations
/// replied to within the threshold and one left unanswered (alerted 2 s later).
fn traffic(
    tag: &str,
    tenants: std::ops::RangeInclusive<u64>,
    at: DateTime<Utc>,
    answered: i64,
) -> Vec<Event> {
    let mut events = Vec::new();
    for tenant in tenants {
        for i in 0..answered {
            let conv = format!("{tag}-a{i}");
            events.push(received(
                tenant,
                &conv,
                at + ms(i),
                Some(7),
                "hola, ¿precio?",
            ));
            events.push(sent(tenant, &conv, at + ms(400 + i), 7));
        }
        events.push(received(tenant, &format!("{tag}-u"), at, Some(8), "hola"));
    }
    events
}

/// Waits until every output an uninterrupted run gives for `events` was seen, then checks that
/// nothing else was, and that every copy of each is that run's record, byte for byte.
async fn assert_uninterrupted_outputs(
    collector: &Collector,
    config: &Config,
    events: &[Event],
    what: &str,
) {
    let expected = expected_outputs(config, events);
    let expected_ids: HashSet<Uuid> = expected.keys().copied().collect();
    collector
        .wait_for(what, Duration::from_secs(30), |s| {
            ids(s)
                .into_iter()
                .collect::<HashSet<_>>()
                .is_superset(&expected_ids)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = collector.snapshot();
    let new: Vec<&Seen> = seen
        .iter()
        .filter(|s| {
            ids(std::slice::from_ref(*s))
                .iter()
                .any(|id| !expected_ids.contains(id))
        })
        .collect();
    assert!(
        new.is_empty(),
        "{what}: records an uninterrupted run does not give: {new:#?}"
    );
    let mut raw_by_id: HashMap<Uuid, &str> = HashMap::new();
    for s in seen
        .iter()
        .filter(|s| !s.topic.ends_with("dead_letters") && s.value["type"] != "daily_report")
    {
        let id: Uuid = serde_json::from_value(s.value["id"].clone()).unwrap();
        assert_eq!(s.value, expected[&id], "{what}: record {id} differs");
        let first = raw_by_id.entry(id).or_insert(&s.raw);
        assert_eq!(
            *first,
            s.raw.as_str(),
            "{what}: record {id} re-sent with other bytes"
        );
    }
    assert!(of(&seen, &topics_dead_letters(&seen)).is_empty());
}

/// Dead letters are not expected in these tests: the name of whatever dead-letter topic was seen.
fn topics_dead_letters(seen: &[Seen]) -> String {
    seen.iter()
        .find(|s| s.topic.ends_with("dead_letters"))
        .map(|s| s.topic.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka at VIGIA_KAFKA_BROKERS (default 127.0.0.1:9092)"]
async fn a_restart_restores_a_mid_stream_checkpoint_and_gives_an_uninterrupted_runs_outputs() {
    init_logs();
    let topics = Topics::with_prefix(&format!("{}.", unique("restore")));
    create_topics(&topics).await;
    let config = test_config(&unique("group"));
    let collector = Collector::start(&topics);

    let mut events = traffic("one", 31..=36, soon(), 12);
    produce_batch(&topics.events, &events).await;
    let (_stop, first) = start(config.clone(), &topics);
    assert_uninterrupted_outputs(&collector, &config, &events, "the first part's outputs").await;
    wait_for_checkpoints_at_the_end(&topics).await;
    // … and for the commits that cover them (every 200 ms).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pieces: usize = checkpoints_by_partition(&topics)
        .await
        .values()
        .flatten()
        .map(|f| f.pieces.len())
        .max()
        .unwrap();
    assert!(pieces > 1, "checkpoints split into pieces ({pieces})");
    // Crash: no draining, no final commit, no goodbye to the group.
    first.abort();
    let _ = first.await;

    let second = traffic("two", 31..=36, soon(), 5);
    produce_batch(&topics.events, &second).await;
    events.extend(second);
    let (stop, restarted) = start_observed(config.clone(), &topics);
    assert_uninterrupted_outputs(&collector, &config, &events, "after the restore").await;
    stop.cancel();
    let metrics = restarted.await.unwrap();
    assert_eq!(
        metric(&metrics, "vigia_processor_checkpoint_restores_total"),
        busy_partitions(&topics).await,
        "every partition restored from its checkpoint:\n{metrics}"
    );
    assert!(
        !metrics.contains("vigia_processor_full_replays_total{"),
        "{metrics}"
    );
    // The checkpoints were at the committed offsets: nothing before them was re-read.
    assert_eq!(
        metric(&metrics, "vigia_processor_replayed_records_total"),
        0.0
    );
    collector.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka at VIGIA_KAFKA_BROKERS (default 127.0.0.1:9092)"]
async fn corrupt_foreign_or_too_new_checkpoints_fall_back_to_a_full_replay_with_the_same_outputs() {
    use vigia_processors::checkpoint::{self, HEADER_LEN};
    init_logs();
    let topics = Topics::with_prefix(&format!("{}.", unique("fallback")));
    create_topics(&topics).await;
    let config = test_config(&unique("group"));
    let collector = Collector::start(&topics);

    let mut events = traffic("zero", 51..=54, soon(), 8);
    produce_batch(&topics.events, &events).await;
    let (stop, run) = start(config.clone(), &topics);
    assert_uninterrupted_outputs(&collector, &config, &events, "before any fallback").await;
    wait_for_checkpoints_at_the_end(&topics).await;
    stop.cancel();
    run.await.unwrap();

    for (round, reason) in ["unreadable", "other_state_version", "after_committed"]
        .into_iter()
        .enumerate()
    {
        // Every checkpoint of every partition, spoilt the same way.
        let ends = event_ends(&topics).await;
        let mut spoilt = Vec::new();
        for (p, found) in checkpoints_by_partition(&topics).await {
            for f in found.iter().filter(|f| !f.facts.unreadable) {
                // One spoilt by an earlier round (and not overwritten since) stays as it is.
                let Ok((meta, state)) = checkpoint::join(&f.pieces) else {
                    continue;
                };
                let pieces = match reason {
                    "unreadable" => {
                        let mut pieces = f.pieces.clone();
                        let last = pieces.last_mut().unwrap();
                        last[HEADER_LEN] ^= 0x20;
                        pieces
                    }
                    "other_state_version" => checkpoint::split(
                        checkpoint::CheckpointMeta {
                            state_version: meta.state_version + 1,
                            ..meta
                        },
                        &state,
                        config.checkpoint_piece_bytes,
                    )
                    .unwrap(),
                    _ => checkpoint::split(
                        checkpoint::CheckpointMeta {
                            offset: ends[&p] + 1000,
                            ..meta
                        },
                        &state,
                        config.checkpoint_piece_bytes,
                    )
                    .unwrap(),
                };
                for (i, piece) in pieces.into_iter().enumerate() {
                    spoilt.push((checkpoint::piece_key(p, f.slot, i as u32), piece));
                }
            }
        }
        assert!(!spoilt.is_empty(), "{reason}: checkpoints to spoil");
        write_checkpoint_records(&topics, spoilt).await;

        let more = traffic(&format!("r{round}"), 51..=54, soon(), 3);
        produce_batch(&topics.events, &more).await;
        events.extend(more);
        let (stop, run) = start_observed(config.clone(), &topics);
        assert_uninterrupted_outputs(&collector, &config, &events, reason).await;
        wait_for_checkpoints_at_the_end(&topics).await;
        stop.cancel();
        let metrics = run.await.unwrap();
        let sample = format!("vigia_processor_full_replays_total{{reason=\"{reason}\"}}");
        assert_eq!(
            metric(&metrics, &sample),
            busy_partitions(&topics).await,
            "{reason}: both partitions replayed in full:\n{metrics}"
        );
        assert_eq!(
            metric(&metrics, "vigia_processor_checkpoint_restores_total"),
            0.0,
            "{reason}"
        );
        if reason == "after_committed" {
            // Deleted: never loaded later, when a commit has passed its offset.
            let ends = event_ends(&topics).await;
            for (p, found) in checkpoints_by_partition(&topics).await {
                for f in found {
                    assert!(f.facts.offset <= ends[&p], "partition {p}: {:?}", f.facts);
                }
            }
        }
    }
    collector.close().await;
}

/// Environment of [`child_runs_the_processors_until_the_checkpoint_failpoint`]: the topic
/// prefix and consumer group of the parent test.
const CHILD_PREFIX: &str = "VIGIA_TEST_CHILD_PREFIX";
const CHILD_GROUP: &str = "VIGIA_TEST_CHILD_GROUP";
/// The child's static membership (`processors.instance_id`), when set.
const CHILD_INSTANCE: &str = "VIGIA_TEST_CHILD_INSTANCE";

/// The processors of `prefix` in group `group` in a child process (this test binary running
/// `child_runs_the_processors_until_the_checkpoint_failpoint`), with `env` besides.
fn spawn_child(prefix: &str, group: &str, env: &[(&str, &str)]) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "child_runs_the_processors_until_the_checkpoint_failpoint",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_PREFIX, prefix)
        .env(CHILD_GROUP, group)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Not a test by itself: the processors of
/// [`a_crash_while_a_checkpoint_is_written_leaves_the_other_slot_to_restore_from`], in a
/// process of their own (this test binary, run again) that the failpoint aborts. Returns at
/// once when not started that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of a_crash_while_a_checkpoint_is_written_…"]
async fn child_runs_the_processors_until_the_checkpoint_failpoint() {
    let (Ok(prefix), Ok(group)) = (std::env::var(CHILD_PREFIX), std::env::var(CHILD_GROUP)) else {
        return;
    };
    init_logs();
    let topics = Topics::with_prefix(&prefix);
    let config = Config {
        checkpoint_interval: Duration::from_millis(100),
        instance_id: std::env::var(CHILD_INSTANCE).ok(),
        ..test_config(&group)
    };
    let mut registry = Registry::default();
    vigia_processors::run(
        config,
        &base(),
        &topics,
        &mut registry,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    panic!("the failpoint (or a kill) should have ended the processors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka at VIGIA_KAFKA_BROKERS (default 127.0.0.1:9092)"]
async fn a_crash_while_a_checkpoint_is_written_leaves_the_other_slot_to_restore_from() {
    use std::os::unix::process::ExitStatusExt;
    init_logs();
    let prefix = format!("{}.", unique("torn"));
    let topics = Topics::with_prefix(&prefix);
    create_topics(&topics).await;
    let group = unique("group");
    let config = test_config(&group);
    let collector = Collector::start(&topics);

    // The processors in a child process, aborted by the failpoint half-way through writing the
    // 4th checkpoint (of more than one piece) it writes: after two whole ones per partition.
    let mut child = spawn_child(
        &prefix,
        &group,
        &[("VIGIA_FAILPOINT_CHECKPOINT_ABORT", "4")],
    );
    // Traffic until it dies (each batch makes checkpoints due).
    let mut events = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the failpoint never fired"
        );
        let batch = traffic(&format!("b{}", events.len()), 41..=44, soon(), 4);
        produce_batch(&topics.events, &batch).await;
        events.extend(batch);
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        status.signal(),
        Some(6),
        "aborted by the failpoint: {status:?}"
    );
    let found = checkpoints_by_partition(&topics).await;
    let torn: Vec<_> = found
        .values()
        .flatten()
        .filter(|f| f.facts.unreadable)
        .collect();
    assert_eq!(torn.len(), 1, "one checkpoint left half-written: {found:?}");
    let whole = found
        .values()
        .flatten()
        .filter(|f| !f.facts.unreadable)
        .count();
    assert!(
        whole as f64 >= busy_partitions(&topics).await,
        "the other slot of the torn one, and the other partition's: {found:?}"
    );

    let last = traffic("last", 41..=44, soon(), 2);
    produce_batch(&topics.events, &last).await;
    events.extend(last);
    let (stop, restarted) = start_observed(config.clone(), &topics);
    assert_uninterrupted_outputs(&collector, &config, &events, "after the torn checkpoint").await;
    stop.cancel();
    let metrics = restarted.await.unwrap();
    assert_eq!(
        metric(&metrics, "vigia_processor_checkpoint_restores_total"),
        busy_partitions(&topics).await,
        "the torn partition restored from its other slot:\n{metrics}"
    );
    collector.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka at VIGIA_KAFKA_BROKERS (default 127.0.0.1:9092)"]
async fn a_static_member_killed_and_restarted_gets_its_partitions_back_before_its_session_ends() {
    init_logs();
    let prefix = format!("{}.", unique("static"));
    let topics = Topics::with_prefix(&prefix);
    create_topics(&topics).await;
    let group = unique("group");
    let instance = unique("processors");
    let config = Config {
        instance_id: Some(instance.clone()),
        ..test_config(&group)
    };
    let collector = Collector::start(&topics);

    // The processors in a child process (no failpoint: it runs until killed).
    let mut child = spawn_child(&prefix, &group, &[(CHILD_INSTANCE, instance.as_str())]);
    let mut events = traffic("one", 51..=56, soon(), 4);
    produce_batch(&topics.events, &events).await;
    assert_uninterrupted_outputs(&collector, &config, &events, "the child's outputs").await;
    wait_for_checkpoints_at_the_end(&topics).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // kill -9: the member never leaves the group; its session would last 15 s.
    child.kill().unwrap();
    child.wait().unwrap();

    // The samples of the second batch's answers: out as soon as the partitions are back. Counted
    // before the restart (the restarted member may answer before the batch's produce returns).
    let samples_expected = of(&collector.snapshot(), &topics.response_times).len() + 3 * 6;
    let restarted_at = tokio::time::Instant::now();
    let (stop, restarted) = start_observed(config.clone(), &topics);
    let second = traffic("two", 51..=56, Utc::now() + ms(300), 3);
    produce_batch(&topics.events, &second).await;
    events.extend(second.iter().cloned());
    collector
        .wait_for(
            "the restarted member's first outputs",
            Duration::from_secs(30),
            |s| of(s, &topics.response_times).len() >= samples_expected,
        )
        .await;
    let back_after = restarted_at.elapsed();
    println!("outputs again {back_after:?} after the restart");
    // A dynamic member would wait for the killed one's session to time out (15 s) first.
    assert!(
        back_after < Duration::from_secs(10),
        "the restarted static member took {back_after:?}: it waited for a rebalance"
    );
    assert_uninterrupted_outputs(&collector, &config, &events, "after the restart").await;
    stop.cancel();
    let metrics = restarted.await.unwrap();
    assert_eq!(
        metric(&metrics, "vigia_processor_checkpoint_restores_total"),
        busy_partitions(&topics).await,
        "restored from the checkpoints:\n{metrics}"
    );
    collector.close().await;
}
