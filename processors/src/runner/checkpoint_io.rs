//! Checkpoints to and from Kafka: reading what the tail of a partition's checkpoint partition
//! holds, writing a checkpoint's pieces, deleting refused checkpoints (tombstones), and the
//! test-only failpoint that crashes the process half-way through a write. The decisions — keys
//! and slots, which checkpoint is whole ([`checkpoint::gather`]), when to write
//! ([`checkpoint::Schedule`]), which to load ([`crate::recovery`]) — are pure, elsewhere.
//!
//! Checkpoints of `events` partition `p` go to partition `p % n` of the `checkpoints` topic
//! (`n` its partition count; the binary creates it with as many partitions as `events`), so a
//! recovery reads only the tail of one partition: the two latest checkpoints are at its end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::KAFKA_TIMEOUT;
use crate::checkpoint::{self, CheckpointMeta, Found};
use crate::engine::PartitionEngine;
use crate::metrics::{Metrics, PartitionLabel};

/// Records read from the tail first; then twice as many before those, and so on, until both
/// slots are found whole or the partition's beginning is reached. Each record is read once: a
/// checkpoint is hundreds of pieces of up to 900 KB.
const FIRST_WINDOW: i64 = 64;

/// Environment variable of the failpoint (tests only): `N` or `N:K` — during the `N`-th
/// checkpoint this process writes (1-based) that has more than one piece, write its first `K`
/// pieces (default: half), wait for Kafka to acknowledge them, then abort the process, as a
/// `kill -9` at that moment would.
pub(super) const FAILPOINT_ENV: &str = "VIGIA_FAILPOINT_CHECKPOINT_ABORT";

/// The failpoint, as configured by [`FAILPOINT_ENV`].
#[derive(Debug)]
pub(super) struct Failpoint {
    nth: u64,
    pieces: Option<usize>,
    seen: AtomicU64,
}

impl Failpoint {
    pub(super) fn from_env() -> Option<Arc<Failpoint>> {
        let value = std::env::var(FAILPOINT_ENV).ok()?;
        let (nth, pieces) = match value.split_once(':') {
            Some((n, k)) => (n.trim().parse().ok()?, Some(k.trim().parse().ok()?)),
            None => (value.trim().parse().ok()?, None),
        };
        tracing::warn!(
            "{FAILPOINT_ENV}={value}: this process aborts while writing its checkpoint #{nth} \
             (a test setting; never set it in production)"
        );
        Some(Arc::new(Failpoint {
            nth,
            pieces,
            seen: AtomicU64::new(0),
        }))
    }

    /// How many pieces to write before aborting, if this write is the one.
    fn pieces_before_abort(&self, count: usize) -> Option<usize> {
        if count < 2 {
            return None;
        }
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        (n == self.nth).then(|| self.pieces.unwrap_or(count / 2).clamp(1, count - 1))
    }
}

/// The partition count of the checkpoints topic, or `None` if it does not exist.
pub(super) fn partition_count(consumer: &BaseConsumer, topic: &str) -> KafkaResult<Option<i32>> {
    let md = consumer.fetch_metadata(Some(topic), KAFKA_TIMEOUT)?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as i32)
        .filter(|n| *n > 0))
}

/// The checkpoint partition holding `partition`'s checkpoints.
pub(super) fn home(partition: i32, checkpoint_partitions: i32) -> i32 {
    partition.rem_euclid(checkpoint_partitions)
}

/// The checkpoints of `partition` in the tail of its checkpoint partition (blocking).
pub(super) fn read(
    consumer: &BaseConsumer,
    topic: &str,
    checkpoint_partitions: i32,
    partition: i32,
) -> KafkaResult<Vec<Found>> {
    let cp = home(partition, checkpoint_partitions);
    let (low, high) = consumer.fetch_watermarks(topic, cp, KAFKA_TIMEOUT)?;
    let mut records = Vec::new();
    let mut end = high;
    let mut window = FIRST_WINDOW;
    loop {
        let start = end.saturating_sub(window).max(low);
        let mut older = read_range(consumer, topic, cp, start, end)?;
        older.append(&mut records);
        records = older;
        end = start;
        let found = checkpoint::gather(partition, &records);
        let whole = found.iter().filter(|f| !f.facts.unreadable).count();
        if start <= low || whole >= usize::from(checkpoint::SLOTS) {
            return Ok(found);
        }
        window = window.saturating_mul(2);
    }
}

/// Every record of `partition` in `start..high` (key, value), in log order.
fn read_range(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    start: i64,
    high: i64,
) -> KafkaResult<Vec<checkpoint::StoredRecord>> {
    let mut out = Vec::new();
    if start >= high {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(start))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + 4 * KAFKA_TIMEOUT;
    let result = loop {
        if Instant::now() > deadline {
            break Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::RequestTimedOut,
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if m.partition() != partition || m.offset() < start {
                    continue;
                }
                // Compaction leaves gaps: the next record may already be one read before.
                if m.offset() >= high {
                    break Ok(());
                }
                out.push((
                    m.key().map(<[u8]>::to_vec).unwrap_or_default(),
                    m.payload().map(<[u8]>::to_vec),
                ));
                if m.offset() + 1 >= high {
                    break Ok(());
                }
            }
            // Compaction leaves gaps: the end is reached when the consumer says so.
            Some(Err(KafkaError::PartitionEOF(p))) if p == partition => break Ok(()),
            Some(Err(e)) => break Err(e),
            None => {}
        }
    };
    let _ = consumer.unassign();
    result.map(|()| out)
}

/// A checkpoint ready to write.
pub(super) struct Pending {
    pub meta: CheckpointMeta,
    pub slot: u8,
    /// A copy of the partition's engine at `meta.offset`, to serialize.
    pub engine: PartitionEngine,
    /// What making the copy took (part of the checkpoint's cost).
    pub copy_took: Duration,
    /// The largest piece ([`checkpoint::split`]).
    pub piece_bytes: usize,
}

/// A checkpoint serialized and split.
struct Pieces {
    meta: CheckpointMeta,
    slot: u8,
    /// The serialized state's size.
    bytes: usize,
    pieces: Vec<Vec<u8>>,
}

impl Pending {
    fn serialize(self) -> Result<Pieces, checkpoint::CheckpointError> {
        let state = self.engine.snapshot();
        let pieces = checkpoint::split(self.meta, &state, self.piece_bytes)?;
        Ok(Pieces {
            meta: self.meta,
            slot: self.slot,
            bytes: state.len(),
            pieces,
        })
    }
}

/// Serializes `pending` (on a blocking thread) and writes its pieces to the checkpoint
/// partition, in the background; counts the outcome and returns what copying and serializing
/// cost (`None` if it could not be serialized). With the failpoint armed for this write, writes
/// some pieces and aborts the process.
pub(super) fn spawn_write(
    producer: FutureProducer,
    topic: String,
    checkpoint_partition: i32,
    pending: Pending,
    metrics: Metrics,
    failpoint: Option<Arc<Failpoint>>,
) -> tokio::task::JoinHandle<Option<Duration>> {
    tokio::spawn(async move {
        let partition = pending.meta.partition;
        let copy_took = pending.copy_took;
        let started = Instant::now();
        let write = match tokio::task::spawn_blocking(move || pending.serialize()).await {
            Ok(Ok(pieces)) => pieces,
            Ok(Err(e)) => {
                // Only with a piece size the config check refuses; never stop over it.
                metrics.checkpoint_write_failures.inc();
                tracing::error!(partition, "cannot split a checkpoint: {e}");
                return None;
            }
            Err(e) => {
                metrics.checkpoint_write_failures.inc();
                tracing::error!(partition, "serializing a checkpoint failed: {e}");
                return None;
            }
        };
        let cost = copy_took + started.elapsed();
        let partition = write.meta.partition;
        let count = write.pieces.len();
        let abort_after = failpoint.and_then(|f| f.pieces_before_abort(count));
        let mut deliveries = Vec::with_capacity(count);
        for (index, piece) in write.pieces.iter().enumerate() {
            if abort_after == Some(index) {
                break;
            }
            let key = checkpoint::piece_key(partition, write.slot, index as u32);
            let record = FutureRecord::<[u8], [u8]>::to(&topic)
                .partition(checkpoint_partition)
                .key(&key)
                .payload(piece.as_slice());
            deliveries.push(enqueue(&producer, record).await);
        }
        let mut failed = None;
        for delivery in deliveries {
            if let Err(e) = settled(delivery).await {
                failed.get_or_insert(e);
            }
        }
        if let Some(k) = abort_after {
            tracing::error!(
                partition,
                offset = write.meta.offset,
                "failpoint {FAILPOINT_ENV}: aborting after {k} of {count} checkpoint pieces"
            );
            std::process::abort();
        }
        match failed {
            None => {
                metrics.checkpoints_written.inc();
                metrics
                    .checkpoint_bytes
                    .get_or_create(&PartitionLabel { partition })
                    .set(write.bytes as i64);
                tracing::debug!(
                    partition,
                    offset = write.meta.offset,
                    slot = write.slot,
                    bytes = write.bytes,
                    pieces = count,
                    cost_ms = cost.as_millis() as u64,
                    "checkpoint written"
                );
            }
            Some(e) => {
                metrics.checkpoint_write_failures.inc();
                tracing::warn!(
                    partition,
                    offset = write.meta.offset,
                    "checkpoint not written ({e}); recovery uses the previous one"
                );
            }
        }
        Some(cost)
    })
}

/// Deletes a checkpoint (tombstones for its keys), in the background: one refused because it is
/// after the committed offset or holds undelivered clock outputs must never be loaded later,
/// when a commit has passed it (its state is of another run, not the one that delivered).
pub(super) fn spawn_delete(
    producer: FutureProducer,
    topic: String,
    checkpoint_partition: i32,
    keys: Vec<Vec<u8>>,
) {
    tokio::spawn(async move {
        let mut deliveries = Vec::with_capacity(keys.len());
        for key in &keys {
            let record = FutureRecord::<[u8], [u8]>::to(&topic)
                .partition(checkpoint_partition)
                .key(key);
            deliveries.push(enqueue(&producer, record).await);
        }
        for delivery in deliveries {
            if let Err(e) = settled(delivery).await {
                tracing::warn!("cannot delete a refused checkpoint piece ({e})");
            }
        }
    });
}

/// Hands `record` to the producer now (so records are written in the order enqueued), waiting
/// for room in its queue.
async fn enqueue(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, [u8], [u8]>,
) -> KafkaResult<DeliveryFuture> {
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

async fn settled(delivery: KafkaResult<DeliveryFuture>) -> KafkaResult<()> {
    match delivery?.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(KafkaError::Canceled),
    }
}
