//! The consumer of the `notifications` topic: each record is decoded, stored if new and, if new,
//! pushed; its offset is stored after the inbox has it and committed asynchronously every second
//! (synchronously on shutdown). After a restart or a rebalance the consumer resumes from the
//! committed offsets; what is delivered again is recognised by the inbox (`insert` returns `None`)
//! and not pushed again.
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
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::ClientConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vigia_schemas::{decode_json, Notification, RecordError, SellerMetrics};

use crate::Gateway;

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
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, rdkafka::error::KafkaError> {
    // Kafka answers a fetch as soon as a record arrives; the wait bounds only an idle fetch.
    let mut config = consumer_config(base, group_id, 500);
    config.set("enable.auto.offset.store", "false");
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[topic])?;
    tracing::info!(topic, group_id, "gateway consuming notifications");
    Ok(tokio::spawn(run(gateway, consumer, shutdown)))
}

async fn run(gateway: Gateway, consumer: StreamConsumer, shutdown: CancellationToken) {
    let mut commit = tokio::time::interval(COMMIT_EVERY);
    commit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut uncommitted = false;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = commit.tick() => {
                if uncommitted {
                    match consumer.commit_consumer_state(CommitMode::Async) {
                        Ok(()) => uncommitted = false,
                        Err(e) => tracing::warn!(error = %e, "cannot commit notification offsets; will retry"),
                    }
                }
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
                            // E.g. the partition was revoked meanwhile; its new owner re-reads it.
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
            tracing::warn!(error = %e, "cannot commit notification offsets at shutdown; they will be re-read (and recognised)");
        }
    }
    tracing::info!("gateway notifications consumer stopped");
}

/// Processes `batch` in order; returns how many of its records were handled (all unless
/// shutdown interrupted it: the offsets of the others must not be stored).
async fn handle_batch(
    gateway: &Gateway,
    batch: &[OwnedMessage],
    shutdown: &CancellationToken,
) -> usize {
    let mut notifications: Vec<Notification> =
        batch.iter().filter_map(|m| decoded(gateway, m)).collect();
    if notifications.len() > 1 {
        let count = notifications.len();
        match gateway.deliver_many(notifications).await {
            Ok(_) => return batch.len(),
            Err(e) => {
                tracing::warn!(error = %e, notifications = count, "cannot store a batch of notifications; storing them one by one")
            }
        }
        // Rare: decoded again rather than cloned for every batch (already counted above).
        notifications = batch
            .iter()
            .filter_map(|m| decode(m.payload()).ok())
            .collect();
    }
    for (i, n) in notifications.into_iter().enumerate() {
        if !handle(gateway, n, shutdown).await {
            // Undecodable records between stored ones are skipped anyway; stop at the first
            // notification not stored.
            return position_of_nth_notification(batch, i);
        }
    }
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
