//! The Kafka I/O around [`PartitionEngine`]: one engine per owned partition of the `events` topic.
//!
//! # Flow
//!
//! Records are consumed in a consumer group ([`Config::group_id`]); each is decoded
//! ([`Event::from_json`]) and applied to its partition's engine; the outputs are produced keyed by
//! tenant id — notifications to `notifications`, response-time samples to `response_times`, lead
//! scores to `lead_scores`, seller-metrics snapshots to `seller_metrics`. A record that is not a valid event, whose `occurred_at` is more than
//! [`Config::max_clock_skew`] after the record's Kafka timestamp, or that the engine finds too late,
//! goes to `dead_letters` as a [`DeadLetter`] (stage `processors`, origin topic/partition/offset,
//! the reason); the partition moves on — a poison record never stalls it.
//!
//! # Errors on one record never stop the stage
//!
//! Dead letters are bounded (see [`vigia_schemas::record`]): they always fit a Kafka record. An
//! output Kafka refuses *for good* — larger than a record (a seller's name of 600 KB in a report
//! written straight to Kafka), or invalid — is replaced by its dead letter (reason
//! `output_too_large` / `output_refused`, `topic` = where it was going), which takes its place in
//! the offset accounting: the offset is committed once the dead letter is acknowledged. A dead
//! letter Kafka refuses for good (only a broker configured below its size) is counted
//! (`vigia_processor_dead_letters_lost_total`) and logged. Other delivery errors (broker away) are
//! retried by the producer for `message.timeout.ms`; if they persist the stage stops without
//! committing past the output, and a restart re-sends it (same id): nothing is lost.
//!
//! An offset is committed (every [`Config::commit_interval`]) only once every output caused before
//! it has been acknowledged by Kafka (`acks=all`, idempotent producer). With each commit go, as
//! commit metadata (JSON), the engine's clock watermark and, when everything is acknowledged, the
//! watermark up to which every clock-fired output was delivered.
//!
//! # Clocks
//!
//! - *Event time* drives everything in the engine (see its module doc).
//! - *Log time*: before each record, the clock watermark advances to the record's Kafka timestamp
//!   minus [`Config::watermark_delay`] — the wall clock was at least there when the record was
//!   written, so deadlines up to it were due. It is part of the log, so replays see it too.
//! - *Wall clock*, once a partition is live (caught up): the clock watermark advances to
//!   `now − watermark_delay` when the earliest pending deadline becomes due (a timer set to
//!   `deadline + watermark_delay`, not a polling tick), and every [`Config::tick`] besides, so
//!   deadlines fire on an idle stream within milliseconds of `deadline + watermark_delay`. A
//!   partition whose records keep coming is left to its log time for up to [`BUSY_GRACE`]: the
//!   next record fires the deadline without the write-ahead commit below.
//!
//! # Recovery: checkpoints, then deterministic replay
//!
//! Every [`Config::checkpoint_interval`] (10 s; or [`Config::checkpoint_max_records`] records,
//! whichever first) each owned partition that processed records writes its engine state to the
//! compacted `checkpoints` topic ([`crate::checkpoint`]: two slots per partition, pieces under
//! the record limit; `checkpoint_io`). On assignment, let `C` be the group's committed offset and
//! `H` the partition's high-water mark then. The engine is restored from the latest usable
//! checkpoint at or before `C` ([`crate::recovery::choose_checkpoint`]), or, when there is none
//! (missing, unreadable, another state version or rules configuration, after `C`), a fresh one
//! replays the partition from its beginning — logged and counted
//! (`vigia_processor_full_replays_total{reason}`). Either way:
//! - Records before `C` rebuild the state with their outputs suppressed: they were delivered
//!   before the crash or handover.
//! - When replay reaches `C`, the clock watermarks committed with `C` are restored: first the
//!   *delivered* one (everything the clock had fired up to it was acknowledged: outputs
//!   suppressed), then the *clock* one (fired, perhaps not delivered: outputs produced, perhaps
//!   again — same ids). From `C` on, outputs are produced.
//! - Until `H` the watermark moves only with event and log time, so the replay is a function of
//!   the log (and of `C` with its metadata). From `H` on the wall clock drives it too.
//!
//! A checkpoint holds the state the engine had at its offset, clock included, so a restore
//! continues the run that wrote it; it needs no atomic write with the offsets (see
//! [`crate::recovery`], "Which checkpoint is usable").
//!
//! Why 10 s: what a crash leaves to replay is at most an interval of traffic plus the commit
//! lag, a fraction of a second at the rates one instance takes (~100,000 events/s per core for
//! the rules); writing costs one copy and serialization of the partition's state per interval,
//! which the retention rule bounds (live entities and 7 days of samples). Arroyo's default is the
//! same. A big state spaces them further ([`crate::checkpoint::COST_FACTOR`] times the last
//! one's cost): the copy holds up this loop, the serialization and the write take the cores the
//! other stages share.
//!
//! A revoked partition's engine is kept; if the partition comes back it resumes where it stopped
//! instead of replaying (records another owner handled meanwhile are re-applied, their outputs
//! suppressed up to the new `C`, as above).
//!
//! These decisions are made by [`crate::recovery`] and [`crate::checkpoint`] (pure,
//! unit-tested); `assign` and `checkpoint_io` read the facts they need from Kafka and carry
//! them out, `output` delivers and accounts for outputs.
//!
//! # Why no Kafka transactions are needed
//!
//! Results after a crash are those of a run without it because:
//! 1. **Deterministic outputs.** An output's id derives from its cause ([`vigia_schemas::derive_id`])
//!    and every field is computed from events (event time, never the wall clock), so re-sending
//!    an output re-sends the same record, byte for byte.
//! 2. **Idempotent sinks.** The ClickHouse sink and the gateway's inbox de-duplicate by id, so an
//!    output re-sent after a crash (produced, but not yet covered by a commit) has no second
//!    effect.
//! 3. **Deterministic replay.** `on_event` never reads the wall clock; the only wall-clock step is
//!    a tick that fires deadlines. Before such a tick the runner waits until every output so far is
//!    acknowledged and commits (position, new clock watermark) synchronously — a write-ahead of
//!    the clock — so a restarted run reaches the same engine state at `C` (records before `C`,
//!    then the committed watermarks) and from there processes the same records the same way: a
//!    notification fired by the clock just before a crash is re-fired (same id), and a reply
//!    arriving after it still withdraws it.
//!
//! What transactions would add — committing outputs and offsets atomically — is replaced by
//! idempotence; the price is possible duplicate deliveries (same ids) after a crash.
//!
//! **Brokers that drop commit metadata** (Apache Kafka keeps it; some Kafka-protocol stand-ins,
//! such as tansu 0.6, answer OffsetFetch with empty metadata) lose the restore step. Then, after a restart, notifications the wall clock fired for waits still
//! open are fired again (same ids) when the replay reaches them — by the log time of a later
//! record, or by the clock once live — and later replies still withdraw them. What can be lost is
//! narrow: a reply that occurred before the deadline but reached the processors after the wall
//! clock fired it (written to Kafka less than `watermark_delay` after the deadline, or processed
//! late under load), whose record was not yet committed when the process crashed: the replay sees
//! it as answered in time, so the notification delivered before the crash is never withdrawn.
//! Kafka keeps the metadata and closes that gap.

mod assign;
mod checkpoint_io;
mod output;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use prometheus_client::registry::Registry;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vigia_schemas::{decode_event, DeadLetterReason, NotificationType, Topics};

use self::assign::{Rebalanced, RunnerContext};
use self::output::{Ack, Outgoing};
use crate::checkpoint;
use crate::engine::{chrono_duration, Output, PartitionEngine};
use crate::metrics::{Metrics, PartitionLabel};
use crate::recovery::{Replay, Watermarks};
use crate::{Config, ProcessorError};

/// Timeout of blocking Kafka metadata calls (committed offsets, watermarks, sync commits).
const KAFKA_TIMEOUT: Duration = Duration::from_secs(15);
/// How long shutdown waits for in-flight outputs to be acknowledged.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(30);
/// A live partition that processed a record written less than this ago is *busy*: a deadline
/// due there is left to the log time of its next records (fired inside `on_record`, no commit
/// needed) for up to this long before the wall clock fires it (which must first wait for every
/// output's acknowledgement and commit synchronously, stalling the partitions' records). A
/// few Kafka hops: records written after the deadline became due arrive within it.
const BUSY_GRACE: Duration = Duration::from_millis(20);

/// Runs the processors until `shutdown` is cancelled: [`Processors::new`] then
/// [`Processors::run`].
pub async fn run(
    config: Config,
    kafka: &ClientConfig,
    topics: &Topics,
    registry: &mut Registry,
    shutdown: CancellationToken,
) -> Result<(), ProcessorError> {
    Processors::new(config, kafka, topics, registry)?
        .run(shutdown)
        .await
}

/// The processors stage, created (clients, metrics) but not yet consuming.
pub struct Processors {
    config: Arc<Config>,
    topics: Topics,
    consumer: Arc<StreamConsumer<RunnerContext>>,
    offsets_reader: Arc<BaseConsumer>,
    checkpoint_reader: Arc<BaseConsumer>,
    producer: FutureProducer,
    rebalances: mpsc::UnboundedReceiver<Rebalanced>,
    positions: Arc<Mutex<HashMap<i32, i64>>>,
    metrics: Metrics,
}

impl Processors {
    /// Validates `config`, creates the Kafka clients from `kafka` (which must set
    /// `bootstrap.servers`) and registers the metrics. Connects lazily.
    pub fn new(
        config: Config,
        kafka: &ClientConfig,
        topics: &Topics,
        registry: &mut Registry,
    ) -> Result<Self, ProcessorError> {
        config.validate()?;
        let kafka_err = |context: &str| {
            let context = context.to_string();
            move |source| ProcessorError::Kafka { context, source }
        };
        let (tx, rebalances) = mpsc::unbounded_channel();
        let positions = Arc::new(Mutex::new(HashMap::new()));
        let context = RunnerContext {
            topic: topics.events.clone(),
            positions: positions.clone(),
            tx,
        };
        let mut member = kafka.clone();
        if let Some(id) = &config.instance_id {
            member.set("group.instance.id", id);
        }
        let consumer: StreamConsumer<RunnerContext> = member
            .set("group.id", &config.group_id)
            // A member that dies without leaving (kill -9) holds its partitions until its session
            // times out: librdkafka's 45 s default would stall a restarted stage that long.
            // Not much shorter: a replay after an assignment must not starve the heartbeats.
            .set("session.timeout.ms", "15000")
            // Also the rebalance timeout: how long the coordinator waits for members to rejoin
            // (librdkafka's 300 s default would let one slow member hold a rebalance that long);
            // this loop polls far more often.
            .set("max.poll.interval.ms", "60000")
            .set("heartbeat.interval.ms", "1000")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Revocation drops nothing we cannot rebuild; eager keeps the callback simple.
            .set("partition.assignment.strategy", "range")
            .create_with_context(context)
            .map_err(kafka_err("cannot create the events consumer"))?;
        // Reads the group's committed offsets on assignment. A client of its own (in the group,
        // never a member): its requests do not queue before the member's heartbeats, which a
        // broker slow to answer an offset fetch would otherwise hold past the session timeout
        // (seen under load: assigned, timed out, revoked, again and again).
        let offsets_reader: BaseConsumer = kafka
            .clone()
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(kafka_err("cannot create the committed-offsets reader"))?;
        // Reads checkpoints back on assignment (assigns partitions of the checkpoints topic
        // itself, never subscribes or commits).
        let checkpoint_reader: BaseConsumer = kafka
            .clone()
            .set("group.id", format!("{}.checkpoint-reader", config.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            // Pieces are up to 900 KB: at librdkafka's default of 1 MB per partition and
            // fetch, a checkpoint of 200 pieces took 200 round trips (2-4 s for 177 MB here).
            .set("max.partition.fetch.bytes", "52428800")
            .create()
            .map_err(kafka_err("cannot create the checkpoints reader"))?;
        let producer: FutureProducer = kafka
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Alerts and their withdrawals are on their way to a screen, and the write-ahead
            // commit before a clock firing waits for every output's acknowledgement: no waiting
            // for a batch to fill (librdkafka's default is 5 ms).
            .set("linger.ms", "1")
            .create()
            .map_err(kafka_err("cannot create the outputs producer"))?;
        Ok(Processors {
            config: Arc::new(config),
            topics: topics.clone(),
            consumer: Arc::new(consumer),
            offsets_reader: Arc::new(offsets_reader),
            checkpoint_reader: Arc::new(checkpoint_reader),
            producer,
            rebalances,
            positions,
            metrics: Metrics::register(registry),
        })
    }

    /// Consumes and processes until `shutdown` is cancelled, then delivers what is in flight,
    /// commits, and leaves the group. Returns an error if an output cannot be delivered (after
    /// the producer's own retries): restarting resumes exactly (see the module doc).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ProcessorError> {
        self.consumer
            .subscribe(&[&self.topics.events])
            .map_err(|source| ProcessorError::Kafka {
                context: format!("cannot subscribe to {}", self.topics.events),
                source,
            })?;
        tracing::info!(
            topic = %self.topics.events,
            group = %self.config.group_id,
            "processors consuming"
        );
        let mut rebalances = self.rebalances;
        let consumer = self.consumer.clone();
        let mut runner = Runner {
            config: self.config.clone(),
            topics: self.topics,
            consumer: self.consumer,
            offsets_reader: self.offsets_reader,
            checkpoint_reader: self.checkpoint_reader,
            checkpoint_partitions: None,
            failpoint: checkpoint_io::Failpoint::from_env(),
            producer: self.producer,
            positions: self.positions,
            metrics: self.metrics,
            runs: HashMap::new(),
            inflight: FuturesUnordered::new(),
            redo: VecDeque::new(),
            next_generation: 0,
            wake: None,
        };
        // Fires when the earliest deadline of a live partition becomes due (`Runner::wake`).
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<DateTime<Utc>> = None;
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut commit = tokio::time::interval(self.config.commit_interval);
        commit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let result: Result<(), ProcessorError> = async {
            loop {
                let room = runner.inflight.len() < runner.config.max_in_flight;
                let busy = !runner.inflight.is_empty();
                if runner.wake != armed {
                    armed = runner.wake;
                    if let Some(at) = armed {
                        timer.as_mut().reset(instant_at(at));
                    }
                }
                let step = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => Step::Stop,
                    _ = &mut timer, if armed.is_some() => {
                        armed = None; // elapsed: re-armed with what this tick computes
                        Step::Tick
                    }
                    _ = tick.tick() => Step::Tick,
                    _ = commit.tick() => Step::Commit,
                    Some(ack) = runner.inflight.next(), if busy => Step::Ack(ack),
                    msg = consumer.recv(), if room => Step::Record(msg.map(|m| Record::from(&m))),
                };
                // Rebalances were signalled while polling: apply them before any record.
                while let Ok(r) = rebalances.try_recv() {
                    runner.on_rebalance(r).await?;
                }
                runner.resend()?;
                match step {
                    Step::Stop => return Ok(()),
                    Step::Ack(ack) => runner.on_ack(ack)?,
                    Step::Tick => runner.tick().await?,
                    Step::Commit => {
                        runner.commit(CommitMode::Async).await;
                        runner.checkpoint_due();
                    }
                    Step::Record(Ok(rec)) => runner.on_record(rec).await?,
                    Step::Record(Err(e)) => {
                        tracing::warn!("consuming {}: {e}", runner.topics.events);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        .await;

        // Deliver what is in flight, then commit it, even when stopping on an error.
        let drained = runner.drain(SHUTDOWN_DRAIN).await;
        if drained.is_ok() {
            runner.commit(CommitMode::Sync).await;
        }
        drop(runner);
        // Closing the consumer (its last reference) leaves the group: a blocking call.
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        tracing::info!("processors stopped");
        result.and(drained)
    }
}

enum Step {
    Stop,
    Ack(Ack),
    Tick,
    Commit,
    Record(KafkaResult<Record>),
}

/// An owned copy of what the runner needs from a consumed record.
struct Record {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    timestamp: Option<DateTime<Utc>>,
}

impl Record {
    fn from<M: Message>(m: &M) -> Record {
        Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            timestamp: m
                .timestamp()
                .to_millis()
                .and_then(DateTime::from_timestamp_millis),
        }
    }
}

/// One owned (or kept) partition.
struct PartitionRun {
    /// Distinguishes this engine's acks from those of an engine it replaced.
    generation: u64,
    owned: bool,
    engine: PartitionEngine,
    /// Where replay ends and outputs resume; when the partition is live.
    replay: Replay,
    /// Offset of the next record to process.
    next_offset: i64,
    /// Positions with outputs not all acknowledged: (offset, outputs left), in order. Outputs of a
    /// watermark advance between records count at the next record's offset, so the committed
    /// offset never passes an unacknowledged output.
    pending: VecDeque<(i64, usize)>,
    /// The newest Kafka timestamp of the records processed (see [`Runner::on_record`]).
    log_time: Option<DateTime<Utc>>,
    /// Live: the earliest pending deadline as the wall-clock timer knows it (set by each tick,
    /// moved earlier by events that schedule an earlier one).
    clock_due: Option<DateTime<Utc>>,
    /// The clock fired something not yet covered by a committed `delivered_watermark`.
    fired_since_commit: bool,
    last_commit: Option<(i64, Watermarks)>,
    /// When to write the next checkpoint (`None`: checkpoints off).
    schedule: Option<checkpoint::Schedule>,
    /// The checkpoint being written, if any: the next waits for it.
    /// The checkpoint being written; its result is what it cost to copy and serialize.
    writing: Option<tokio::task::JoinHandle<Option<std::time::Duration>>>,
}

impl PartitionRun {
    fn new(generation: u64, engine: PartitionEngine, start: i64) -> Self {
        PartitionRun {
            generation,
            owned: true,
            engine,
            replay: Replay::new(start),
            next_offset: start,
            pending: VecDeque::new(),
            log_time: None,
            clock_due: None,
            fired_since_commit: false,
            last_commit: None,
            schedule: None,
            writing: None,
        }
    }

    /// The offset up to which (exclusive) every record's outputs are acknowledged.
    fn committable(&self) -> i64 {
        self.pending
            .front()
            .map_or(self.next_offset, |(offset, _)| *offset)
    }

    /// The watermarks to commit with [`Self::committable`] (see [`Watermarks::to_commit`]).
    fn watermarks(&self) -> Watermarks {
        Watermarks::to_commit(
            self.engine.clock_watermark(),
            self.pending.is_empty(),
            self.engine.next_deadline(),
        )
    }

    /// Restores `watermarks` if the recovery decision says so; returns the outputs to produce.
    fn restore(&mut self, watermarks: Option<Watermarks>) -> Vec<Output> {
        watermarks.map_or_else(Vec::new, |w| w.restore(&mut self.engine))
    }
}

struct Runner {
    config: Arc<Config>,
    topics: Topics,
    consumer: Arc<StreamConsumer<RunnerContext>>,
    offsets_reader: Arc<BaseConsumer>,
    checkpoint_reader: Arc<BaseConsumer>,
    /// Partition count of the checkpoints topic once read (`Some(None)`: no such topic, no
    /// checkpoints).
    checkpoint_partitions: Option<Option<i32>>,
    failpoint: Option<Arc<checkpoint_io::Failpoint>>,
    producer: FutureProducer,
    positions: Arc<Mutex<HashMap<i32, i64>>>,
    metrics: Metrics,
    runs: HashMap<i32, PartitionRun>,
    inflight: FuturesUnordered<BoxFuture<'static, Ack>>,
    /// Dead letters of outputs Kafka refused for good, waiting for room in the producer's queue:
    /// (partition, generation, offset, dead letter). Their offsets are still pending.
    redo: VecDeque<(i32, u64, i64, Outgoing)>,
    next_generation: u64,
    /// Wall time at which the clock must next look at the live partitions: the earliest
    /// `deadline + watermark_delay` of their pending deadlines (later for a busy partition's).
    wake: Option<DateTime<Utc>>,
}

impl Runner {
    /// Writes a checkpoint of every owned partition whose [`checkpoint::Schedule`] says so.
    /// Serializing the state happens here, between records (it is the engine's state at its
    /// position); the pieces are written in the background.
    fn checkpoint_due(&mut self) {
        let Some(Some(checkpoint_partitions)) = self.checkpoint_partitions else {
            return;
        };
        let now = std::time::Instant::now();
        let mut partitions: Vec<i32> = self.runs.keys().copied().collect();
        partitions.sort_unstable();
        for p in partitions {
            let run = self.runs.get_mut(&p).expect("listed above");
            if !run.owned || run.writing.as_ref().is_some_and(|w| !w.is_finished()) {
                continue;
            }
            if let Some(written) = run.writing.take() {
                use futures::FutureExt;
                let cost = written.now_or_never().and_then(|r| r.ok()).flatten();
                if let (Some(cost), Some(schedule)) = (cost, run.schedule.as_mut()) {
                    schedule.cost(cost);
                }
            }
            let committed = run.last_commit.map(|(o, _)| o);
            let Some(slot) = run
                .schedule
                .as_ref()
                .and_then(|s| s.due(now, run.next_offset, committed))
            else {
                continue;
            };
            let meta = checkpoint::CheckpointMeta {
                partition: p,
                offset: run.next_offset,
                state_version: crate::engine::snapshot::STATE_VERSION,
                clock_watermark: run.engine.clock_watermark(),
            };
            if let Some(schedule) = run.schedule.as_mut() {
                schedule.written(meta.offset, now);
            }
            // The next commit, once every output is acknowledged, carries a delivered watermark
            // at or past this checkpoint's clock. Without it an idle partition (clock moving, no
            // commit) would leave its checkpoint at the committed offset with a clock beyond the
            // committed delivered watermark: refused on recovery (`ClockNotDelivered`).
            run.fired_since_commit = true;
            let copy_took;
            run.writing = Some(checkpoint_io::spawn_write(
                self.producer.clone(),
                self.topics.checkpoints.clone(),
                checkpoint_io::home(p, checkpoint_partitions),
                checkpoint_io::Pending {
                    meta,
                    slot,
                    // A copy taken now and serialized on a blocking thread: serializing on this
                    // loop stalled every partition's events and deadlines for the whole
                    // serialization (hundreds of ms per checkpoint at 1,000 events/s: deadline
                    // p99 514 ms with checkpoints, 75 ms without). A copy costs a fraction of it.
                    engine: {
                        let started = std::time::Instant::now();
                        let engine = run.engine.clone();
                        copy_took = started.elapsed();
                        engine
                    },
                    copy_took,
                    piece_bytes: self.config.checkpoint_piece_bytes,
                },
                self.metrics.clone(),
                self.failpoint.clone(),
            ));
        }
    }

    fn set_position(&self, partition: i32, next: Option<i64>) {
        let mut positions = self
            .positions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match next {
            Some(o) => positions.insert(partition, o),
            None => positions.remove(&partition),
        };
    }

    async fn on_record(&mut self, rec: Record) -> Result<(), ProcessorError> {
        let delay = chrono_duration(self.config.watermark_delay);
        let max_skew = chrono_duration(self.config.max_clock_skew);
        let Some(run) = self.runs.get_mut(&rec.partition) else {
            tracing::debug!(partition = rec.partition, "record of a partition not owned");
            return Ok(());
        };
        if !run.owned || rec.offset < run.next_offset {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let step = run.replay.before_record(rec.offset);
        let producing = step.producing;
        let mut advanced = run.restore(step.restore);
        // The clock, as recorded in the log: when this record was written, the wall clock was at
        // least its timestamp, so deadlines up to `timestamp - delay` were due before it — live
        // and in any replay alike. This makes what the clock fired before each record a function
        // of the log, even on brokers that do not keep commit metadata.
        if let Some(written) = rec.timestamp {
            if run.log_time.is_none_or(|t| written > t) {
                run.log_time = Some(written);
                advanced.extend(run.engine.advance_watermark(written - delay));
            }
        }

        let before = run.engine.stats();
        let decoded = decode_event(rec.payload.as_deref());
        let (outputs, dead): (Vec<Output>, Option<(DeadLetterReason, String)>) = match decoded {
            Err(error) => {
                self.metrics.record("undecodable");
                (Vec::new(), Some((error.reason(), error.to_string())))
            }
            Ok(event) => match rec.timestamp {
                Some(written) if event.occurred_at > written + max_skew => {
                    self.metrics.record("clock_skew");
                    let reason = format!(
                        "occurred_at {} is later than the record's Kafka timestamp {} by more \
                         than max_clock_skew ({}); check the sending CRM's clock",
                        event.occurred_at.to_rfc3339(),
                        written.to_rfc3339(),
                        humantime_serde::re::humantime::format_duration(self.config.max_clock_skew)
                    );
                    (Vec::new(), Some((DeadLetterReason::ClockSkew, reason)))
                }
                _ => {
                    let out = run.engine.on_event(&event);
                    if run.replay.live() {
                        // An event may schedule a deadline earlier than the one the timer waits for.
                        let due = run.engine.next_deadline_of(event.tenant_id);
                        if let Some(d) = due.filter(|d| run.clock_due.is_none_or(|c| *d < c)) {
                            run.clock_due = Some(d);
                            let at = d + delay;
                            self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
                        }
                    }
                    let after = run.engine.stats();
                    for (n, outcome) in [
                        (after.applied - before.applied, "applied"),
                        (after.duplicates - before.duplicates, "duplicate"),
                        (after.too_late - before.too_late, "too_late"),
                        (after.over_limit - before.over_limit, "over_limit"),
                    ] {
                        if n > 0 {
                            self.metrics.record(outcome);
                        }
                    }
                    for o in &out {
                        if let Output::OverLimit(refused) = o {
                            self.metrics.over_limit(refused.entity);
                        }
                    }
                    (out, None)
                }
            },
        };

        run.next_offset = rec.offset + 1;
        if let Some(schedule) = run.schedule.as_mut() {
            schedule.processed(started.elapsed());
        }
        let after = run.replay.after_record(run.next_offset);
        // Restored on catching up: produced even when this record's outputs are not — the last
        // record before the committed offset can be the one that reaches the high-water mark.
        let caught_up = run.restore(after.restore);
        if after.became_live {
            if let Some(schedule) = run.schedule.as_mut() {
                schedule.caught_up();
            }
            run.clock_due = run.engine.next_deadline();
            if let Some(d) = run.clock_due {
                let at = d + delay;
                self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
            }
            tracing::info!(
                partition = rec.partition,
                offset = rec.offset,
                "partition caught up; its watermark now follows the clock"
            );
            self.metrics
                .live
                .get_or_create(&PartitionLabel {
                    partition: rec.partition,
                })
                .set(1);
        }
        if !run.replay.live() {
            if let Some(max) = run.engine.max_event_time() {
                set_watermark(&self.metrics, rec.partition, max - delay);
            }
        }
        let generation = run.generation;
        let next = run.next_offset;
        self.set_position(rec.partition, Some(next));

        if !producing {
            self.metrics.replayed.inc();
            // The committed clock watermark's outputs: fired before, perhaps not delivered (same
            // ids). They belong at the committed offset, which is `next` here.
            let outgoing = self.outgoing(caught_up, None, rec.partition);
            return self.send(rec.partition, generation, next, outgoing).await;
        }
        advanced.extend(caught_up);
        let mut outgoing = self.outgoing(advanced, None, rec.partition);
        outgoing.extend(self.outgoing(outputs, Some(&rec), rec.partition));
        if let Some((reason, error)) = dead {
            outgoing.push(self.dead_letter(&rec, reason, &error));
        }
        self.send(rec.partition, generation, rec.offset, outgoing)
            .await
    }

    /// Live partitions: advance the clock watermark; write-ahead commit before it fires anything
    /// (one commit for every partition that needs one); then set the timer for the next deadline.
    async fn tick(&mut self) -> Result<(), ProcessorError> {
        let now = Utc::now();
        let delay = chrono_duration(self.config.watermark_delay);
        let grace = chrono_duration(BUSY_GRACE);
        let watermark = now - delay;
        let mut live: Vec<i32> = self
            .runs
            .iter()
            .filter(|(_, run)| run.owned && run.replay.live())
            .map(|(p, _)| *p)
            .collect();
        live.sort_unstable();
        let mut advance = Vec::with_capacity(live.len());
        let mut ahead = Vec::new();
        for p in live {
            let run = &self.runs[&p];
            match run.engine.next_deadline() {
                Some(d) if d <= watermark => {
                    let busy = run.log_time.is_some_and(|t| t + grace > now);
                    if busy && d + delay + grace > now {
                        continue; // left to the log time of the next records (see BUSY_GRACE)
                    }
                    ahead.push(p);
                }
                _ => {}
            }
            advance.push(p);
        }
        let mut retry_at = None;
        let mut failed = Vec::new();
        if !ahead.is_empty() {
            if let Err(e) = self.commit_ahead(&ahead, watermark).await? {
                self.metrics.commit_failures.inc();
                tracing::warn!(
                    partitions = ?ahead,
                    "cannot commit before firing deadlines ({e}); retrying next tick"
                );
                advance.retain(|p| !ahead.contains(p));
                retry_at = Some(now + chrono_duration(self.config.tick));
                failed = ahead;
            }
        }
        for p in advance {
            let run = self.runs.get_mut(&p).expect("listed above");
            let outputs = run.engine.advance_watermark(watermark);
            if !outputs.is_empty() {
                run.fired_since_commit = true;
            }
            let generation = run.generation;
            let position = run.next_offset;
            set_watermark(&self.metrics, p, watermark);
            for o in &outputs {
                if let Output::Notification(n) = o {
                    let deadline_kind = matches!(
                        n.kind,
                        NotificationType::UnansweredConversation
                            | NotificationType::FollowUpReminder
                            | NotificationType::SessionTimeout
                    );
                    if deadline_kind && n.withdraws.is_none() {
                        let lag = (now - n.created_at).num_milliseconds() as f64 / 1000.0;
                        self.metrics.deadline_lag.observe(lag.max(0.0));
                    }
                }
            }
            let outgoing = self.outgoing(outputs, None, p);
            self.send(p, generation, position, outgoing).await?;
        }
        self.wake = retry_at;
        for (p, run) in &mut self.runs {
            if !(run.owned && run.replay.live()) {
                run.clock_due = None;
                continue;
            }
            run.clock_due = run.engine.next_deadline();
            let Some(d) = run.clock_due else { continue };
            if failed.contains(p) {
                continue; // retried at `retry_at`
            }
            // Not yet due; or due, but left to a busy partition's log time.
            let mut at = d + delay;
            if at <= now {
                at = (d + delay + grace).max(now + grace);
            }
            self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
        }
        Ok(())
    }

    /// Waits until every processed record of `partitions` has its outputs acknowledged, then
    /// commits their positions with `watermark` as the clock watermark, synchronously, in one
    /// request. Outer error: fatal; inner: retry later.
    async fn commit_ahead(
        &mut self,
        partitions: &[i32],
        watermark: DateTime<Utc>,
    ) -> Result<KafkaResult<()>, ProcessorError> {
        while partitions
            .iter()
            .any(|p| self.runs[p].pending.front().is_some())
        {
            match self.inflight.next().await {
                Some(ack) => self.on_ack(ack)?,
                None => break,
            }
        }
        let mut tpl = TopicPartitionList::new();
        let mut planned = Vec::with_capacity(partitions.len());
        for p in partitions {
            let run = &self.runs[p];
            let offset = run.committable();
            let watermarks = Watermarks {
                clock_watermark: Some(watermark),
                ..run.watermarks()
            };
            add_commit(&mut tpl, &self.topics.events, *p, offset, watermarks);
            planned.push((*p, offset, watermarks));
        }
        let consumer = self.consumer.clone();
        let result = tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await
            .expect("commit does not panic");
        if result.is_ok() {
            for (p, offset, watermarks) in planned {
                let run = self.runs.get_mut(&p).expect("checked above");
                run.last_commit = Some((offset, watermarks));
            }
        }
        Ok(result)
    }

    /// Commits, for every owned partition, the offset up to which outputs are acknowledged, when
    /// it moved or when clock-fired outputs became acknowledged.
    async fn commit(&mut self, mode: CommitMode) {
        let mut tpl = TopicPartitionList::new();
        let mut planned = Vec::new();
        for (p, run) in &self.runs {
            if !run.owned {
                continue;
            }
            let offset = run.committable();
            if !run.replay.may_commit(offset) {
                continue; // still replaying what was delivered before
            }
            let watermarks = run.watermarks();
            let moved = run.last_commit.is_none_or(|(o, _)| o != offset);
            let delivered = run.fired_since_commit && watermarks.delivered_watermark.is_some();
            if !moved && !delivered {
                continue;
            }
            add_commit(&mut tpl, &self.topics.events, *p, offset, watermarks);
            planned.push((*p, offset, watermarks));
        }
        if planned.is_empty() {
            return;
        }
        let result = match mode {
            CommitMode::Async => self.consumer.commit(&tpl, CommitMode::Async),
            CommitMode::Sync => {
                let consumer = self.consumer.clone();
                tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
                    .await
                    .expect("commit does not panic")
            }
        };
        match result {
            Ok(()) => {
                for (p, offset, watermarks) in planned {
                    if let Some(run) = self.runs.get_mut(&p) {
                        run.last_commit = Some((offset, watermarks));
                        if watermarks.delivered_watermark.is_some() {
                            run.fired_since_commit = false;
                        }
                    }
                }
            }
            Err(e) => {
                self.metrics.commit_failures.inc();
                tracing::warn!("offset commit failed ({e}); retrying at the next interval");
            }
        }
    }
}

fn add_commit(
    tpl: &mut TopicPartitionList,
    topic: &str,
    partition: i32,
    offset: i64,
    watermarks: Watermarks,
) {
    let mut e = tpl.add_partition(topic, partition);
    let _ = e.set_offset(Offset::Offset(offset));
    e.set_metadata(watermarks.to_metadata());
}

/// The timer instant of a wall-clock time (now, if it is past).
fn instant_at(at: DateTime<Utc>) -> tokio::time::Instant {
    let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    tokio::time::Instant::now() + wait
}

fn set_watermark(metrics: &Metrics, partition: i32, watermark: DateTime<Utc>) {
    metrics
        .watermark
        .get_or_create(&PartitionLabel { partition })
        .set(watermark.timestamp_millis() as f64 / 1000.0);
}

/// `Processors::run` must be spawnable on a multi-threaded runtime.
#[allow(dead_code)]
fn run_is_send(
    p: Processors,
) -> impl std::future::Future<Output = Result<(), ProcessorError>> + Send {
    p.run(CancellationToken::new())
}
