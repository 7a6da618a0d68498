//! `vigia bench sink`: the ClickHouse sink alone, from a topic already full.
//!
//! The benchmark produces `--events` simulated events (the simulator's fixed-seed stream, its
//! duplicate deliveries included, each as ingest writes it: canonical JSON keyed by tenant) to
//! the `events` topic of a fresh topic prefix, creates a fresh ClickHouse database, then starts
//! the sink (the sinks crate's [`vigia_sinks::Sink`], in this process, in a consumer group of
//! its own) and polls ClickHouse until the `events` table holds every distinct event: rows/s.
//!
//! Then the exactly-once checks: `count()` = `uniqExact(event_id)` = the distinct event ids
//! produced; and a second sink, in a new consumer group (so from offset 0), reads the whole
//! topic again until its committed offsets reach the end of every partition: not one row may be
//! added.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{drop_clickhouse_database, simulate_args, write_section};
use crate::config::Config;

#[derive(clap::Args, Debug, Clone)]
pub struct SinkArgs {
    /// Event records to produce (duplicate deliveries included) before the sink starts.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// The stream: the simulator's model with these options (the rest its defaults).
    #[arg(long, default_value_t = 10)]
    pub tenants: u64,
    #[arg(long, default_value_t = 20)]
    pub sellers: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value = "2026-03-02T08:00:00Z")]
    pub start: DateTime<Utc>,
    /// Give up if ClickHouse does not hold every event this long after the sink started.
    #[arg(long, default_value = "10m")]
    pub timeout: humantime::Duration,
    /// The results file; this benchmark replaces only its own section.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: std::path::PathBuf,
}

/// The exactly-once checks' figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Counts {
    pub produced_records: u64,
    pub produced_distinct: u64,
    pub rows: u64,
    pub distinct_ids: u64,
    pub rows_after_rerun: u64,
}

impl Counts {
    /// What is wrong, if anything: every distinct event exactly once, before and after re-reading
    /// the topic from offset 0.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.rows != self.distinct_ids {
            failures.push(format!(
                "{} rows for {} distinct event ids: duplicates were written",
                self.rows, self.distinct_ids
            ));
        }
        if self.distinct_ids != self.produced_distinct {
            failures.push(format!(
                "{} distinct event ids in ClickHouse, {} produced",
                self.distinct_ids, self.produced_distinct
            ));
        }
        if self.rows_after_rerun != self.rows {
            failures.push(format!(
                "re-reading the topic from offset 0 changed the rows from {} to {}",
                self.rows, self.rows_after_rerun
            ));
        }
        failures
    }
}

pub async fn run(config: Config, args: SinkArgs) -> Result<()> {
    if args.events == 0 {
        bail!("--events must be at least 1");
    }
    let run_id = Uuid::new_v4().simple().to_string();
    let name = format!("benchsink{}", &run_id[..10]);
    let mut kafka = config.kafka.clone();
    kafka.topic_prefix = format!("{name}.");
    let topics = vigia_schemas::Topics::with_prefix(&kafka.topic_prefix);
    let base = crate::kafka::base_client_config(&kafka, "vigia-bench-sink");
    crate::kafka::ensure_topics(&base, &kafka, &topics).await?;

    // The stream, generated up front so that producing is not paced by the generator.
    let stream = simulate_args([
        "simulate".to_string(),
        format!("--tenants={}", args.tenants),
        format!("--sellers={}", args.sellers),
        "--rate=300".to_string(),
        // Long enough for any --events: the generator is lazy and stops at --events.
        "--duration=100000h".to_string(),
        format!("--seed={}", args.seed),
        format!("--start={}", args.start.to_rfc3339()),
    ])?;
    let mut generator = crate::simulate::Generator::new(stream, args.start)?;
    let mut records = Vec::with_capacity(args.events as usize);
    let mut distinct = HashSet::new();
    while (records.len() as u64) < args.events {
        let Some(d) = generator.next_delivery() else {
            break;
        };
        let event = vigia_schemas::Event::from_value(d.event)
            .map_err(|e| anyhow::anyhow!("the simulator made an invalid event: {e:?}"))?;
        distinct.insert(event.event_id);
        records.push((event.partition_key(), event.to_json()));
    }

    eprintln!(
        "producing {} records ({} distinct events) to {}",
        records.len(),
        distinct.len(),
        topics.events
    );
    let producer: FutureProducer = base
        .clone()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("cannot create the benchmark's Kafka producer")?;
    let produce_started = Instant::now();
    let mut deliveries = Vec::with_capacity(records.len());
    for (key, json) in &records {
        let record = FutureRecord::to(&topics.events).key(key).payload(json);
        deliveries.push(producer.send(record, Duration::from_secs(60)));
    }
    for (i, d) in futures::future::join_all(deliveries)
        .await
        .into_iter()
        .enumerate()
    {
        d.map_err(|(e, _)| anyhow::anyhow!("record {i} was not produced: {e}"))?;
    }
    let produce_secs = produce_started.elapsed().as_secs_f64();
    eprintln!("produced in {produce_secs:.1} s");

    let mut ch = config.clickhouse.clone();
    ch.database = name.clone();
    vigia_sinks::migrate(&ch)
        .await
        .with_context(|| format!("ClickHouse at {} is not usable", ch.url))?;
    let http = reqwest::Client::new();
    let ch_http = ch.clone();
    let query = |sql: String| {
        let (http, ch) = (http.clone(), ch_http.clone());
        async move { clickhouse_query(&http, &ch, &sql).await }
    };

    // The measured run.
    ch.group_id = format!("{name}-first");
    let started = Instant::now();
    let first = SinkTask::start(&ch, &base, &topics)?;
    let expected = distinct.len() as u64;
    let mut first_row_at = None;
    let count_sql = format!("SELECT count() FROM {name}.events");
    loop {
        let rows: u64 = query(count_sql.clone()).await?.trim().parse()?;
        if rows > 0 && first_row_at.is_none() {
            first_row_at = Some(started.elapsed());
        }
        if rows >= expected {
            break;
        }
        if started.elapsed() > *args.timeout {
            first.stop().await;
            let _ = drop_clickhouse_database(&config, &name).await;
            bail!(
                "ClickHouse held {rows} of {expected} events {} after the sink started \
                 (raise --timeout, or see the sink's log)",
                args.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_secs = started.elapsed().as_secs_f64();
    let first_row_secs = first_row_at.unwrap_or_default().as_secs_f64();
    first.stop().await;
    eprintln!("the sink wrote {expected} rows in {all_secs:.1} s");

    let (rows, distinct_ids) = count_rows(&query, &name).await?;
    // From offset 0 again: a new consumer group has no committed offsets.
    ch.group_id = format!("{name}-rerun");
    let rerun_started = Instant::now();
    let rerun = SinkTask::start(&ch, &base, &topics)?;
    let caught_up = wait_until_committed(&base, &ch.group_id, &topics.events, *args.timeout).await;
    let rerun_secs = rerun_started.elapsed().as_secs_f64();
    rerun.stop().await;
    caught_up?;
    let (rows_after_rerun, _) = count_rows(&query, &name).await?;
    let dead_letters: u64 = query(format!("SELECT count() FROM {name}.dead_letters"))
        .await?
        .trim()
        .parse()?;
    let _ = drop_clickhouse_database(&config, &name).await;
    super::delete_topics(&base, &topics).await;

    let counts = Counts {
        produced_records: records.len() as u64,
        produced_distinct: expected,
        rows,
        distinct_ids,
        rows_after_rerun,
    };
    let failures = counts.failures();
    let rows_per_sec = expected as f64 / all_secs;
    let rows_per_sec_writing = expected as f64 / (all_secs - first_row_secs).max(1e-9);
    let records_per_sec = records.len() as f64 / all_secs;
    let json = json!({
        "records": records.len(), "distinct_events": expected,
        "produce_seconds": produce_secs,
        "sink_seconds": all_secs, "first_row_after_seconds": first_row_secs,
        "rows_per_second": rows_per_sec,
        "rows_per_second_after_first_row": rows_per_sec_writing,
        "records_per_second": records_per_sec,
        "rows": rows, "distinct_ids": distinct_ids,
        "rerun_seconds": rerun_secs, "rows_after_rerun": rows_after_rerun,
        "dead_letters": dead_letters,
        "failures": failures,
    });
    println!("{}", serde_json::to_string_pretty(&json)?);
    let check = |ok: bool| if ok { "yes" } else { "**NO**" };
    let markdown = format!(
        "## ClickHouse sink alone, from a full topic\n\n\
         Reproduce: `cargo run --release -- bench sink --events {events} --tenants {tenants} \
         --sellers {sellers} --seed {seed} --start {start}` with `VIGIA_KAFKA_BROKERS` and \
         `VIGIA_CLICKHOUSE_URL` pointing at the services ({brokers} and {ch_url} here).\n\n\
         Measured {date} on this machine ({cores} cores; broker, ClickHouse and sink on the same \
         cores). {records} records of the simulator's fixed-seed stream ({expected} distinct \
         events, the rest its duplicate deliveries) were produced to a fresh `events` topic \
         ({partitions} partitions) as ingest writes them; then the sink started (in the \
         benchmark's process, its own consumer group, batch size {batch}, flush interval \
         {flush}) and ClickHouse was polled until its `events` table held every distinct event.\n\n\
         | figure | value |\n|---|---|\n\
         | **rows/s, sink start → last row** (group join included) | **{rows_per_sec:.0}** |\n\
         | rows/s, first row → last row | {rows_per_sec_writing:.0} |\n\
         | records/s read (duplicates included), sink start → last row | {records_per_sec:.0} |\n\
         | sink start → first row (s) | {first_row_secs:.1} |\n\
         | sink start → last row (s) | {all_secs:.1} |\n\n\
         Exactly once:\n\n\
         | check | result |\n|---|---|\n\
         | `count()` = `uniqExact(event_id)` ({rows} = {distinct_ids}) | {c1} |\n\
         | distinct ids in ClickHouse = distinct ids produced ({distinct_ids} = {expected}) | {c2} |\n\
         | a second sink in a new group re-read the topic from offset 0 ({rerun_secs:.1} s, until \
         its committed offsets reached the end): rows {rows} → {rows_after_rerun} | {c3} |\n\
         | dead letters | {dead_letters} |\n",
        events = args.events,
        tenants = args.tenants,
        sellers = args.sellers,
        seed = args.seed,
        start = args.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        brokers = config.kafka.brokers,
        ch_url = config.clickhouse.url,
        date = Utc::now().format("%Y-%m-%d"),
        cores = std::thread::available_parallelism().map_or(0, |n| n.get()),
        records = records.len(),
        partitions = config.kafka.partitions,
        batch = ch.batch_size,
        flush = humantime::format_duration(ch.flush_interval),
        c1 = check(rows == distinct_ids),
        c2 = check(distinct_ids == expected),
        c3 = check(rows_after_rerun == rows),
    );
    write_section(&args.out, "sink", &markdown)?;
    eprintln!("wrote the sink section of {}", args.out.display());
    if !failures.is_empty() {
        bail!("exactly-once checks failed: {}", failures.join("; "));
    }
    Ok(())
}

/// A sink running in this process until stopped.
struct SinkTask {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), vigia_sinks::SinkError>>,
}

impl SinkTask {
    fn start(
        ch: &vigia_sinks::Config,
        base: &rdkafka::ClientConfig,
        topics: &vigia_schemas::Topics,
    ) -> Result<SinkTask> {
        let mut registry = prometheus_client::registry::Registry::default();
        let sink = vigia_sinks::Sink::new(ch.clone(), base, topics, &mut registry)
            .context("cannot start the ClickHouse sink")?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(sink.run(stop.clone()));
        Ok(SinkTask { stop, task })
    }

    async fn stop(self) {
        self.stop.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the benchmark's sink failed"),
            Err(e) => tracing::error!(error = %e, "the benchmark's sink panicked"),
        }
    }
}

async fn count_rows<F, Fut>(query: &F, database: &str) -> Result<(u64, u64)>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<String>>,
{
    let text = query(format!(
        "SELECT count(), uniqExact(event_id) FROM {database}.events FORMAT TSV"
    ))
    .await?;
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(rows)), Some(Ok(distinct))) => Ok((rows, distinct)),
        _ => bail!("unexpected answer from ClickHouse: {text:?}"),
    }
}

async fn clickhouse_query(
    http: &reqwest::Client,
    ch: &vigia_sinks::Config,
    sql: &str,
) -> Result<String> {
    let response = http
        .post(&ch.url)
        .basic_auth(&ch.user, Some(&ch.password))
        .body(sql.to_string())
        .send()
        .await
        .with_context(|| format!("cannot reach ClickHouse at {}", ch.url))?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("ClickHouse refused {sql:?}: {text}");
    }
    Ok(text)
}

/// Waits until `group` has committed the end of every partition of `topic`.
async fn wait_until_committed(
    base: &rdkafka::ClientConfig,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<()> {
    let mut config = base.clone();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let reader: BaseConsumer = config.create()?;
        let metadata = reader.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut ends = Vec::new();
        for &p in &partitions {
            ends.push(
                reader
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))?
                    .1,
            );
        }
        let deadline = Instant::now() + timeout;
        loop {
            let mut list = TopicPartitionList::new();
            for &p in &partitions {
                list.add_partition(&topic, p);
            }
            let committed = reader.committed_offsets(list, Duration::from_secs(10))?;
            let done = partitions.iter().zip(&ends).all(|(&p, &end)| {
                match committed.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o >= end,
                    _ => end == 0,
                }
            });
            if done {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the re-run's sink did not commit the end of {topic} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts() -> Counts {
        Counts {
            produced_records: 102,
            produced_distinct: 100,
            rows: 100,
            distinct_ids: 100,
            rows_after_rerun: 100,
        }
    }

    #[test]
    fn every_distinct_event_once_passes() {
        assert!(counts().failures().is_empty());
    }

    #[test]
    fn duplicates_missing_rows_and_rerun_growth_each_fail() {
        let dup = Counts {
            rows: 101,
            rows_after_rerun: 101,
            ..counts()
        };
        assert!(
            dup.failures()[0].contains("duplicates"),
            "{:?}",
            dup.failures()
        );
        let missing = Counts {
            rows: 99,
            distinct_ids: 99,
            rows_after_rerun: 99,
            ..counts()
        };
        assert!(missing.failures()[0].contains("100 produced"));
        let grew = Counts {
            rows_after_rerun: 150,
            ..counts()
        };
        assert_eq!(grew.failures().len(), 1);
        assert!(grew.failures()[0].contains("offset 0"));
    }
}
