//! The sink's consume → batch → write → commit loop (see the crate docs for why it is
//! exactly-once).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vigia_schemas::{
    dead_letter_key, decode_event, decode_json, DeadLetter, DeadLetterReason, LeadScore,
    Notification, Origin, RecordError, ResponseTimeSample, SellerMetrics, Topics,
};

use crate::rows::{
    DeadLetterRow, EventRow, KafkaOrigin, LeadScoreRow, NotificationRow, ResponseTimeRow,
    SellerMetricsRow, SinkRow,
};
use crate::writer::{WriteOutcome, Writer};
use crate::{Config, SinkError};

/// Longest a flush keeps retrying before it goes back to polling Kafka (with consumption paused):
/// well below librdkafka's `max.poll.interval.ms` (5 min), after which the group would give this
/// member's partitions to another one while it still holds their rows.
const FLUSH_BUDGET: Duration = Duration::from_secs(10);
/// How long shutdown may spend writing what is batched before giving up (the records are then
/// re-read at the next start, nothing is lost).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Delivery timeout of dead letters (librdkafka `message.timeout.ms`): within the flush budget.
const DEAD_LETTER_TIMEOUT_MS: &str = "8000";

/// Which of the consumed topics a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Events,
    Notifications,
    ResponseTimes,
    LeadScores,
    SellerMetrics,
    DeadLetters,
}

impl Source {
    fn of(topics: &Topics, topic: &str) -> Option<Source> {
        [
            (&topics.events, Source::Events),
            (&topics.notifications, Source::Notifications),
            (&topics.response_times, Source::ResponseTimes),
            (&topics.lead_scores, Source::LeadScores),
            (&topics.seller_metrics, Source::SellerMetrics),
            (&topics.dead_letters, Source::DeadLetters),
        ]
        .into_iter()
        .find(|(name, _)| name.as_str() == topic)
        .map(|(_, s)| s)
    }
}

/// A decoded record, ready for its table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decoded {
    Event(EventRow),
    Notification(NotificationRow),
    ResponseTime(ResponseTimeRow),
    LeadScore(LeadScoreRow),
    SellerMetrics(SellerMetricsRow),
    DeadLetter(DeadLetterRow),
}

/// Turns one record's payload into a row, or says why it cannot.
pub(crate) fn decode(
    source: Source,
    payload: Option<&[u8]>,
    timestamp_ms: Option<i64>,
    origin: KafkaOrigin,
) -> Result<Decoded, RecordError> {
    Ok(match source {
        Source::Events => Decoded::Event(EventRow::new(&decode_event(payload)?, origin)),
        Source::Notifications => Decoded::Notification(NotificationRow::new(
            &decode_json::<Notification>(payload, "notification")?,
            origin,
        )),
        Source::ResponseTimes => Decoded::ResponseTime(ResponseTimeRow::new(
            &decode_json::<ResponseTimeSample>(payload, "response-time sample")?,
            origin,
        )),
        Source::LeadScores => Decoded::LeadScore(LeadScoreRow::new(
            &decode_json::<LeadScore>(payload, "lead score")?,
            origin,
        )),
        Source::SellerMetrics => Decoded::SellerMetrics(SellerMetricsRow::new(
            &decode_json::<SellerMetrics>(payload, "seller-metrics snapshot")?,
            origin,
        )),
        Source::DeadLetters => Decoded::DeadLetter(DeadLetterRow::new(
            &decode_json::<DeadLetter>(payload, "dead letter")?,
            timestamp_ms.unwrap_or(0),
            origin,
        )),
    })
}

/// Exponential backoff between retries of a failed write.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff {
            next: BACKOFF_INITIAL,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_INITIAL;
    }
}

/// What has been consumed and not committed yet.
#[derive(Default)]
struct Pending {
    events: Vec<EventRow>,
    notifications: Vec<NotificationRow>,
    response_times: Vec<ResponseTimeRow>,
    lead_scores: Vec<LeadScoreRow>,
    seller_metrics: Vec<SellerMetricsRow>,
    dead_letter_rows: Vec<DeadLetterRow>,
    /// Undecodable records, to send to the dead-letter topic.
    to_dead_letter: Vec<Letter>,
    /// Next offset to commit per (topic, partition).
    offsets: BTreeMap<(String, i32), i64>,
    /// When the oldest uncommitted record was consumed.
    since: Option<Instant>,
}

impl Pending {
    fn largest_table(&self) -> usize {
        [
            self.events.len(),
            self.notifications.len(),
            self.response_times.len(),
            self.lead_scores.len(),
            self.seller_metrics.len(),
            self.dead_letter_rows.len(),
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }

    fn rows(&self) -> usize {
        self.events.len()
            + self.notifications.len()
            + self.response_times.len()
            + self.lead_scores.len()
            + self.seller_metrics.len()
            + self.dead_letter_rows.len()
    }

    fn push(&mut self, d: Decoded) {
        match d {
            Decoded::Event(r) => self.events.push(r),
            Decoded::Notification(r) => self.notifications.push(r),
            Decoded::ResponseTime(r) => self.response_times.push(r),
            Decoded::LeadScore(r) => self.lead_scores.push(r),
            Decoded::SellerMetrics(r) => self.seller_metrics.push(r),
            Decoded::DeadLetter(r) => self.dead_letter_rows.push(r),
        }
    }
}

/// A dead letter waiting to be sent.
struct Letter {
    key: Vec<u8>,
    json: String,
    reason: DeadLetterReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkipLabels {
    table: String,
    reason: String,
}

#[derive(Clone)]
struct Metrics {
    consumed: Counter,
    inserted: Family<TableLabel, Counter>,
    skipped: Family<SkipLabels, Counter>,
    write_errors: Family<TableLabel, Counter>,
    dead_letters: Family<ReasonLabel, Counter>,
    dead_letters_lost: Family<ReasonLabel, Counter>,
    commits: Counter,
    commit_errors: Counter,
    paused: Gauge,
    flush_seconds: Histogram,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            consumed: Counter::default(),
            inserted: Family::default(),
            skipped: Family::default(),
            write_errors: Family::default(),
            dead_letters: Family::default(),
            dead_letters_lost: Family::default(),
            commits: Counter::default(),
            commit_errors: Counter::default(),
            paused: Gauge::default(),
            flush_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        };
        registry.register(
            "vigia_sink_records_consumed",
            "Kafka records read by the ClickHouse sink",
            m.consumed.clone(),
        );
        registry.register(
            "vigia_sink_rows_inserted",
            "Rows inserted into ClickHouse, per table",
            m.inserted.clone(),
        );
        registry.register(
            "vigia_sink_rows_skipped",
            "Rows not inserted because their id was already stored (reason=already_stored) or \
             earlier in the same batch (reason=duplicate_in_batch)",
            m.skipped.clone(),
        );
        registry.register(
            "vigia_sink_write_errors",
            "Failed batch writes to ClickHouse (each is retried), per table",
            m.write_errors.clone(),
        );
        registry.register(
            "vigia_sink_dead_letters",
            "Undecodable records the sink sent to the dead-letter topic, by reason",
            m.dead_letters.clone(),
        );
        registry.register(
            "vigia_sink_dead_letters_lost",
            "Dead letters Kafka refused for good (skipped, only counted and logged), by reason of \
             the refused record",
            m.dead_letters_lost.clone(),
        );
        registry.register(
            "vigia_sink_commits",
            "Kafka offset commits after a written batch",
            m.commits.clone(),
        );
        registry.register(
            "vigia_sink_commit_errors",
            "Failed Kafka offset commits (the records are re-read and skipped as stored)",
            m.commit_errors.clone(),
        );
        registry.register(
            "vigia_sink_backpressure",
            "1 while consumption is paused because ClickHouse does not take writes",
            m.paused.clone(),
        );
        registry.register(
            "vigia_sink_flush_seconds",
            "Time to write one batch to every table and commit it",
            m.flush_seconds.clone(),
        );
        m
    }

    fn record(&self, table: &str, o: &WriteOutcome) {
        let label = |reason: &str| SkipLabels {
            table: table.to_string(),
            reason: reason.to_string(),
        };
        self.inserted
            .get_or_create(&TableLabel {
                table: table.to_string(),
            })
            .inc_by(o.inserted as u64);
        if o.already_stored > 0 {
            self.skipped
                .get_or_create(&label("already_stored"))
                .inc_by(o.already_stored as u64);
        }
        if o.duplicates_in_batch > 0 {
            self.skipped
                .get_or_create(&label("duplicate_in_batch"))
                .inc_by(o.duplicates_in_batch as u64);
        }
    }
}

/// Counts rebalances that take partitions away, so the loop can drop what it read from them.
struct SinkContext {
    revocations: Arc<AtomicU64>,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "sink: partitions revoked");
                self.revocations.fetch_add(1, Ordering::SeqCst);
            }
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "sink: rebalance error; partitions are unassigned");
                self.revocations.fetch_add(1, Ordering::SeqCst);
            }
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(partitions = tpl.count(), "sink: partitions assigned");
            // A fresh assignment starts unpaused even if the previous one was paused for
            // backpressure: it resumes from the committed offsets, with nothing batched.
            if let Err(e) = consumer.resume(tpl) {
                tracing::debug!(error = %e, "sink: resuming newly assigned partitions");
            }
            self.revocations.fetch_add(1, Ordering::SeqCst);
        }
    }
}

enum Flushed {
    /// Everything pending is written and (unless the commit failed) committed.
    Done,
    /// ClickHouse or Kafka refused within the budget; what is left stays pending.
    Deferred(SinkError),
}

/// The Kafka → ClickHouse sink stage. Create with [`Sink::new`], then [`Sink::run`].
pub struct Sink {
    cfg: Config,
    topics: Topics,
    consumer: Arc<StreamConsumer<SinkContext>>,
    producer: FutureProducer,
    writer: Writer,
    metrics: Metrics,
    revocations: Arc<AtomicU64>,
}

impl Sink {
    /// Creates the consumer (subscribed to the events, notifications, response_times,
    /// lead_scores, seller_metrics and dead_letters topics) and the dead-letter producer, and registers the
    /// `vigia_sink_*` metrics. `kafka` is the base client configuration (bootstrap.servers...).
    /// Does not contact ClickHouse: run [`crate::migrate`] first.
    pub fn new(
        cfg: Config,
        kafka: &ClientConfig,
        topics: &Topics,
        registry: &mut Registry,
    ) -> Result<Sink, SinkError> {
        cfg.validate()?;
        let revocations = Arc::new(AtomicU64::new(0));
        let mut consumer_config = kafka.clone();
        consumer_config
            .set("group.id", &cfg.group_id)
            // A member that dies without leaving (kill -9) holds its partitions until its session
            // times out: librdkafka's 45 s default would stall a restarted stage that long.
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Eager rebalancing: a revocation takes every partition and the next assignment
            // restarts from the committed offsets, which is what lets the loop simply drop its
            // uncommitted rows when partitions are revoked.
            .set("partition.assignment.strategy", "range,roundrobin");
        let consumer: StreamConsumer<SinkContext> = consumer_config
            .create_with_context(SinkContext {
                revocations: revocations.clone(),
            })
            .map_err(|e| SinkError::kafka("create the sink consumer", e))?;
        let subscribed = [
            topics.events.as_str(),
            topics.notifications.as_str(),
            topics.response_times.as_str(),
            topics.lead_scores.as_str(),
            topics.seller_metrics.as_str(),
            topics.dead_letters.as_str(),
        ];
        consumer
            .subscribe(&subscribed)
            .map_err(|e| SinkError::kafka(format!("subscribe to {subscribed:?}"), e))?;

        let producer: FutureProducer = kafka
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", DEAD_LETTER_TIMEOUT_MS)
            .create()
            .map_err(|e| SinkError::kafka("create the dead-letter producer", e))?;

        Ok(Sink {
            writer: Writer::new(&cfg)?,
            cfg,
            topics: topics.clone(),
            consumer: Arc::new(consumer),
            producer,
            metrics: Metrics::register(registry),
            revocations,
        })
    }

    /// Consumes until `shutdown` is cancelled, then writes and commits what is batched (for up
    /// to 10 s; if ClickHouse still refuses, those records stay uncommitted and are read again at
    /// the next start) and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SinkError> {
        tracing::info!(
            group = %self.cfg.group_id,
            database = %self.cfg.database,
            batch_size = self.cfg.batch_size,
            flush_interval = ?self.cfg.flush_interval,
            "ClickHouse sink started"
        );
        let mut pending = Pending::default();
        let mut seen_revocations = self.revocations.load(Ordering::SeqCst);
        let mut backoff = Backoff::new();
        // Set while a flush has been deferred: when to try again. Consumption is paused then.
        let mut retry_at: Option<Instant> = None;
        loop {
            let flush_at = retry_at.or(pending.since.map(|t| t + self.cfg.flush_interval));
            let flush_now = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = sleep_until(flush_at) => true,
                received = self.consumer.recv() => {
                    self.drop_if_revoked(&mut pending, &mut seen_revocations, &mut retry_at);
                    match received {
                        Ok(message) => self.accept(&message, &mut pending),
                        Err(e) => tracing::warn!(error = %e, "sink: Kafka consumer error"),
                    }
                    retry_at.is_none() && pending.largest_table() >= self.cfg.batch_size
                }
            };
            if !flush_now {
                continue;
            }
            self.drop_if_revoked(&mut pending, &mut seen_revocations, &mut retry_at);
            match self
                .flush(&mut pending, Instant::now() + FLUSH_BUDGET)
                .await
            {
                Flushed::Done => {
                    if retry_at.take().is_some() {
                        tracing::info!("sink: ClickHouse takes writes again; resuming consumption");
                        self.set_paused(false);
                    }
                    backoff.reset();
                }
                Flushed::Deferred(e) => {
                    if retry_at.is_none() {
                        tracing::warn!(
                            error = %e,
                            rows = pending.rows(),
                            "sink: cannot write to ClickHouse; pausing consumption and retrying"
                        );
                        self.set_paused(true);
                    }
                    retry_at = Some(Instant::now() + backoff.next_delay());
                }
            }
        }

        self.drop_if_revoked(&mut pending, &mut seen_revocations, &mut retry_at);
        if pending.offsets.is_empty() {
            tracing::info!("ClickHouse sink stopped");
            return Ok(());
        }
        match self
            .flush(&mut pending, Instant::now() + SHUTDOWN_GRACE)
            .await
        {
            Flushed::Done => tracing::info!("ClickHouse sink stopped after a final flush"),
            Flushed::Deferred(e) => tracing::error!(
                error = %e,
                rows = pending.rows(),
                "ClickHouse sink stopped without writing its last batch; those records are not \
                 committed and will be read again at the next start"
            ),
        }
        Ok(())
    }

    /// After a rebalance took partitions away, what was read from them is not this member's to
    /// write any more (another member may be writing it now), and the next assignment re-reads
    /// from the committed offsets: forget it.
    fn drop_if_revoked(
        &self,
        pending: &mut Pending,
        seen: &mut u64,
        retry_at: &mut Option<Instant>,
    ) {
        let now = self.revocations.load(Ordering::SeqCst);
        if now != *seen {
            *seen = now;
            if !pending.offsets.is_empty() {
                tracing::info!(
                    rows = pending.rows(),
                    "sink: rebalance; dropping uncommitted records, they will be read again"
                );
            }
            *pending = Pending::default();
            if retry_at.take().is_some() {
                self.metrics.paused.set(0);
            }
        }
    }

    fn set_paused(&self, paused: bool) {
        let assignment = match self.consumer.assignment() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "sink: cannot read the partition assignment");
                return;
            }
        };
        let result = if paused {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, paused, "sink: cannot pause/resume consumption");
        }
        self.metrics.paused.set(paused as i64);
    }

    fn accept(&self, message: &BorrowedMessage<'_>, pending: &mut Pending) {
        self.metrics.consumed.inc();
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        pending
            .offsets
            .insert((topic.to_string(), partition), offset + 1);
        pending.since.get_or_insert_with(Instant::now);
        let origin = KafkaOrigin { partition, offset };
        let timestamp_ms = message.timestamp().to_millis();
        let decoded = match Source::of(&self.topics, topic) {
            None => Err((
                DeadLetterReason::UnknownTopic,
                format!("the sink does not consume topic {topic}"),
            )),
            Some(source) => decode(source, message.payload(), timestamp_ms, origin)
                .map_err(|e| (e.reason(), e.to_string())),
        };
        let (reason, error) = match decoded {
            Ok(row) => return pending.push(row),
            Err(refused) => refused,
        };
        let letter = DeadLetter::of_record(
            "sink",
            &Origin {
                topic,
                partition,
                offset,
                timestamp: timestamp_ms.and_then(chrono::DateTime::from_timestamp_millis),
                key: message.key(),
            },
            reason,
            &error,
            message.payload().unwrap_or_default(),
        );
        tracing::warn!(topic, partition, offset, %reason, error = %letter.error, "sink: dead-lettering a record");
        pending.to_dead_letter.push(Letter {
            key: dead_letter_key(message.key()),
            json: letter.to_json(),
            reason,
        });
    }

    /// Sends pending dead letters, writes every table's pending rows, then commits the offsets
    /// of everything consumed. Retries with backoff until `deadline`.
    async fn flush(&self, pending: &mut Pending, deadline: Instant) -> Flushed {
        let started = Instant::now();
        let mut backoff = Backoff::new();
        while let Some(letter) = pending.to_dead_letter.first() {
            let record = FutureRecord::<[u8], str>::to(&self.topics.dead_letters)
                .payload(&letter.json)
                .key(&letter.key);
            let label = ReasonLabel {
                reason: letter.reason.as_str(),
            };
            match self.producer.send(record, Duration::from_secs(1)).await {
                Ok(_) => {
                    self.metrics.dead_letters.get_or_create(&label).inc();
                    pending.to_dead_letter.remove(0);
                }
                // Dead letters are bounded far below Kafka's record limit, so this takes a broker
                // configured to refuse them: retrying could only stall every partition.
                Err((e, _)) if refused_for_good(&e) => {
                    self.metrics.dead_letters_lost.get_or_create(&label).inc();
                    tracing::error!(error = %e, bytes = letter.json.len(), "sink: Kafka refused a dead letter for good; skipping it (check the dead_letters topic's max.message.bytes)");
                    pending.to_dead_letter.remove(0);
                }
                Err((e, _)) => {
                    let e = SinkError::kafka("send a dead letter", e);
                    if let Err(e) = wait_or_give_up(e, &mut backoff, deadline).await {
                        return Flushed::Deferred(e);
                    }
                }
            }
        }
        if let Err(e) = self.write_table(&mut pending.events, deadline).await {
            return Flushed::Deferred(e);
        }
        if let Err(e) = self.write_table(&mut pending.notifications, deadline).await {
            return Flushed::Deferred(e);
        }
        if let Err(e) = self
            .write_table(&mut pending.response_times, deadline)
            .await
        {
            return Flushed::Deferred(e);
        }
        if let Err(e) = self.write_table(&mut pending.lead_scores, deadline).await {
            return Flushed::Deferred(e);
        }
        if let Err(e) = self
            .write_table(&mut pending.seller_metrics, deadline)
            .await
        {
            return Flushed::Deferred(e);
        }
        if let Err(e) = self
            .write_table(&mut pending.dead_letter_rows, deadline)
            .await
        {
            return Flushed::Deferred(e);
        }
        self.commit(pending).await;
        self.metrics
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
        Flushed::Done
    }

    /// Writes one table's pending rows (one INSERT), retrying until `deadline`; clears them once
    /// written.
    async fn write_table<R: SinkRow>(
        &self,
        rows: &mut Vec<R>,
        deadline: Instant,
    ) -> Result<(), SinkError> {
        let mut backoff = Backoff::new();
        while !rows.is_empty() {
            match self.writer.write(rows).await {
                Ok(outcome) => {
                    self.metrics.record(R::TABLE, &outcome);
                    tracing::debug!(table = R::TABLE, ?outcome, "sink: batch written");
                    rows.clear();
                }
                Err(e) => {
                    self.metrics
                        .write_errors
                        .get_or_create(&TableLabel {
                            table: R::TABLE.to_string(),
                        })
                        .inc();
                    tracing::debug!(table = R::TABLE, error = %e, "sink: write failed; retrying");
                    wait_or_give_up(e, &mut backoff, deadline).await?;
                }
            }
        }
        Ok(())
    }

    /// Commits the offsets of everything consumed so far (all of it is written). A failed
    /// commit is not retried here: the offsets stay pending and go with the next commit, and
    /// if this member stops first, the records are re-read and found already stored.
    async fn commit(&self, pending: &mut Pending) {
        if pending.offsets.is_empty() {
            pending.since = None;
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &pending.offsets {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                tracing::warn!(error = %e, topic, partition, "sink: bad offset to commit");
            }
        }
        let consumer = self.consumer.clone();
        let result =
            tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync)).await;
        match result {
            Ok(Ok(())) => {
                self.metrics.commits.inc();
                pending.offsets.clear();
                pending.since = None;
            }
            Ok(Err(e)) => {
                self.metrics.commit_errors.inc();
                tracing::warn!(error = %e, "sink: offset commit failed; retrying with the next flush");
                pending.since = Some(Instant::now());
            }
            Err(e) => {
                self.metrics.commit_errors.inc();
                tracing::warn!(error = %e, "sink: offset commit task failed");
                pending.since = Some(Instant::now());
            }
        }
    }
}

/// Whether Kafka refused a record for what it is (too large, invalid), so that sending it again
/// cannot succeed; anything else (broker away, timeout) is worth retrying.
fn refused_for_good(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as Code;
    matches!(
        e.rdkafka_error_code(),
        Some(
            Code::MessageSizeTooLarge
                | Code::InvalidMessageSize
                | Code::MessageBatchTooLarge
                | Code::InvalidMessage
                | Code::InvalidRecord
                | Code::InvalidTimestamp
                | Code::PolicyViolation
                | Code::BadMessage
        )
    )
}

/// Sleeps for the next backoff delay, or returns the error if that would pass `deadline`.
async fn wait_or_give_up(
    error: SinkError,
    backoff: &mut Backoff,
    deadline: Instant,
) -> Result<(), SinkError> {
    let delay = backoff.next_delay();
    if Instant::now() + delay > deadline {
        return Err(error);
    }
    tokio::time::sleep(delay).await;
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs the sink until `shutdown` is cancelled: [`Sink::new`] then [`Sink::run`].
pub async fn run(
    cfg: Config,
    kafka: &ClientConfig,
    topics: &Topics,
    registry: &mut Registry,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    Sink::new(cfg, kafka, topics, registry)?.run(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    const AT: KafkaOrigin = KafkaOrigin {
        partition: 1,
        offset: 9,
    };

    /// The root binary spawns the sink on a multi-threaded runtime.
    #[allow(dead_code)]
    fn run_is_spawnable(sink: Sink, shutdown: CancellationToken) {
        tokio::spawn(sink.run(shutdown));
    }

    #[test]
    fn topics_map_to_their_source() {
        let t = Topics::with_prefix("p.");
        assert_eq!(Source::of(&t, "p.events"), Some(Source::Events));
        assert_eq!(Source::of(&t, "p.lead_scores"), Some(Source::LeadScores));
        assert_eq!(
            Source::of(&t, "p.seller_metrics"),
            Some(Source::SellerMetrics)
        );
        assert_eq!(Source::of(&t, "p.dead_letters"), Some(Source::DeadLetters));
        assert_eq!(Source::of(&t, "events"), None);
    }

    #[test]
    fn decodes_each_topic_into_its_row() {
        let e = json!({"event_id": "0b9a3c52-8a4e-4d1f-9b27-3e440c81a95d", "tenant_id": 4,
            "type": "conversation.closed", "occurred_at": "2026-02-27T15:00:00Z",
            "conversation_id": "c"});
        let Ok(Decoded::Event(r)) =
            decode(Source::Events, Some(e.to_string().as_bytes()), None, AT)
        else {
            panic!("event not decoded")
        };
        assert_eq!((r.tenant_id, r.kafka_offset), (4, 9));

        let s = ResponseTimeSample {
            id: Uuid::from_u128(1),
            tenant_id: 4,
            conversation_id: "c".into(),
            seller_id: 2,
            customer_event_id: Uuid::from_u128(2),
            reply_event_id: Uuid::from_u128(3),
            waiting_since: "2026-02-27T15:00:00Z".parse().unwrap(),
            replied_at: "2026-02-27T15:01:00Z".parse().unwrap(),
            response_seconds: 60.0,
            retracts: None,
        };
        let bytes = serde_json::to_vec(&s).unwrap();
        assert!(matches!(
            decode(Source::ResponseTimes, Some(&bytes), None, AT),
            Ok(Decoded::ResponseTime(r)) if r.id == s.id
        ));

        let d = DeadLetter::of_record(
            "processors",
            &Origin {
                topic: "t",
                partition: 0,
                offset: 1,
                timestamp: None,
                key: None,
            },
            DeadLetterReason::TooLate,
            &"x",
            b"y",
        );
        let bytes = serde_json::to_vec(&d).unwrap();
        assert!(matches!(
            decode(Source::DeadLetters, Some(&bytes), Some(5_000), AT),
            Ok(Decoded::DeadLetter(r)) if r.failed_at == 5
        ));
    }

    #[test]
    fn undecodable_records_say_why() {
        let e = decode(Source::Events, Some(b"{\"type\": \"x\"}"), None, AT).unwrap_err();
        assert_eq!(e.reason(), DeadLetterReason::InvalidEvent);
        assert!(e.to_string().contains("event_id"), "{e}");
        let e = decode(Source::Notifications, Some(b"[]"), None, AT).unwrap_err();
        assert!(e.to_string().starts_with("not a valid notification"), "{e}");
        let e = decode(Source::LeadScores, Some(&[0xff, 0xfe]), None, AT).unwrap_err();
        assert_eq!(e.reason(), DeadLetterReason::NotUtf8);
        let e = decode(Source::SellerMetrics, None, None, AT).unwrap_err();
        assert_eq!(e.reason(), DeadLetterReason::EmptyRecord);
    }

    #[test]
    fn only_refusals_of_the_record_itself_are_for_good() {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};
        assert!(refused_for_good(&KafkaError::MessageProduction(
            Code::MessageSizeTooLarge
        )));
        assert!(refused_for_good(&KafkaError::MessageProduction(
            Code::InvalidRecord
        )));
        assert!(!refused_for_good(&KafkaError::MessageProduction(
            Code::MessageTimedOut
        )));
        assert!(!refused_for_good(&KafkaError::MessageProduction(
            Code::BrokerTransportFailure
        )));
    }

    #[test]
    fn backoff_doubles_up_to_a_ceiling_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<u128> = (0..9).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(
            delays,
            vec![100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
        );
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_INITIAL);
    }

    #[test]
    fn pending_tracks_the_largest_table() {
        let mut p = Pending::default();
        let e = json!({"event_id": "0b9a3c52-8a4e-4d1f-9b27-3e440c81a95d", "tenant_id": 4,
            "type": "conversation.closed", "occurred_at": "2026-02-27T15:00:00Z",
            "conversation_id": "c"});
        for _ in 0..3 {
            p.push(decode(Source::Events, Some(e.to_string().as_bytes()), None, AT).unwrap());
        }
        assert_eq!((p.largest_table(), p.rows()), (3, 3));
    }
}
