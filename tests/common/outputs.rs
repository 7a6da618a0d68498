//! The processors' output topics of a test namespace, and a pipeline run over a fixed stream:
//! shared by the crash/scale test and the order-independence test.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;

use super::*;

/// (topic, id) → every payload sent under that id.
pub type Outputs = BTreeMap<(String, String), BTreeSet<String>>;

pub const OUTPUT_TOPICS: [&str; 5] = [
    "notifications",
    "response_times",
    "lead_scores",
    "seller_metrics",
    "dead_letters",
];

pub fn stream(start: &str) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_vigia"))
        .args(["simulate", "--dry-run", "--seed", "11", "--tenants", "2"])
        .args([
            "--sellers",
            "4",
            "--rate",
            "15",
            "--duration",
            "6m",
            "--start",
            start,
        ])
        .args(["--late-by", "20s"])
        .output()
        .expect("vigia simulate runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every record of the namespace's output topics: (topic, id) → the records' payloads.
pub fn read_outputs(prefix: &str) -> BTreeMap<(String, String), BTreeSet<String>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set(
            "group.id",
            format!("{prefix}reader-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for name in OUTPUT_TOPICS {
        let topic = format!("{prefix}{name}");
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap();
        let partitions: Vec<i32> = metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| p.id())
            .collect();
        for p in partitions {
            let (_, high) = consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .unwrap();
            if high == 0 {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .unwrap();
            consumer.assign(&tpl).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "cannot read {topic}/{p} to {high}"
                );
                let Some(m) = consumer.poll(Duration::from_millis(500)) else {
                    continue;
                };
                let m = m.unwrap();
                let payload = String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
                let v: Value = serde_json::from_str(&payload).unwrap();
                let (id, payload) = if name == "dead_letters" {
                    // Its origin topic's name and Kafka timestamp are the run's own.
                    let mut v = v.clone();
                    v["topic"] = Value::from(
                        v["topic"]
                            .as_str()
                            .unwrap_or_default()
                            .replace(prefix, "<ns>."),
                    );
                    v.as_object_mut().unwrap().remove("origin_timestamp");
                    (format!("{}/{}", v["partition"], v["offset"]), v.to_string())
                } else {
                    (v["id"].as_str().unwrap().to_string(), payload)
                };
                if v["type"] != "daily_report" {
                    out.entry((name.to_string(), id))
                        .or_default()
                        .insert(payload);
                }
                if m.offset() + 1 >= high {
                    break;
                }
            }
        }
    }
    out
}

/// Whether `group` has committed, on every partition of `topic`, the partition's end.
pub fn committed_to_end(group: &str, topic: &str) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) else {
        return false;
    };
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in metadata.topics()[0].partitions() {
        let Ok((_, high)) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))
        else {
            return false;
        };
        ends.insert(p.id(), high);
        tpl.add_partition(topic, p.id());
    }
    let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(10)) else {
        return false;
    };
    committed.elements().iter().all(|e| match e.offset() {
        Offset::Offset(o) => o >= ends[&e.partition()],
        _ => ends[&e.partition()] == 0,
    })
}

/// Waits until the processors' group (`<prefix>processors`) has committed the end of every
/// `<prefix>events` partition; panics with `process`'s log after `within`.
pub async fn wait_processors_caught_up(prefix: &str, process: &Vigia, within: Duration) {
    let group = format!("{prefix}processors");
    let events_topic = format!("{prefix}events");
    let deadline = Instant::now() + within;
    while !committed_to_end(&group, &events_topic) {
        assert!(
            Instant::now() < deadline,
            "the processors never caught up; log:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn total_output_records(prefix: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    let mut total = 0;
    for name in OUTPUT_TOPICS {
        let topic = format!("{prefix}{name}");
        let Ok(metadata) = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)) else {
            continue;
        };
        for p in metadata.topics()[0].partitions() {
            if let Ok((_, high)) =
                consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
            {
                total += high;
            }
        }
    }
    total
}

/// Posts the stream to a fresh namespace, runs the processors (killed `kills` times at the
/// output counts `kill_at`), waits until the outputs stop growing, and returns them.
pub async fn run(
    name: &str,
    events: &[Value],
    kill_at: &[i64],
    instances: usize,
) -> BTreeMap<(String, String), BTreeSet<String>> {
    let ns = Namespace::new(name)
        .env("VIGIA_UNANSWERED_AFTER", "2m")
        .env("VIGIA_SESSION_TIMEOUT", "60s");
    let prefix = format!("{}.", ns.name);
    let ingest = ns.spawn("ingest");
    for chunk in events.chunks(100) {
        for t in [1, 2] {
            let batch: Vec<&Value> = chunk.iter().filter(|e| e["tenant_id"] == t).collect();
            if !batch.is_empty() {
                post_ok(&ingest, t, &serde_json::json!(batch)).await;
            }
        }
    }
    let mut process = ns.spawn("process");
    // More members of the same consumer group share the partitions.
    let others: Vec<Vigia> = (1..instances).map(|_| ns.spawn("process")).collect();
    for &at in kill_at {
        // A count already reached kills the member just started, while it is still joining the
        // group: recovery must not depend on killing only members that are working.
        let deadline = Instant::now() + Duration::from_secs(120);
        while total_output_records(&prefix) < at {
            assert!(
                Instant::now() < deadline,
                "the processors stalled before {at} outputs"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        process.kill9();
        println!(
            "{name}: kill -9 at {} output records",
            total_output_records(&prefix)
        );
        process = ns.spawn("process");
    }
    // Done when the processors' group has committed the end of every events partition (a
    // restarted member first waits out the killed one's session, then replays), and the outputs
    // have not grown for 3 s since.
    let deadline = Instant::now() + Duration::from_secs(240);
    wait_processors_caught_up(&prefix, &process, Duration::from_secs(240)).await;
    let mut last = (total_output_records(&prefix), Instant::now());
    while last.1.elapsed() < Duration::from_secs(3) {
        assert!(
            Instant::now() < deadline,
            "outputs never settled; log:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = total_output_records(&prefix);
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    println!("{name}: {} output records", last.0);
    let outputs = read_outputs(&prefix);
    drop(process);
    drop(others);
    drop(ingest);
    let _ = std::fs::remove_dir_all(&ns.data_dir);
    outputs
}

/// What stands once corrections are applied: the response-time samples not retracted, and the
/// unanswered alerts not corrected, by wait (conversation, customer message that started it; an
/// alert sent again after a correction has another id), with whether each was withdrawn; and
/// the lead scores caused by status changes, by id: seller, time and status (conversions).
#[derive(Debug)]
pub struct Net {
    pub samples: BTreeMap<String, String>,
    pub alerts: BTreeMap<String, bool>,
    pub status_changes: BTreeMap<String, String>,
    pub retracted: usize,
    pub corrected: usize,
}

impl Net {
    pub fn of(outputs: &Outputs) -> Net {
        let (mut samples, mut retracted) = (BTreeMap::new(), BTreeSet::new());
        let mut sent: BTreeMap<String, String> = BTreeMap::new();
        let (mut withdrawn, mut corrected) = (BTreeSet::new(), BTreeSet::new());
        let mut status_changes = BTreeMap::new();
        for ((topic, id), payloads) in outputs {
            let payload = payloads.iter().next().expect("a record");
            let v: Value = serde_json::from_str(payload).unwrap();
            if topic.ends_with("response_times") {
                match v["retracts"].as_str() {
                    Some(of) => {
                        retracted.insert(of.to_string());
                    }
                    None => {
                        samples.insert(id.clone(), payload.clone());
                    }
                }
            } else if topic.ends_with("lead_scores") && v["status_change"].is_string() {
                let change = format!(
                    "seller {} at {} -> {}",
                    v["seller_id"], v["computed_at"], v["status_change"]
                );
                status_changes.insert(id.clone(), change);
            } else if topic.ends_with("notifications") && v["type"] == "unanswered_conversation" {
                match v["withdraws"].as_str() {
                    None => {
                        let wait = format!(
                            "{}/{}",
                            v["data"]["conversation_id"], v["data"]["customer_event_id"]
                        );
                        sent.insert(id.clone(), wait);
                    }
                    Some(of) if v["data"]["state"] == "corrected" => {
                        corrected.insert(of.to_string());
                    }
                    Some(of) => {
                        withdrawn.insert(of.to_string());
                    }
                }
            }
        }
        samples.retain(|id, _| !retracted.contains(id));
        let mut alerts = BTreeMap::new();
        for (id, wait) in sent {
            if !corrected.contains(&id) {
                let twice = alerts.insert(wait.clone(), withdrawn.contains(&id));
                assert!(twice.is_none(), "two standing alerts for the wait {wait}");
            }
        }
        Net {
            samples,
            alerts,
            status_changes,
            retracted: retracted.len(),
            corrected: corrected.len(),
        }
    }
}
