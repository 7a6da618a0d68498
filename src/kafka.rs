//! The root's Kafka plumbing: the base client configuration every stage starts from, topic
//! creation (auto-created topics are slow on some brokers and get the wrong partition count), and
//! a readiness probe.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

pub fn base_client_config(kafka: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers)
        .set("client.id", client_id)
        // Brokers on loopback answer fast; fail fast too rather than hang a start-up.
        .set("socket.timeout.ms", "10000")
        // Small requests (a single alert, a POST's events) go out at once instead of waiting,
        // under Nagle's algorithm, for the acknowledgement of the previous one.
        .set("socket.nagle.disable", "true");
    for (k, v) in &kafka.properties {
        c.set(k, v);
    }
    c
}

/// Creates every Vigía topic that does not exist yet. Existing topics are left as they are.
pub async fn ensure_topics(
    base: &ClientConfig,
    kafka: &KafkaConfig,
    topics: &vigia_schemas::Topics,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = base
        .create()
        .context("cannot create a Kafka admin client")?;
    let new: Vec<NewTopic> = topics
        .all()
        .iter()
        .map(|name| {
            let topic = NewTopic::new(
                name,
                kafka.partitions,
                TopicReplication::Fixed(kafka.replication_factor),
            );
            // Replicated topics: an acknowledged write (acks=all) is on at least two brokers, so
            // losing one loses nothing; with fewer in sync, producers are refused (ingest: 503)
            // rather than acknowledged on one copy.
            let topic = if kafka.replication_factor >= 3 {
                topic.set("min.insync.replicas", "2")
            } else {
                topic
            };
            if *name == topics.checkpoints {
                checkpoint_topic(topic)
            } else {
                topic
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let results = admin.create_topics(&new, &opts).await.with_context(|| {
        format!(
            "cannot reach Kafka at {} to create topics; is the broker running? \
                 (locally: bash scripts/services.sh up)",
            kafka.brokers
        )
    })?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("cannot create topic {name}: {code}"),
        }
    }
    wait_for_topics(base, topics).await
}

/// The processors' checkpoints: only the latest value of each key matters (keys name a
/// partition's slot and piece, see `vigia_processors::checkpoint`), so the topic is compacted;
/// hourly segments let the compaction reclaim old checkpoints within the hour rather than after
/// the default week (every partition writes one every few seconds).
fn checkpoint_topic(topic: NewTopic<'_>) -> NewTopic<'_> {
    topic
        .set("cleanup.policy", "compact")
        .set("segment.ms", "3600000")
        .set("min.cleanable.dirty.ratio", "0.5")
        // Tombstones of superseded checkpoints: kept a day so a reader never misses one.
        .set("delete.retention.ms", "86400000")
}

/// Topic creation is asynchronous on some brokers: wait until metadata shows every topic.
async fn wait_for_topics(base: &ClientConfig, topics: &vigia_schemas::Topics) -> Result<()> {
    let base = base.clone();
    let names: Vec<String> = topics.all().iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let consumer: BaseConsumer = base.create()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            // A busy broker may time out a metadata request: retry until the deadline.
            let md = match consumer.fetch_metadata(None, Duration::from_secs(5)) {
                Ok(md) => md,
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "reading topic metadata failed; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
                Err(e) => {
                    return Err(e).context("cannot read topic metadata from the broker for 30 s")
                }
            };
            let missing: Vec<&String> = names
                .iter()
                .filter(|n| {
                    !md.topics()
                        .iter()
                        .any(|t| t.name() == n.as_str() && !t.partitions().is_empty())
                })
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("topics {missing:?} still missing 30 s after creation");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await?
}

/// True when the broker answers a metadata request within two seconds.
pub async fn broker_reachable(base: &ClientConfig) -> bool {
    let base = base.clone();
    tokio::task::spawn_blocking(move || {
        let Ok(consumer) = base.create::<BaseConsumer>() else {
            return false;
        };
        consumer
            .fetch_metadata(None, Duration::from_secs(2))
            .is_ok()
    })
    .await
    .unwrap_or(false)
}
