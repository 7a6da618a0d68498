//! The consumer of the `notifications` topic: each record is decoded, stored if new, and
//! everything stored up to it pushed (`cluster.rs`).
//!
//! **Where to read.** Every instance reads every partition (it assigns them to itself: no
//! consumer group splits them between instances) from the positions stored in the inbox
//! (`inbox_offsets`), which the transaction storing a batch advances past the batch's records
//! — whichever instance stores them. So an instance restarted with its old `instance_id` or a
//! new one, or a new instance, starts where the inbox is complete: it misses nothing, and the
//! records it may read again (stored meanwhile by others) are duplicates, pushed by nobody
//! again. A partition the inbox has no position for starts at the offset committed by the
//! consumer group `group_id` (what gateways before several instances committed), else at its
//! beginning. Offsets are also committed, every second, to the group `<group_id>.<instance_id>`,
//! for lag monitoring only. New partitions are picked up within [`REFRESH_PARTITIONS`].
//!
//! Records already fetched are taken together (up to [`MAX_BATCH`]) and stored in one inbox
//! transaction: a commit per notification capped the gateway at a few hundred notifications a
//! second on this machine, below what the processors send at 1,000 events/s. A record arriving
//! alone is stored at once (no waiting to fill a batch). If a batch cannot be stored, its
//! notifications are stored one by one, so that one the inbox cannot hold is skipped alone.
//!
//! A record that is not a notification is logged (with its [`vigia_schemas::DeadLetterReason`]),
//! counted and skipped (poison handling and dead letters belong to the processors; the gateway
//! must never stall on one). A notification of any size Kafka holds is stored and pushed like
//! any other. An inbox failure is
//! retried with backoff, without moving on: nothing is skipped while the database is down.

use std::time::Duration;

use futures::FutureExt;
use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vigia_schemas::{decode_json, Notification, RecordError, SellerMetrics};

use crate::{Gateway, KafkaPosition};

const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// The most notifications stored in one inbox transaction.
pub(crate) const MAX_BATCH: usize = 500;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A consumer of `group_id` that commits only what the caller commits, from the earliest offset
/// when the group has none, waiting at most `fetch_wait_ms` for a fetch.
pub(crate) fn consumer_config(
    base: &ClientConfig,
    group_id: &str,
    fetch_wait_ms: u32,
) -> ClientConfig {
    let mut config = base.clone();
    config
        .set("group.id", group_id)
        // A member that dies without leaving (kill -9) holds its partitions until its session
        // times out: librdkafka's 45 s default would stall a restarted stage that long.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    config
}

pub(crate) fn spawn(
    gateway: Gateway,
    base: &ClientConfig,
    topic: &str,
    group_id: &str,
    instance_id: &str,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, rdkafka::error::KafkaError> {
    let group = format!("{group_id}.{instance_id}");
    // Kafka answers a fetch as soon as a record arrives; the wait bounds only an idle fetch.
    let mut config = consumer_config(base, &group, 500);
    config.set("enable.auto.offset.store", "false");
    let consumer: Arc<StreamConsumer> = Arc::new(config.create()?);
    // Only asked for its committed offsets (never subscribes).
    let legacy: Arc<BaseConsumer> = Arc::new(consumer_config(base, group_id, 500).create()?);
    let topic = topic.to_string();
    tracing::info!(topic, group = %group, "gateway consuming notifications");
    Ok(tokio::spawn(async move {
        let mut assigned = Assigned::default();
        while !assigned.refresh(&gateway, &consumer, &legacy, &topic).await {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        run(gateway, consumer, legacy, topic, assigned, shutdown).await
    }))
}

/// How often the topic's partitions are looked up again (a topic may grow).
const REFRESH_PARTITIONS: Duration = Duration::from_secs(30);

/// The partitions this instance reads.
#[derive(Default)]
struct Assigned {
    partitions: Vec<i32>,
}

impl Assigned {
    /// Assigns the partitions of `topic` not assigned yet, each from its position (module docs).
    /// False if the topic is not there yet or the lookup failed (logged).
    async fn refresh(
        &mut self,
        gateway: &Gateway,
        consumer: &Arc<StreamConsumer>,
        legacy: &Arc<BaseConsumer>,
        topic: &str,
    ) -> bool {
        let lookup = {
            let (consumer, topic) = (consumer.clone(), topic.to_string());
            tokio::task::spawn_blocking(move || {
                let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
                Ok::<_, rdkafka::error::KafkaError>(
                    metadata
                        .topics()
                        .iter()
                        .filter(|t| t.name() == topic && t.error().is_none())
                        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                        .collect::<Vec<i32>>(),
                )
            })
            .await
        };
        let partitions = match lookup {
            Ok(Ok(p)) if !p.is_empty() => p,
            Ok(Ok(_)) => {
                tracing::info!(
                    topic,
                    "the notifications topic has no partitions yet; waiting"
                );
                return false;
            }
            Ok(Err(e)) => {
                tracing::warn!(topic, error = %e, "cannot look up the notifications topic's partitions; will retry");
                return false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "partition lookup task failed");
                return false;
            }
        };
        let new: Vec<i32> = partitions
            .into_iter()
            .filter(|p| !self.partitions.contains(p))
            .collect();
        if new.is_empty() {
            return true;
        }
        let stored = match gateway.shared.inbox.kafka_positions(topic).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the stored Kafka positions; will retry");
                return false;
            }
        };
        let mut legacy_wanted = TopicPartitionList::new();
        for p in new.iter().filter(|p| !stored.contains_key(p)) {
            legacy_wanted.add_partition(topic, *p);
        }
        let committed = if legacy_wanted.count() == 0 {
            TopicPartitionList::new()
        } else {
            let legacy = legacy.clone();
            match tokio::task::spawn_blocking(move || {
                legacy.committed_offsets(legacy_wanted, Duration::from_secs(5))
            })
            .await
            {
                Ok(Ok(tpl)) => tpl,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the committed offsets of the gateway's former consumer group; will retry");
                    return false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "offset lookup task failed");
                    return false;
                }
            }
        };
        let mut tpl = TopicPartitionList::new();
        for p in &new {
            let offset = match stored.get(p) {
                Some(next) => Offset::Offset(*next),
                None => match committed.find_partition(topic, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Offset::Offset(o),
                    _ => Offset::Beginning,
                },
            };
            tracing::info!(topic, partition = p, ?offset, "reading partition");
            if let Err(e) = tpl.add_partition_offset(topic, *p, offset) {
                tracing::warn!(error = %e, "cannot prepare partition assignment; will retry");
                return false;
            }
        }
        let result = if self.partitions.is_empty() {
            consumer.assign(&tpl)
        } else {
            consumer.incremental_assign(&tpl)
        };
        match result {
            Ok(()) => {
                self.partitions.extend(new);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot assign the notifications topic's partitions; will retry");
                false
            }
        }
    }
}

async fn run(
    gateway: Gateway,
    consumer: Arc<StreamConsumer>,
    legacy: Arc<BaseConsumer>,
    topic: String,
    mut assigned: Assigned,
    shutdown: CancellationToken,
) {
    let mut commit = tokio::time::interval(COMMIT_EVERY);
    commit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refresh = tokio::time::interval_at(
        tokio::time::Instant::now() + REFRESH_PARTITIONS,
        REFRESH_PARTITIONS,
    );
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut uncommitted = false;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = commit.tick() => {
                if uncommitted {
                    match consumer.commit_consumer_state(CommitMode::Async) {
                        Ok(()) => uncommitted = false,
                        Err(e) => tracing::debug!(error = %e, "cannot commit notification offsets (monitoring only); will retry"),
                    }
                }
            }
            _ = refresh.tick() => {
                assigned.refresh(&gateway, &consumer, &legacy, &topic).await;
            }
            received = consumer.recv() => match received {
                Err(e) => {
                    tracing::warn!(error = %e, "notifications consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(message) => {
                    // What the client has fetched already joins this record's batch.
                    let mut batch = vec![message.detach()];
                    while batch.len() < MAX_BATCH {
                        match consumer.recv().now_or_never() {
                            Some(Ok(next)) => batch.push(next.detach()),
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "notifications consumer error");
                                break;
                            }
                            None => break,
                        }
                    }
                    let handled = handle_batch(&gateway, &batch, &shutdown).await;
                    for message in &batch[..handled] {
                        match consumer.store_offset(message.topic(), message.partition(), message.offset()) {
                            Ok(()) => uncommitted = true,
                            Err(e) => tracing::debug!(error = %e, "cannot store notification offset"),
                        }
                    }
                    if handled < batch.len() {
                        break;
                    }
                }
            },
        }
    }
    if uncommitted {
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "cannot commit notification offsets at shutdown (monitoring only)");
        }
    }
    tracing::info!("gateway notifications consumer stopped");
}

/// Where to read on after `records`: per partition, the offset after the last one.
fn positions_after(records: &[OwnedMessage]) -> Vec<KafkaPosition> {
    let mut next: std::collections::BTreeMap<(&str, i32), i64> = Default::default();
    for m in records {
        let e = next.entry((m.topic(), m.partition())).or_insert(0);
        *e = (*e).max(m.offset() + 1);
    }
    next.into_iter()
        .map(|((topic, partition), next_offset)| KafkaPosition {
            topic: topic.to_string(),
            partition,
            next_offset,
        })
        .collect()
}

/// Records the positions after `records` (those that were no notification, or stored one by
/// one). Best effort: if it fails they are read again, and recognised.
async fn store_positions(gateway: &Gateway, records: &[OwnedMessage]) {
    if records.is_empty() {
        return;
    }
    if let Err(e) = gateway
        .shared
        .inbox
        .store_positions(&positions_after(records))
        .await
    {
        tracing::warn!(error = %e, "cannot store the notifications topic's positions; those records will be read again");
    }
}

/// Processes `batch` in order; returns how many of its records were handled (all unless
/// shutdown interrupted it: the offsets of the others must not be stored).
async fn handle_batch(
    gateway: &Gateway,
    batch: &[OwnedMessage],
    shutdown: &CancellationToken,
) -> usize {
    let notifications: Vec<Notification> =
        batch.iter().filter_map(|m| decoded(gateway, m)).collect();
    if notifications.is_empty() {
        store_positions(gateway, batch).await;
        return batch.len();
    }
    let count = notifications.len();
    match gateway
        .deliver_many(notifications, &positions_after(batch))
        .await
    {
        Ok(_) => return batch.len(),
        Err(e) => {
            tracing::warn!(error = %e, notifications = count, "cannot store a batch of notifications; storing them one by one")
        }
    }
    // Rare: decoded again rather than cloned for every batch (already counted above).
    let notifications: Vec<Notification> = batch
        .iter()
        .filter_map(|m| decode(m.payload()).ok())
        .collect();
    for (i, n) in notifications.into_iter().enumerate() {
        if !handle(gateway, n, shutdown).await {
            // Undecodable records between stored ones are skipped anyway; stop at the first
            // notification not stored.
            let handled = position_of_nth_notification(batch, i);
            store_positions(gateway, &batch[..handled]).await;
            return handled;
        }
    }
    store_positions(gateway, batch).await;
    batch.len()
}

/// The index in `batch` of its `n`th (0-based) record that decodes.
fn position_of_nth_notification(batch: &[OwnedMessage], n: usize) -> usize {
    batch
        .iter()
        .enumerate()
        .filter(|(_, m)| decode(m.payload()).is_ok())
        .nth(n)
        .map_or(batch.len(), |(i, _)| i)
}

/// The notification of `message`, or `None` (logged and counted) if it is not one.
fn decoded(gateway: &Gateway, message: &OwnedMessage) -> Option<Notification> {
    match decode(message.payload()) {
        Ok(n) => Some(n),
        Err(error) => {
            gateway.shared.metrics.undecodable.inc();
            tracing::warn!(
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                reason = %error.reason(),
                %error,
                "skipping a record of the notifications topic that is not a notification"
            );
            None
        }
    }
}

/// Stores and pushes one notification, retrying while the inbox fails; false if shutdown
/// interrupted it (its offset must not be stored).
async fn handle(
    gateway: &Gateway,
    notification: Notification,
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = Duration::from_millis(100);
    loop {
        match gateway.deliver(notification.clone()).await {
            Ok(_) => return true,
            Err(crate::GatewayError::Inbox(e)) if e.is_permanent() => {
                gateway.shared.metrics.undecodable.inc();
                tracing::warn!(error = %e, id = %notification.id, "skipping a notification the inbox cannot hold");
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %e, id = %notification.id, retry_in = ?backoff, "cannot store notification; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The consumer of the `seller_metrics` topic that fills the metrics board. The board is memory
/// only, so every gateway reads the topic from its beginning with a group of its own and commits
/// nothing: after a restart it rebuilds the board from the topic (keep the topic's retention at a
/// week or more: older snapshots are of sellers idle for longer than the widest window).
pub(crate) fn spawn_board(
    gateway: Gateway,
    base: &ClientConfig,
    topic: &str,
    group_id: &str,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, rdkafka::error::KafkaError> {
    let group_id = format!("{group_id}-board-{}", uuid::Uuid::new_v4().simple());
    // Metrics are pushed at most once a second: no need to poll the broker more often.
    let config = consumer_config(base, &group_id, 500);
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[topic])?;
    tracing::info!(topic, group_id, "gateway reading seller metrics");
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                received = consumer.recv() => match received {
                    Err(e) => {
                        tracing::warn!(error = %e, "seller-metrics consumer error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Ok(message) => {
                        match decode_json::<SellerMetrics>(message.payload(), "seller-metrics snapshot") {
                            Ok(snapshot) => {
                                gateway.apply_seller_metrics(snapshot);
                            }
                            Err(error) => {
                                gateway.shared.metrics.undecodable.inc();
                                tracing::warn!(partition = message.partition(), offset = message.offset(), reason = %error.reason(), %error, "skipping a record of the seller-metrics topic that is not a snapshot");
                            }
                        }
                    }
                },
            }
        }
        tracing::info!("gateway seller-metrics consumer stopped");
    }))
}

fn decode(payload: Option<&[u8]>) -> Result<Notification, RecordError> {
    decode_json(payload, "notification")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_that_are_not_notifications_are_rejected_with_a_reason() {
        use vigia_schemas::DeadLetterReason;
        assert_eq!(
            decode(None).unwrap_err().reason(),
            DeadLetterReason::EmptyRecord
        );
        assert_eq!(
            decode(Some(&[0xff])).unwrap_err().reason(),
            DeadLetterReason::NotUtf8
        );
        assert!(decode(Some(b"{")).is_err());
        let e = decode(Some(br#"{"id":"x"}"#)).unwrap_err();
        assert_eq!(e.reason(), DeadLetterReason::InvalidRecord);
        assert!(e.to_string().starts_with("not a valid notification"), "{e}");
        let ok = br#"{"id":"6f1b3c52-8a4e-5d1f-9b27-3e440c81a95d","tenant_id":1,"type":"hot_lead",
            "priority":"urgent","audience":{"role":"ceo"},"title":"t","message":"m",
            "created_at":"2026-02-27T15:00:00Z"}"#;
        assert_eq!(decode(Some(ok)).unwrap().tenant_id, 1);
    }
}
