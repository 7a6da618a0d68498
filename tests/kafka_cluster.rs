//! A broker cluster that fails (issue 12): three Apache Kafka nodes (a KRaft quorum of three;
//! Vigía's topics with replication factor 3 and `min.insync.replicas` 2) under
//! `vigia ingest | process | sink | gateway`, each its own process, fed the simulator's stream
//! the way a CRM posts it (a batch refused with a 503 is retried after its `Retry-After`).
//!
//! CI's version (`scripts/test.sh`): kill -9 the broker leading the `events` partitions mid-way,
//! bring it back; then:
//! - ingest answered 202 only for events Kafka acknowledged: every acknowledged event is in
//!   ClickHouse, once (none lost, none counted twice, whatever was retried);
//! - notifications kept reaching a CEO's WebSocket after the kill;
//! - no Vigía process exited or needed a restart;
//! - the processors' outputs, net of corrections, are those of an untouched deployment fed the
//!   same stream.
//!
//! The full version (`VIGIA_CLUSTER_FULL=1`, or `bash scripts/kafka-cluster-test.sh`) adds: once
//! the first is in sync again, a kill -9 of another broker; all three brokers down for 30 s
//! (ingest 503s with `Retry-After`, its health says Kafka is down, everything resumes by itself);
//! and seeded kill -9s of `vigia process`, `sink` and `gateway` (two each, the second right after
//! the restart, while the new member joins its group), after which the same checks hold within
//! 60 s of the last kill, and the CEO's inbox holds every notification of the tenant once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::kafka_nodes::KafkaCluster;
use common::outputs::*;
use common::*;
use rand::{RngExt, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use vigia_schemas::Role;

/// What the poster learnt: the events of each batch Kafka acknowledged (202), and the 503s.
#[derive(Default)]
struct Posted {
    acknowledged: BTreeSet<String>,
    refused: usize,
    max_refusal: Duration,
}

/// Posts `events` in batches (per tenant, 50 at most), retrying a batch after a 503 until it is
/// accepted: what a CRM's webhook sender does.
async fn post_all(ingest: &Vigia, events: &[Value], posted: &mut Posted) {
    let client = reqwest::Client::new();
    for chunk in events.chunks(100) {
        for tenant in [1u64, 2] {
            let batch: Vec<&Value> = chunk.iter().filter(|e| e["tenant_id"] == tenant).collect();
            if batch.is_empty() {
                continue;
            }
            let first_try = Instant::now();
            loop {
                let sent = Instant::now();
                let r = client
                    .post(ingest.url("/v1/events"))
                    .header("X-API-Key", key_for(tenant))
                    .json(&batch)
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
                    .expect("ingest answers (it must not hang or die while brokers fail)");
                let status = r.status().as_u16();
                if status == 202 {
                    for e in &batch {
                        posted
                            .acknowledged
                            .insert(e["event_id"].as_str().unwrap().to_string());
                    }
                    break;
                }
                assert_eq!(status, 503, "{}", r.text().await.unwrap_or_default());
                let retry_after: u64 = r
                    .headers()
                    .get("retry-after")
                    .expect("a 503 carries Retry-After")
                    .to_str()
                    .unwrap()
                    .parse()
                    .expect("Retry-After in seconds");
                posted.refused += 1;
                posted.max_refusal = posted.max_refusal.max(sent.elapsed());
                assert!(
                    first_try.elapsed() < Duration::from_secs(180),
                    "ingest refused one batch for 3 minutes"
                );
                tokio::time::sleep(Duration::from_secs(retry_after.min(2))).await;
            }
        }
    }
}

/// The node (0-based index) leading partition 0 of `topic`.
fn leader_of(brokers: &str, topic: &str, cluster: &KafkaCluster) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            if let Some(p) = md.topics().first().and_then(|t| t.partitions().first()) {
                if let Some(i) = cluster
                    .nodes
                    .iter()
                    .position(|n| n.node_id as i32 == p.leader())
                {
                    return i;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader for {topic}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until every partition of the namespace's topics has all three replicas in sync.
fn wait_in_sync(brokers: &str, prefix: &str) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(md) = consumer.fetch_metadata(None, Duration::from_secs(5)) {
            let ours: Vec<_> = md
                .topics()
                .iter()
                .filter(|t| t.name().starts_with(prefix))
                .collect();
            if !ours.is_empty()
                && ours
                    .iter()
                    .all(|t| t.partitions().iter().all(|p| p.isr().len() == 3))
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "replicas not back in sync within 120 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn assert_alive(stages: &mut [(&str, &mut Vigia)]) {
    for (name, v) in stages.iter_mut() {
        if let Ok(Some(status)) = v.child.try_wait() {
            panic!("vigia {name} exited ({status}); its log:\n{}", v.log());
        }
    }
}

/// ClickHouse's `events`: (rows, distinct ids, the ids).
async fn stored_events(db: &str) -> (u64, BTreeSet<String>) {
    let rows: u64 = ch_query(&format!("SELECT count() FROM {db}.events"))
        .await
        .trim()
        .parse()
        .unwrap();
    let ids = ch_query(&format!("SELECT toString(event_id) FROM {db}.events"))
        .await
        .lines()
        .map(str::to_string)
        .collect();
    (rows, ids)
}

/// Every notification in the CEO's inbox (REST, paged): id → how often listed.
async fn inbox(gateway: &Vigia, token: &str) -> BTreeMap<String, usize> {
    let client = reqwest::Client::new();
    let mut out = BTreeMap::new();
    let mut before: Option<i64> = None;
    loop {
        let mut url = gateway.url("/v1/notifications?limit=200");
        if let Some(b) = before {
            url.push_str(&format!("&before={b}"));
        }
        let page: Value = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for n in page["notifications"].as_array().unwrap() {
            let id = n["notification"]["id"]
                .as_str()
                .or(n["id"].as_str())
                .unwrap()
                .to_string();
            *out.entry(id).or_insert(0) += 1;
        }
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts three Kafka brokers of its own; scripts/test.sh runs it"]
async fn a_failing_broker_cluster_loses_nothing_and_counts_nothing_twice() {
    let full = std::env::var("VIGIA_CLUSTER_FULL").as_deref() == Ok("1");
    let started = Instant::now();
    let ns = Namespace::new("cluster");
    let cluster = KafkaCluster::start(3, &ns.data_dir);
    let brokers = cluster.bootstrap();
    println!(
        "three brokers up in {:.1}s: {brokers}",
        started.elapsed().as_secs_f64()
    );
    // The harness's Kafka readers (outputs::*) and every stage use this cluster.
    std::env::set_var("VIGIA_KAFKA_BROKERS", &brokers);
    let ns = ns
        .env("VIGIA_KAFKA_BROKERS", &brokers)
        .env("VIGIA_KAFKA_REPLICATION_FACTOR", "3")
        .env("VIGIA_UNANSWERED_AFTER", "2m")
        .env("VIGIA_SESSION_TIMEOUT", "60s");
    let prefix = format!("{}.", ns.name);
    let db = ns.database();

    let start =
        (now() - chrono::Duration::minutes(15)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let events = stream(&start);
    let mut ingest = ns.spawn("ingest");
    let mut process = ns.spawn("process");
    let mut sink = ns.spawn("sink");
    let mut gateway = ns.spawn("gateway");
    let ceo = WsClient::connect(&gateway, 1001, 1, Role::Ceo).await;
    let mut posted = Posted::default();

    let parts = if full { 5 } else { 2 };
    let part = events.len().div_ceil(parts);
    let mut segments = events.chunks(part);

    // 1. Part of the traffic, then kill -9 the leader of the events partitions and post more.
    post_all(&ingest, segments.next().unwrap(), &mut posted).await;
    let events_topic = format!("{prefix}events");
    let leader = leader_of(&brokers, &events_topic, &cluster);
    let notified_before = ceo.notifications().len();
    let killed_at = chrono::Utc::now();
    cluster.kill(leader);
    println!(
        "kill -9 of broker {} (leader of {events_topic})",
        leader + 1
    );
    post_all(&ingest, segments.next().unwrap(), &mut posted).await;
    let got = ceo
        .wait_for(Duration::from_secs(60), |f| f["type"] == "notification")
        .await;
    assert!(got.is_some(), "no notification at all");
    let deadline = Instant::now() + Duration::from_secs(60);
    let after_kill = loop {
        let n = ceo
            .notifications()
            .iter()
            .filter(|(t, _)| *t > killed_at)
            .count();
        if n > 0 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        after_kill > 0,
        "no notification reached the CEO after the leader was killed ({notified_before} before)"
    );
    cluster.restart(leader);
    wait_in_sync(&brokers, &prefix);
    println!("broker {} back and in sync", leader + 1);

    let mut last_kill = Instant::now();
    if full {
        // 2. Another broker.
        let other = (leader + 1) % 3;
        cluster.kill(other);
        println!("kill -9 of broker {}", other + 1);
        post_all(&ingest, segments.next().unwrap(), &mut posted).await;
        cluster.restart(other);
        wait_in_sync(&brokers, &prefix);

        // 3. All three down for 30 s.
        for i in 0..3 {
            cluster.kill(i);
        }
        let down_since = Instant::now();
        let probe = event(
            "conversation.closed",
            1,
            now(),
            json!({"conversation_id": "outage-probe"}),
        );
        let sent = Instant::now();
        let (status, body) = post_events(&ingest, 1, &json!([probe])).await;
        assert_eq!(status, 503, "{body}");
        assert!(
            sent.elapsed() < Duration::from_secs(30),
            "the 503 took {:?}",
            sent.elapsed()
        );
        let health: Value = reqwest::get(ingest.url("/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health["components"]["kafka"], "down", "{health}");
        tokio::time::sleep(Duration::from_secs(30).saturating_sub(down_since.elapsed())).await;
        let restarts: Vec<_> = (0..3).map(|i| cluster.spawn_restart(i)).collect();
        for r in restarts {
            assert!(r.wait_with_output().unwrap().status.success());
        }
        println!("all brokers back after 30 s");
        post_all(&ingest, segments.next().unwrap(), &mut posted).await;
        wait_in_sync(&brokers, &prefix);

        // 4. kill -9 of each stage, twice, seeded; the second right after its restart.
        let seed: u64 = std::env::var("VIGIA_CLUSTER_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| rand::rng().random());
        println!("stage kills from seed {seed} (VIGIA_CLUSTER_SEED={seed} repeats them)");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let rest = segments.next().unwrap().to_vec();
        let mut posting = Posted::default();
        let post_rest = post_all(&ingest, &rest, &mut posting);
        let chaos = async {
            for stage in ["process", "sink", "gateway"] {
                tokio::time::sleep(Duration::from_millis(rng.random_range(500..3000))).await;
                let target = match stage {
                    "process" => &mut process,
                    "sink" => &mut sink,
                    _ => &mut gateway,
                };
                target.kill9();
                *target = ns.spawn(stage);
                // Within 2 s of its start: still joining its consumer group.
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..2000))).await;
                target.kill9();
                *target = ns.spawn(stage);
                println!("kill -9 of vigia {stage}, twice");
            }
        };
        tokio::join!(post_rest, chaos);
        posted.acknowledged.extend(posting.acknowledged);
        posted.refused += posting.refused;
        last_kill = Instant::now();
    }
    for rest in segments {
        post_all(&ingest, rest, &mut posted).await;
    }
    println!(
        "posted {} events: {} acknowledged, {} batches refused with 503 (slowest refusal {:?})",
        events.len(),
        posted.acknowledged.len(),
        posted.refused,
        posted.max_refusal
    );

    // Every acknowledged event in ClickHouse, once.
    let want = posted.acknowledged.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(if full { 60 } else { 120 });
    let (rows, ids) = loop {
        let (rows, ids) = stored_events(&db).await;
        if ids.len() as u64 >= want || Instant::now() > deadline {
            break (rows, ids);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let lost: Vec<_> = posted.acknowledged.difference(&ids).take(5).collect();
    assert!(
        lost.is_empty(),
        "acknowledged events missing from ClickHouse: {lost:?} …"
    );
    assert_eq!(
        rows,
        ids.len() as u64,
        "an event counted twice in ClickHouse"
    );
    assert_eq!(
        ids.len() as u64,
        want,
        "events ClickHouse has that were never acknowledged"
    );
    println!(
        "ClickHouse holds the {want} acknowledged events once each ({:.0}s after the last kill)",
        last_kill.elapsed().as_secs_f64()
    );

    assert_alive(&mut [
        ("ingest", &mut ingest),
        ("process", &mut process),
        ("sink", &mut sink),
        ("gateway", &mut gateway),
    ]);

    // The processors' outputs, net of corrections, as an untouched deployment's.
    wait_processors_caught_up(&prefix, &process, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = Net::of(&read_outputs(&prefix));
    let acknowledged: Vec<Value> = events
        .iter()
        .filter(|e| {
            posted
                .acknowledged
                .contains(e["event_id"].as_str().unwrap())
        })
        .cloned()
        .collect();
    let reference = Net::of(&run("cluster_reference", &acknowledged, &[], 1).await);
    assert!(
        reference.alerts.len() > 5 && reference.samples.len() > 50,
        "{reference:?}"
    );
    assert_eq!(
        reference.samples, got.samples,
        "response-time samples standing"
    );
    assert_eq!(reference.alerts, got.alerts, "unanswered alerts standing");
    assert_eq!(reference.status_changes, got.status_changes, "conversions");
    println!(
        "processors: {} samples, {} alerts standing, as an untouched deployment's",
        got.samples.len(),
        got.alerts.len()
    );

    if full {
        // The CEO's inbox: every notification of tenant 1 once.
        let token = token(1001, 1, Role::Ceo);
        let listed = inbox(&gateway, &token).await;
        let twice: Vec<_> = listed.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "listed twice: {twice:?}");
        let sent: BTreeSet<String> = read_outputs(&prefix)
            .into_iter()
            .filter(|((topic, _), payloads)| {
                topic.ends_with("notifications")
                    && payloads.iter().any(|p| {
                        let n: Value = serde_json::from_str(p).unwrap();
                        // Withdrawals mark their notification withdrawn; they are not listed.
                        n["tenant_id"] == 1 && n["withdraws"].is_null()
                    })
            })
            .map(|((_, id), _)| id)
            .collect();
        let listed: BTreeSet<String> = listed.into_keys().collect();
        let missing: Vec<_> = sent.difference(&listed).take(5).collect();
        assert!(
            missing.is_empty(),
            "notifications missing from the CEO's inbox: {missing:?}"
        );
    }
    drop_database(&db).await;
    println!("done in {:.0}s", started.elapsed().as_secs_f64());
}
