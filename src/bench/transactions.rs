//! `vigia bench transactions`: what Kafka transactions would cost Vigía's latency, measured on
//! one hop (producer → broker → consumer) of the configured broker.
//!
//! The processors produce their outputs with an idempotent producer (`acks=all`,
//! `linger.ms=5`), and the gateway reads them with a plain consumer (`fetch.wait.max.ms=50`).
//! With exactly-once v2 they would produce in transactions committed every commit interval
//! (the offsets with them), and the gateway and sink would read `read_committed`: a record
//! becomes visible only once its transaction commits. The benchmark measures both on a fresh
//! topic, with the same client settings:
//!
//! - **idempotent**: records produced as the processors produce today, read by a consumer with
//!   librdkafka's defaults (which Vigía's consumers keep);
//! - **transactional**: the same records in transactions committed every `--commit-interval`
//!   (each commit is timed), read with `isolation.level=read_committed`.
//!
//! Records are paced at `--rate` for `--duration`; each carries the time it was due (when a
//! processor would have had the output ready), so the latency includes any wait for a commit
//! the producer was busy with. A second pass produces `--burst` records as fast as the
//! producer takes them and times them until the consumer has them all: the throughput cost.
//! Producer and consumer share the machine's clock, so latencies need no clock sync.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use chrono::Utc;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, NoCustomPartitioner, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde_json::{json, Value};
use uuid::Uuid;

use super::write_section;
use crate::config::Config;
use crate::simulate::percentile;

#[derive(clap::Args, Debug, Clone)]
pub struct TransactionsArgs {
    /// Records per second in the latency pass.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long the latency pass of each mode produces.
    #[arg(long, default_value = "60s")]
    pub duration: humantime::Duration,
    /// How often the transactional producer commits (the processors' commit interval would
    /// become this); several values, comma-separated, are measured one after the other.
    #[arg(long, value_delimiter = ',', default_value = "100ms")]
    pub commit_interval: Vec<humantime::Duration>,
    /// Records of the throughput pass (as fast as possible); 0 skips it.
    #[arg(long, default_value_t = 200_000)]
    pub burst: u64,
    /// Bytes per record (an output notification is about 600 bytes of JSON).
    #[arg(long, default_value_t = 600)]
    pub record_bytes: usize,
    /// Partitions of the benchmark's topic (Vigía's default is 3).
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// The results file; this benchmark replaces only its own section.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: std::path::PathBuf,
}

/// How the hop's records are produced and read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HopMode {
    /// As Vigía's processors produce today: idempotent, `acks=all`, no transactions.
    Idempotent,
    /// In transactions committed every `commit_every`, read `read_committed`.
    Transactional { commit_every: Duration },
}

impl HopMode {
    fn label(&self) -> String {
        match self {
            HopMode::Idempotent => "idempotent producer, default consumer (today)".into(),
            HopMode::Transactional { commit_every } => format!(
                "transactional producer, commit every {}, read_committed consumer",
                humantime::format_duration(*commit_every)
            ),
        }
    }
}

/// What one pass of one mode measured.
#[derive(Debug, Clone, Default)]
pub struct HopResult {
    pub produced: u64,
    pub consumed: u64,
    pub failed_deliveries: u64,
    /// Due → consumed, per record, in ms.
    pub latency_ms: Vec<f64>,
    /// Duration of each `commit_transaction` call, in ms.
    pub commit_ms: Vec<f64>,
    /// From the first record's due time to the last record consumed.
    pub seconds: f64,
}

impl HopResult {
    pub fn records_per_second(&self) -> f64 {
        self.consumed as f64 / self.seconds.max(1e-9)
    }
}

/// The payload: the record's due time (µs since the Unix epoch, big-endian) and padding.
pub fn payload(due_micros: i64, bytes: usize) -> Vec<u8> {
    let mut p = due_micros.to_be_bytes().to_vec();
    p.resize(bytes.max(8), b'x');
    p
}

/// The due time a payload carries, if it is one of ours.
pub fn due_micros(payload: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Counts failed deliveries: a record the broker never took must not pass for a fast one.
struct CountingContext {
    failed: Arc<AtomicU64>,
}

impl ClientContext for CountingContext {}

impl ProducerContext<NoCustomPartitioner> for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((e, _)) = result {
            tracing::error!(error = %e, "a benchmark record was not delivered");
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub async fn run(config: Config, args: TransactionsArgs) -> Result<()> {
    if args.rate <= 0.0 {
        bail!("--rate must be positive records/s");
    }
    if args.commit_interval.iter().any(|c| c.is_zero()) {
        bail!("--commit-interval must be positive, e.g. 100ms");
    }
    let mut modes = vec![HopMode::Idempotent];
    modes.extend(
        args.commit_interval
            .iter()
            .map(|c| HopMode::Transactional { commit_every: **c }),
    );
    let base = crate::kafka::base_client_config(&config.kafka, "vigia-bench-tx");
    let mut results = Vec::new();
    for mode in modes {
        eprintln!(
            "{}: latency pass at {} records/s for {}",
            mode.label(),
            args.rate,
            args.duration
        );
        let paced = hop(&base, &config, &args, mode, Some(args.rate)).await?;
        eprintln!(
            "  p50 {:.1} ms, p99 {:.1} ms over {} records",
            percentile(&mut paced.latency_ms.clone(), 0.5),
            percentile(&mut paced.latency_ms.clone(), 0.99),
            paced.consumed
        );
        let burst = if args.burst > 0 {
            eprintln!("{}: throughput pass, {} records", mode.label(), args.burst);
            let b = hop(&base, &config, &args, mode, None).await?;
            eprintln!("  {:.0} records/s", b.records_per_second());
            Some(b)
        } else {
            None
        };
        results.push((mode, paced, burst));
    }
    let (json, markdown) = report(&config, &args, &mut results);
    println!("{}", serde_json::to_string_pretty(&json)?);
    write_section(&args.out, "transactions", &markdown)?;
    eprintln!("wrote the transactions section of {}", args.out.display());
    let lost: Vec<String> = results
        .iter()
        .flat_map(|(mode, paced, burst)| {
            std::iter::once(paced)
                .chain(burst.as_ref())
                .filter(|r| r.consumed != r.produced || r.failed_deliveries > 0)
                .map(move |r| {
                    format!(
                        "{}: produced {}, consumed {}, failed deliveries {}",
                        mode.label(),
                        r.produced,
                        r.consumed,
                        r.failed_deliveries
                    )
                })
        })
        .collect();
    if !lost.is_empty() {
        bail!("records went missing: {}", lost.join("; "));
    }
    Ok(())
}

/// One pass: a fresh topic, a consumer reading it from the start, a producer pacing `records`
/// at `rate` (or as fast as it can with `None`); deleted afterwards.
async fn hop(
    base: &ClientConfig,
    config: &Config,
    args: &TransactionsArgs,
    mode: HopMode,
    rate: Option<f64>,
) -> Result<HopResult> {
    let records = match rate {
        Some(r) => (r * args.duration.as_secs_f64()).round() as u64,
        None => args.burst,
    };
    let topic = format!(
        "{}benchtx-{}",
        config.kafka.topic_prefix,
        &Uuid::new_v4().simple().to_string()[..12]
    );
    let admin: AdminClient<DefaultClientContext> = base
        .create()
        .context("cannot create a Kafka admin client")?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let new = NewTopic::new(
        &topic,
        args.partitions,
        TopicReplication::Fixed(config.kafka.replication_factor),
    );
    for r in admin
        .create_topics([&new], &opts)
        .await
        .with_context(|| format!("cannot reach Kafka at {}", config.kafka.brokers))?
    {
        if let Err((name, code)) = r {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                bail!("cannot create topic {name}: {code}");
            }
        }
    }
    let result = {
        let (base, args, topic) = (base.clone(), args.clone(), topic.clone());
        tokio::task::spawn_blocking(move || hop_blocking(&base, &args, &topic, mode, rate, records))
            .await?
    };
    let _ = admin.delete_topics(&[&topic], &opts).await;
    result
}

fn hop_blocking(
    base: &ClientConfig,
    args: &TransactionsArgs,
    topic: &str,
    mode: HopMode,
    rate: Option<f64>,
    records: u64,
) -> Result<HopResult> {
    // The consumer: assigned every partition from the beginning (no group join to wait for),
    // with the gateway's fetch wait.
    let mut consumer_config = base.clone();
    consumer_config
        .set(
            "group.id",
            format!("vigia-bench-tx-{}", Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50");
    if let HopMode::Transactional { .. } = mode {
        consumer_config.set("isolation.level", "read_committed");
    }
    let consumer: BaseConsumer = consumer_config
        .create()
        .context("cannot create the benchmark's consumer")?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..args.partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;

    let failed = Arc::new(AtomicU64::new(0));
    let mut producer_config = base.clone();
    producer_config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5");
    if let HopMode::Transactional { .. } = mode {
        producer_config.set(
            "transactional.id",
            format!("vigia-bench-tx-{}", Uuid::new_v4().simple()),
        );
    }
    let producer: ThreadedProducer<CountingContext> = producer_config
        .create_with_context(CountingContext {
            failed: failed.clone(),
        })
        .context("cannot create the benchmark's producer")?;
    let commit_every = match mode {
        HopMode::Transactional { commit_every } => {
            producer
                .init_transactions(Duration::from_secs(30))
                .context("cannot initialise transactions (does the broker support them?)")?;
            producer.begin_transaction()?;
            Some(commit_every)
        }
        HopMode::Idempotent => None,
    };
    let producing_done = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let consumer_thread = {
        let (producing_done, produced) = (producing_done.clone(), produced.clone());
        std::thread::spawn(move || {
            let mut latency_ms = Vec::with_capacity(records as usize);
            let mut last_at = Instant::now();
            let mut silent_since = Instant::now();
            loop {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        let now = now_micros();
                        if let Some(due) = m.payload().and_then(due_micros) {
                            latency_ms.push((now - due) as f64 / 1000.0);
                            last_at = Instant::now();
                            silent_since = last_at;
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "benchmark consumer error"),
                    None => {}
                }
                let all_produced = producing_done.load(Ordering::Acquire);
                if all_produced && latency_ms.len() as u64 >= produced.load(Ordering::Acquire) {
                    break;
                }
                // Whatever has not arrived 30 s after the producer finished never will.
                if all_produced && silent_since.elapsed() > Duration::from_secs(30) {
                    break;
                }
                if !all_produced {
                    silent_since = Instant::now();
                }
            }
            (latency_ms, last_at)
        })
    };

    // Let the consumer connect and find its start offsets before the clock starts: the first
    // records would otherwise measure its start-up.
    std::thread::sleep(Duration::from_secs(1));
    let mut commit_ms = Vec::new();
    let started = Instant::now();
    let start_micros = now_micros();
    let mut produce = || -> Result<()> {
        let mut next_commit = started + commit_every.unwrap_or_default();
        for i in 0..records {
            let due_offset = rate.map_or(Duration::ZERO, |r| Duration::from_secs_f64(i as f64 / r));
            let due = started + due_offset;
            if let Some(every) = commit_every {
                // Commit whenever the interval has passed, also while waiting for the next record.
                while Instant::now() >= next_commit || (due > next_commit && rate.is_some()) {
                    if Instant::now() < next_commit {
                        std::thread::sleep(next_commit - Instant::now());
                    }
                    let t0 = Instant::now();
                    producer.commit_transaction(Duration::from_secs(30))?;
                    commit_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                    producer.begin_transaction()?;
                    next_commit += every;
                    if next_commit < Instant::now() {
                        next_commit = Instant::now() + every;
                    }
                }
            }
            if due > Instant::now() {
                std::thread::sleep(due - Instant::now());
            }
            let due_micros = start_micros + due_offset.as_micros() as i64;
            let body = payload(due_micros, args.record_bytes);
            let key = (i % 64).to_string();
            let mut record = BaseRecord::to(topic).key(&key).payload(&body);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => return Err(e).context("cannot produce a benchmark record"),
                }
            }
            produced.fetch_add(1, Ordering::Release);
        }
        if commit_every.is_some() {
            let t0 = Instant::now();
            producer.commit_transaction(Duration::from_secs(30))?;
            commit_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        } else {
            producer.flush(Duration::from_secs(30))?;
        }
        Ok(())
    };
    let outcome = produce();
    producing_done.store(true, Ordering::Release);
    let (latency_ms, last_at) = consumer_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the benchmark's consumer thread panicked"))?;
    outcome?;
    Ok(HopResult {
        produced: produced.load(Ordering::Acquire),
        consumed: latency_ms.len() as u64,
        failed_deliveries: failed.load(Ordering::Relaxed),
        latency_ms,
        commit_ms,
        seconds: last_at.saturating_duration_since(started).as_secs_f64(),
    })
}

fn report(
    config: &Config,
    args: &TransactionsArgs,
    results: &mut [(HopMode, HopResult, Option<HopResult>)],
) -> (Value, String) {
    let mut rows = String::new();
    let mut json_rows = Vec::new();
    let mut added = String::new();
    let mut today: Option<(f64, f64)> = None;
    let baseline_throughput = results
        .first()
        .and_then(|(_, _, b)| b.as_ref())
        .map(HopResult::records_per_second);
    for (mode, paced, burst) in results.iter_mut() {
        let lat = &mut paced.latency_ms;
        let (p50, p99, max) = (
            percentile(lat, 0.5),
            percentile(lat, 0.99),
            lat.iter().cloned().fold(f64::NAN, f64::max),
        );
        let commits = &mut paced.commit_ms;
        let (c50, c99, cn) = (
            percentile(commits, 0.5),
            percentile(commits, 0.99),
            commits.len(),
        );
        let throughput = burst.as_ref().map(HopResult::records_per_second);
        let relative = match (throughput, baseline_throughput) {
            (Some(t), Some(b)) => format!("{:.2}", t / b),
            _ => "–".into(),
        };
        let commits_text = if cn == 0 {
            "–".to_string()
        } else {
            format!("{c50:.1} / {c99:.1} ({cn})")
        };
        rows += &format!(
            "| {} | {p50:.1} | {p99:.1} | {max:.0} | {}/{} | {commits_text} | {} | {relative} |\n",
            mode.label(),
            paced.consumed,
            paced.produced,
            throughput.map_or("–".into(), |t| format!("{t:.0}")),
        );
        match (*mode, today) {
            (HopMode::Idempotent, _) => today = Some((p50, p99)),
            (HopMode::Transactional { commit_every }, Some((t50, t99))) => {
                added += &format!(
                    "- Transactions committed every {}: **{:+.0} ms at p50, {:+.0} ms at p99** \
                     on the hop.\n",
                    humantime::format_duration(commit_every),
                    p50 - t50,
                    p99 - t99
                );
            }
            (HopMode::Transactional { .. }, None) => {}
        }
        json_rows.push(json!({
            "mode": mode.label(),
            "commit_interval_ms": match mode {
                HopMode::Transactional { commit_every } => Some(commit_every.as_millis() as u64),
                HopMode::Idempotent => None,
            },
            "produced": paced.produced, "consumed": paced.consumed,
            "failed_deliveries": paced.failed_deliveries,
            "latency_ms": {"p50": p50, "p99": p99, "max": max},
            "commit_transaction_ms": {"p50": c50, "p99": c99, "count": cn},
            "burst": burst.as_ref().map(|b| json!({
                "records": b.produced, "consumed": b.consumed,
                "records_per_second": b.records_per_second(),
                "commits": b.commit_ms.len(),
            })),
        }));
    }
    let command = format!(
        "cargo run --release -- bench transactions --rate {} --duration {} --commit-interval {} \
         --burst {} --record-bytes {} --partitions {}",
        args.rate,
        super::cli_duration(*args.duration),
        args.commit_interval
            .iter()
            .map(|c| super::cli_duration(**c))
            .collect::<Vec<_>>()
            .join(","),
        args.burst,
        args.record_bytes,
        args.partitions
    );
    let markdown = format!(
        "## Kafka transactions: the cost of one transactional hop\n\n\
         Reproduce: `{command}` with `VIGIA_KAFKA_BROKERS` pointing at the broker ({brokers} \
         here).\n\n\
         Measured {date} on this machine ({cores} cores), producer, consumer and broker on the \
         same cores. One hop: producer → broker → consumer, on a fresh topic of {partitions} \
         partitions, {bytes}-byte records, {rate} records/s for {duration} per mode. The \
         producer's settings are those of the processors' outputs producer (idempotent, \
         `acks=all`, `linger.ms=5`), the consumer's those of the gateway's (`fetch.wait.max.ms=50`). \
         Latency = record consumed − the time it was due to be produced (so a record that waits \
         for a commit the producer is busy with counts that wait). With transactions a record \
         is visible to a `read_committed` consumer only once its transaction commits: it waits \
         for the rest of its commit interval (half of one on average) and for the commit \
         itself, during which the producer sends nothing. \
         Throughput: {burst} records produced as fast as the producer takes them, until the \
         consumer has them all (relative to today's producer).\n\n\
         In Vigía's pipeline the processors' outputs are the hop that would become \
         transactional (ingest → `events` stays as it is: an HTTP request is not a Kafka \
         transaction), so this hop's difference is what exactly-once v2 would add to deadline → \
         notification frame and to end to end.\n\n\
         | mode | latency p50 ms | p99 ms | max ms | consumed/produced | commit_transaction p50 \
         / p99 ms (n) | throughput records/s | throughput vs today |\n\
         |---|---|---|---|---|---|---|---|\n\
         {rows}\n\
         {added}",
        brokers = config.kafka.brokers,
        date = Utc::now().format("%Y-%m-%d"),
        cores = std::thread::available_parallelism().map_or(0, |n| n.get()),
        partitions = args.partitions,
        bytes = args.record_bytes,
        rate = args.rate,
        duration = args.duration,
        burst = args.burst,
    );
    (json!({ "modes": json_rows }), markdown)
}

#[cfg(test)]
mod report_tests {
    use super::*;

    #[test]
    fn the_section_states_what_transactions_add_to_todays_latency() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: TransactionsArgs,
        }
        let args = Cli::parse_from(["x", "--commit-interval", "100ms"]).args;
        let hop = |lat: Vec<f64>, commits: Vec<f64>| HopResult {
            produced: lat.len() as u64,
            consumed: lat.len() as u64,
            latency_ms: lat,
            commit_ms: commits,
            seconds: 1.0,
            ..HopResult::default()
        };
        let mut results = vec![
            (HopMode::Idempotent, hop(vec![10.0; 100], vec![]), None),
            (
                HopMode::Transactional {
                    commit_every: Duration::from_millis(100),
                },
                hop(vec![70.0; 100], vec![20.0, 30.0, 40.0]),
                None,
            ),
        ];
        let (json, text) = report(&Config::default(), &args, &mut results);
        assert!(
            text.contains("every 100ms: **+60 ms at p50, +60 ms at p99**"),
            "{text}"
        );
        assert!(text.contains("| 100/100 | 30.0 / 40.0 (3) |"), "{text}");
        assert!(text.contains("--commit-interval 100ms"), "{text}");
        assert_eq!(json["modes"][1]["commit_transaction_ms"]["count"], 3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_carries_its_due_time_and_has_the_asked_size() {
        let p = payload(1_764_720_000_123_456, 600);
        assert_eq!(p.len(), 600);
        assert_eq!(due_micros(&p), Some(1_764_720_000_123_456));
        // Smaller than the timestamp: still the timestamp.
        assert_eq!(payload(-5, 3).len(), 8);
        assert_eq!(due_micros(&payload(-5, 3)), Some(-5));
        assert_eq!(due_micros(b"short"), None);
    }

    #[test]
    fn throughput_is_consumed_records_over_seconds() {
        let r = HopResult {
            produced: 1000,
            consumed: 1000,
            seconds: 0.5,
            ..HopResult::default()
        };
        assert_eq!(r.records_per_second(), 2000.0);
    }
}
