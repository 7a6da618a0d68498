//! `vigia bench recovery`: how long a `vigia process` killed with `kill -9` takes to produce
//! outputs again, with checkpoints and with a full replay, for partitions holding more and more
//! history; and the longest gap in outputs while a 2nd and a 3rd instance join under load.
//!
//! For each `--events` size: one `events` partition gets that many events of the simulator's
//! traffic spanning `--days` (more than the 7 days the seller windows keep), produced straight to
//! Kafka with their delivery times as record timestamps, on a topic with unlimited retention.
//! A `vigia process` child (checkpoints on) catches up with the history, live traffic starts
//! (the simulator at `--live-rate`, event times now), the child runs `--settle` (a checkpoint
//! and commits happen), is killed with `kill -9`, and is started again; after another
//! `--settle` it is killed again and started with checkpoints off (a full replay up to the
//! committed offsets: the same group, as when a deployment's checkpoints are unreadable).
//! Measured from each restart:
//! the first output record written by the new process, and the moment its partition is live
//! (caught up with the high-water mark at assignment, `vigia_processor_partition_live`).
//!
//! The scale part: a topic of `--scale-partitions` partitions, live traffic at `--scale-rate`;
//! one instance, then a 2nd and a 3rd join `--scale-step` apart; the longest gap between two
//! consecutive output records (as a consumer of the output topics receives them) after each
//! join.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::Utc;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use uuid::Uuid;

use super::{simulate_args, write_section, ChildProcess};
use crate::config::Config;

#[derive(clap::Args, Debug, Clone)]
pub struct RecoveryArgs {
    /// Events of history in the partition; several sizes, comma-separated, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    pub events: Vec<u64>,
    /// Event time the history spans (ending just before the benchmark starts), in days: one
    /// value for every size, or one per `--events` size (e.g. `8,80`: the same density).
    #[arg(long, value_delimiter = ',', default_value = "8,80")]
    pub days: Vec<u64>,
    #[arg(long, default_value_t = 20)]
    pub tenants: u64,
    #[arg(long, default_value_t = 20)]
    pub sellers: u64,
    /// Events per second of live traffic around the kill.
    #[arg(long, default_value_t = 200.0)]
    pub live_rate: f64,
    /// How long the caught-up child runs under live traffic before the kill.
    #[arg(long, default_value = "15s")]
    pub settle: humantime::Duration,
    /// Events per second while instances join.
    #[arg(long, default_value_t = 2000.0)]
    pub scale_rate: f64,
    #[arg(long, default_value_t = 6)]
    pub scale_partitions: i32,
    /// Time between the joins of the 2nd and 3rd instance (and after the 3rd).
    #[arg(long, default_value = "20s")]
    pub scale_step: humantime::Duration,
    /// Skip the scale part.
    #[arg(long)]
    pub no_scale: bool,
    /// Measure on the topics of an earlier run instead of producing a history (its prefix,
    /// e.g. `benchrec1a2b3c4d.`, left by `--keep-topics`; `--events`/`--days` then only label
    /// it). Its group's checkpoints and offsets are reused: the first catch-up is a restore.
    #[arg(long)]
    pub reuse_prefix: Option<String>,
    /// Only the restart with checkpoints (a full replay of 10 M events takes ~15 min here).
    #[arg(long)]
    pub no_full_replay: bool,
    /// Leave the history topics in the broker (for `--reuse-prefix`).
    #[arg(long)]
    pub keep_topics: bool,
    /// Run the processors without a static group membership (`processors.instance_id`): a
    /// restarted one then waits for the killed one's session to time out (15 s).
    #[arg(long)]
    pub dynamic_membership: bool,
    /// Give up on a recovery after this long.
    #[arg(long, default_value = "30m")]
    pub timeout: humantime::Duration,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The results file; this benchmark replaces only its own section.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
}

/// One recovery measured.
#[derive(Debug, Clone)]
struct Recovery {
    events: u64,
    days: u64,
    checkpoints: bool,
    /// Restart to the partition's assignment to the new process (the group's rebalance: the
    /// killed member is only dropped after its session times out).
    assigned: Duration,
    /// Assignment to the first output record of the new process.
    first_output: Duration,
    /// Assignment to the partition being live.
    caught_up: Duration,
    /// The state checkpointed before the kill (bytes), when checkpoints are on.
    checkpoint_bytes: Option<u64>,
    /// The first catch-up of the whole history (before the kill), for scale.
    initial_catch_up: Duration,
}

pub async fn run(config: Config, args: RecoveryArgs) -> Result<()> {
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut results = Vec::new();
    if args.days.len() != 1 && args.days.len() != args.events.len() {
        bail!("--days takes one value, or one per --events size");
    }
    for (i, &events) in args.events.iter().enumerate() {
        let days = args.days[i.min(args.days.len() - 1)];
        if let Some(prefix) = &args.reuse_prefix {
            eprintln!("reusing the history of {prefix} ({events} events, {days} days)");
            results.extend(recover(&config, &args, prefix, events, days).await?);
            break;
        }
        let name = format!("benchrec{}", &Uuid::new_v4().simple().to_string()[..8]);
        let prefix = format!("{name}.");
        create_topics(&config, &prefix, 1).await?;
        let produced = produce_history(&config, &prefix, events, days, &args).await?;
        eprintln!("{events} events: history of {prefix} produced in {produced:.1?}");
        results.extend(recover(&config, &args, &prefix, events, days).await?);
        if !args.keep_topics {
            delete_topics(&config, &prefix).await;
        }
    }
    let scale = if args.no_scale || args.reuse_prefix.is_some() {
        None
    } else {
        Some(scale(&config, &args).await?)
    };
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let markdown = report(&args, &results, scale.as_deref(), &load_before, &load_after);
    println!("{markdown}");
    write_section(&args.out, "recovery", &markdown)?;
    Ok(())
}

fn base(config: &Config) -> rdkafka::ClientConfig {
    crate::kafka::base_client_config(&config.kafka, "vigia-bench-recovery")
}

/// Every topic of `prefix`: `events` with `partitions` partitions and unlimited retention
/// (its record timestamps are days old), checkpoints compacted, the others with one partition
/// and a size-bounded retention: only the tail of the outputs is read here, and a catch-up of
/// 10 M events writes tens of gigabytes of per-minute seller figures.
async fn create_topics(config: &Config, prefix: &str, partitions: i32) -> Result<()> {
    const SEGMENT: &str = "134217728";
    let topics = vigia_schemas::Topics::with_prefix(prefix);
    let admin: AdminClient<DefaultClientContext> = base(config).create()?;
    let new: Vec<NewTopic> = topics
        .all()
        .iter()
        .map(|name| {
            let n = if *name == topics.events || *name == topics.checkpoints {
                partitions
            } else {
                1
            };
            let t = NewTopic::new(name, n, TopicReplication::Fixed(1));
            if *name == topics.events {
                t.set("retention.ms", "-1")
            } else if *name == topics.checkpoints {
                // Smaller segments than the default gigabyte, so the cleaner gets to them.
                t.set("cleanup.policy", "compact")
                    .set("segment.bytes", SEGMENT)
            } else {
                t.set("retention.bytes", "536870912")
                    .set("segment.bytes", SEGMENT)
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    for r in admin.create_topics(&new, &opts).await? {
        r.map_err(|(name, code)| anyhow::anyhow!("cannot create topic {name}: {code}"))?;
    }
    Ok(())
}

async fn delete_topics(config: &Config, prefix: &str) {
    super::delete_topics(&base(config), &vigia_schemas::Topics::with_prefix(prefix)).await;
}

fn producer(config: &Config) -> Result<FutureProducer> {
    base(config)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("cannot create the benchmark's Kafka producer")
}

/// `events` events of simulated traffic spanning `--days`, ending now, with their delivery
/// times as record timestamps.
async fn produce_history(
    config: &Config,
    prefix: &str,
    events: u64,
    days: u64,
    args: &RecoveryArgs,
) -> Result<Duration> {
    let topics = vigia_schemas::Topics::with_prefix(prefix);
    let span = Duration::from_secs(days * 86_400);
    let start = Utc::now() - chrono::Duration::from_std(span)? - chrono::Duration::minutes(5);
    let rate = events as f64 / span.as_secs_f64();
    let stream = simulate_args([
        "simulate".to_string(),
        format!("--tenants={}", args.tenants),
        format!("--sellers={}", args.sellers),
        format!("--rate={rate}"),
        format!("--duration={}s", span.as_secs() + 86_400),
        format!("--seed={}", args.seed),
        format!("--start={}", start.to_rfc3339()),
        // Late deliveries beyond the allowed lateness would be dead letters, not history.
        "--late-share=0".to_string(),
    ])?;
    let mut generator = crate::simulate::Generator::new(stream, start)?;
    let producer = producer(config)?;
    let started = Instant::now();
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut sent = 0u64;
    use futures::StreamExt;
    while sent < events {
        let Some(d) = generator.next_delivery() else {
            bail!("the simulator stopped after {sent} events; raise --days");
        };
        let event = vigia_schemas::Event::from_value(d.event)
            .map_err(|e| anyhow::anyhow!("the simulator made an invalid event: {e:?}"))?;
        let key = event.partition_key();
        let json = event.to_json();
        let ts = d.deliver_at.max(event.occurred_at).timestamp_millis();
        let producer = producer.clone();
        let topic = topics.events.clone();
        inflight.push(async move {
            producer
                .send(
                    FutureRecord::to(&topic)
                        .key(&key)
                        .payload(&json)
                        .timestamp(ts),
                    Duration::from_secs(120),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| anyhow::anyhow!("producing history: {e}"))
        });
        sent += 1;
        while inflight.len() >= 50_000 {
            inflight.next().await.expect("not empty")?;
        }
        if sent.is_multiple_of(1_000_000) {
            eprintln!("  {sent} of {events} produced");
        }
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    Ok(started.elapsed())
}

/// Live traffic of the simulator (event times now) until `stop`, into `prefix`'s events.
fn live_traffic(
    config: &Config,
    prefix: &str,
    rate: f64,
    args: &RecoveryArgs,
    stop: Arc<AtomicBool>,
) -> Result<tokio::task::JoinHandle<Result<u64>>> {
    let topics = vigia_schemas::Topics::with_prefix(prefix);
    let start = Utc::now();
    let stream = simulate_args([
        "simulate".to_string(),
        format!("--tenants={}", args.tenants),
        format!("--sellers={}", args.sellers),
        format!("--rate={rate}"),
        "--duration=24h".to_string(),
        // A reused history already holds earlier runs' live traffic: the same seed would post
        // the same events again, which the processors drop as duplicates (no outputs).
        format!(
            "--seed={}",
            if args.reuse_prefix.is_some() {
                args.seed + 1 + start.timestamp_millis().unsigned_abs()
            } else {
                args.seed + 1
            }
        ),
        format!("--start={}", start.to_rfc3339()),
        "--late-share=0".to_string(),
    ])?;
    let mut generator = crate::simulate::Generator::new(stream, start)?;
    let producer = producer(config)?;
    Ok(tokio::spawn(async move {
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Some(d) = generator.next_delivery() else {
                break;
            };
            let wait = d.deliver_at - Utc::now();
            if let Ok(wait) = wait.to_std() {
                tokio::time::sleep(wait).await;
            }
            let event = vigia_schemas::Event::from_value(d.event)
                .map_err(|e| anyhow::anyhow!("invalid simulated event: {e:?}"))?;
            let key = event.partition_key();
            let json = event.to_json();
            let record = FutureRecord::to(&topics.events).key(&key).payload(&json);
            // Fire and forget: acknowledgements are not what is measured.
            if producer.send_result(record).is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    }))
}

/// Output records as a consumer of every output topic receives them (wall time of receipt),
/// from the end of each topic when started.
struct OutputWatch {
    received: Arc<Mutex<Vec<Instant>>>,
    count: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl OutputWatch {
    async fn start(config: &Config, prefix: &str) -> Result<OutputWatch> {
        let topics = vigia_schemas::Topics::with_prefix(prefix);
        let consumer: StreamConsumer = base(config)
            .set(
                "group.id",
                format!("{prefix}watch-{}", Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for t in [
            &topics.notifications,
            &topics.response_times,
            &topics.lead_scores,
            &topics.seller_metrics,
        ] {
            tpl.add_partition_offset(t, 0, Offset::End)?;
        }
        consumer.assign(&tpl)?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicU64::new(0));
        let task = {
            let received = received.clone();
            let count = count.clone();
            tokio::spawn(async move {
                loop {
                    if let Ok(m) = consumer.recv().await {
                        if m.payload().is_some() {
                            received.lock().unwrap().push(Instant::now());
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        // Let the consumer reach the ends before anything is measured.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(OutputWatch {
            received,
            count,
            task,
        })
    }

    fn first_after(&self, t: Instant) -> Option<Instant> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .copied()
            .find(|r| *r >= t)
    }

    /// The longest time between two consecutive outputs received within `from..to`.
    fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let r = self.received.lock().unwrap();
        let mut last = from;
        let mut gap = Duration::ZERO;
        for t in r.iter().filter(|t| **t >= from && **t <= to) {
            gap = gap.max(t.duration_since(last));
            last = *t;
        }
        gap.max(to.duration_since(last))
    }
}

impl Drop for OutputWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `vigia process` child of `prefix` in consumer group `group`.
/// `instance` is its static membership (`processors.instance_id`), if any.
fn process_child(
    config: &Config,
    prefix: &str,
    group: &str,
    checkpoints: bool,
    instance: Option<&str>,
) -> Result<(ChildProcess, String)> {
    let port = super::free_port()?;
    let dir = std::env::temp_dir().join(format!("vigia-bench-recovery-{group}"));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("vigia.toml");
    std::fs::write(&file, format!("[processors]\ngroup_id = \"{group}\"\n"))?;
    let mut env = vec![
        ("VIGIA_CONFIG", file.display().to_string()),
        ("VIGIA_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("VIGIA_KAFKA_BROKERS", config.kafka.brokers.clone()),
        ("VIGIA_KAFKA_TOPIC_PREFIX", prefix.to_string()),
        ("VIGIA_DATA_DIR", dir.display().to_string()),
        ("VIGIA_CHECKPOINTS", checkpoints.to_string()),
    ];
    if let Some(id) = instance {
        env.push(("VIGIA_PROCESSOR_INSTANCE_ID", id.to_string()));
    }
    let child = ChildProcess::start("process", &env)?;
    Ok((child, format!("http://127.0.0.1:{port}")))
}

/// The value of one sample of the child's `/metrics`, if present.
async fn metric(http: &reqwest::Client, url: &str, sample: &str) -> Option<f64> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until every one of `partitions` is live in the child at `url`; returns when the first
/// was assigned (its gauge appeared) and when all were live.
async fn wait_live(
    http: &reqwest::Client,
    url: &str,
    partitions: i32,
    child: &mut ChildProcess,
    timeout: Duration,
) -> Result<(Instant, Instant)> {
    let started = Instant::now();
    let mut assigned = None;
    loop {
        let mut live = 0;
        for p in 0..partitions {
            let sample = format!("vigia_processor_partition_live{{partition=\"{p}\"}}");
            if let Some(v) = metric(http, url, &sample).await {
                assigned.get_or_insert_with(Instant::now);
                if v == 1.0 {
                    live += 1;
                }
            }
        }
        if live == partitions {
            let now = Instant::now();
            return Ok((assigned.unwrap_or(now), now));
        }
        if let Some(status) = child.child.try_wait()? {
            bail!("`vigia process` exited ({status})");
        }
        if started.elapsed() > timeout {
            bail!("not caught up within {timeout:?} (raise --timeout)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One consumer group over the history: a cold catch-up with checkpoints on, live traffic,
/// then two kill -9 and restarts — the first restart with checkpoints, the second without
/// (the same deployment with its checkpoints off or unreadable: a full replay up to the
/// committed offsets, which the first restart moved on).
async fn recover(
    config: &Config,
    args: &RecoveryArgs,
    prefix: &str,
    events: u64,
    days: u64,
) -> Result<Vec<Recovery>> {
    let group = format!("{prefix}processors");
    let http = reqwest::Client::new();
    let started = Instant::now();
    let instance = (!args.dynamic_membership).then_some("bench-0");
    let (mut child, mut url) = process_child(config, prefix, &group, true, instance)?;
    let (_, live_at) = wait_live(&http, &url, 1, &mut child, *args.timeout).await?;
    let initial_catch_up = live_at.duration_since(started);
    eprintln!("  caught up with the history in {initial_catch_up:.1?}");
    let stop = Arc::new(AtomicBool::new(false));
    let live = live_traffic(config, prefix, args.live_rate, args, stop.clone())?;
    // From the end of the outputs: the catch-up's are not what is measured.
    let watch = OutputWatch::start(config, prefix).await?;
    let mut results = Vec::new();
    let modes: &[bool] = if args.no_full_replay {
        &[true]
    } else {
        &[true, false]
    };
    for &checkpoints in modes {
        tokio::time::sleep(*args.settle).await;
        let checkpoint_bytes = metric(
            &http,
            &url,
            "vigia_processor_checkpoint_bytes{partition=\"0\"}",
        )
        .await
        .map(|b| b as u64);
        // kill -9
        child.stop();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let restarted = Instant::now();
        (child, url) = process_child(config, prefix, &group, checkpoints, instance)?;
        let (assigned, live_at) = wait_live(&http, &url, 1, &mut child, *args.timeout).await?;
        let limit = Instant::now() + Duration::from_secs(60);
        let first = loop {
            if let Some(t) = watch.first_after(assigned) {
                break t;
            }
            if Instant::now() > limit {
                bail!("no output within 60 s of catching up");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let r = Recovery {
            events,
            days,
            checkpoints,
            assigned: assigned.duration_since(restarted),
            first_output: first.duration_since(assigned),
            caught_up: live_at.duration_since(assigned),
            checkpoint_bytes: checkpoint_bytes.filter(|_| checkpoints),
            initial_catch_up,
        };
        eprintln!("{r:?}");
        results.push(r);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = live.await;
    child.stop();
    Ok(results)
}

/// Longest output gap after each join: (instances after the join, gap).
async fn scale(config: &Config, args: &RecoveryArgs) -> Result<Vec<(usize, Duration)>> {
    let name = format!("benchscale{}", &Uuid::new_v4().simple().to_string()[..8]);
    let prefix = format!("{name}.");
    create_topics(config, &prefix, args.scale_partitions).await?;
    let group = format!("{prefix}processors");
    let http = reqwest::Client::new();
    let watch = OutputWatch::start(config, &prefix).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let live = live_traffic(config, &prefix, args.scale_rate, args, stop.clone())?;
    let instance = |n: usize| (!args.dynamic_membership).then(|| format!("bench-{n}"));
    let (mut first, url) = process_child(config, &prefix, &group, true, instance(1).as_deref())?;
    wait_live(
        &http,
        &url,
        args.scale_partitions,
        &mut first,
        Duration::from_secs(120),
    )
    .await?;
    tokio::time::sleep(*args.scale_step).await;
    let mut children = vec![first];
    let mut gaps = Vec::new();
    for n in 2..=3 {
        let joined = Instant::now();
        let (child, _) = process_child(config, &prefix, &group, true, instance(n).as_deref())?;
        children.push(child);
        tokio::time::sleep(*args.scale_step).await;
        gaps.push((n, watch.longest_gap(joined, Instant::now())));
        eprintln!("  {n} instances: longest output gap {:?}", gaps.last());
    }
    stop.store(true, Ordering::Relaxed);
    let sent = live.await??;
    eprintln!(
        "  scale: {sent} live events, {} outputs",
        watch.count.load(Ordering::Relaxed)
    );
    drop(children);
    delete_topics(config, &prefix).await;
    Ok(gaps)
}

fn report(
    args: &RecoveryArgs,
    results: &[Recovery],
    scale: Option<&[(usize, Duration)]>,
    load_before: &str,
    load_after: &str,
) -> String {
    let sizes: Vec<String> = args.events.iter().map(u64::to_string).collect();
    let days: Vec<String> = args.days.iter().map(u64::to_string).collect();
    let mut md = format!(
        "## Recovery after kill -9 (`vigia bench recovery`)\n\n\
         Reproduce: `vigia bench recovery --events {} --days {} --tenants {} --sellers {} \
         --live-rate {} --settle {}{}{}` (release build; Apache Kafka on the same machine). \
         Measured {}; load average before {} / after {}.\n\n\
         One `events` partition holding the history (simulated, spanning {} days, record \
         timestamps = delivery times); live traffic at {}/s around the kill. After the restart \
         of the killed `vigia process`, the group hands it the partition: at once with a static \
         membership (`processors.instance_id`, {}), else once the dead member's session times \
         out (15 s); the same in both modes. From that assignment: its first \
         output record (received by a consumer of the output topics), and its partition caught \
         up with the high-water mark at assignment. Checkpoints every 10 s (the default). One \
         consumer group: a cold catch-up of the history (last column, checkpoints on), then a \
         kill and restart with checkpoints, then another with them off (a full replay up to the \
         offsets the first restart committed).\n\n\
         | history events | days | mode | restart → assigned | assigned → first output | restart → first output | assigned → caught up | checkpoint size | first catch-up (cold) |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        sizes.join(","),
        days.join(","),
        args.tenants,
        args.sellers,
        args.live_rate,
        super::cli_duration(*args.settle),
        if args.dynamic_membership {
            " --dynamic-membership"
        } else {
            ""
        },
        match (&args.reuse_prefix, args.no_scale) {
            (Some(p), _) => format!(
                " --no-scale --reuse-prefix {p}{}",
                if args.no_full_replay {
                    " --no-full-replay"
                } else {
                    ""
                }
            ),
            (None, true) => " --no-scale".to_string(),
            (None, false) => String::new(),
        },
        Utc::now().format("%Y-%m-%d"),
        load_before.trim(),
        load_after.trim(),
        days.join(" / "),
        args.live_rate,
        if args.dynamic_membership {
            "not used here"
        } else {
            "used here"
        },
    );
    for r in results {
        md.push_str(&format!(
            "| {} | {} | {} | {:.1} s | {:.2} s | {:.2} s | {:.2} s | {} | {:.1} s |\n",
            r.events,
            r.days,
            if r.checkpoints {
                "checkpoints"
            } else {
                "full replay"
            },
            r.assigned.as_secs_f64(),
            r.first_output.as_secs_f64(),
            (r.assigned + r.first_output).as_secs_f64(),
            r.caught_up.as_secs_f64(),
            r.checkpoint_bytes
                .map_or("—".to_string(), |b| format!("{:.1} MB", b as f64 / 1e6)),
            r.initial_catch_up.as_secs_f64(),
        ));
    }
    if let Some(gaps) = scale {
        md.push_str(&format!(
            "\nScale-out under {}/s over {} partitions: longest time between two output \
             records received, in the {} after an instance joined (target ≤ 5 s):\n\n\
             | instances after the join | longest output gap |\n|---|---|\n",
            args.scale_rate,
            args.scale_partitions,
            super::cli_duration(*args.scale_step),
        ));
        for (n, gap) in gaps {
            md.push_str(&format!("| {n} | {:.2} s |\n", gap.as_secs_f64()));
        }
    }
    md
}
