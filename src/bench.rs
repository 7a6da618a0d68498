//! `vigia bench`: benchmarks that write their figures, with the command that reproduces them,
//! into a section of `BENCHMARKS.md`.
//!
//! `vigia bench gateway` measures the notification gateway the way production runs it: a
//! separate `vigia gateway` process (this binary, started as a child with a fresh SQLite inbox
//! and its own topic prefix) reading the notifications topic of the configured broker. The
//! benchmark opens `--connections` plain WebSocket (`/ws`) clients as sellers of one tenant,
//! then produces notifications to Kafka: broadcasts to every seller of the tenant (audience
//! role `seller`), and notifications to single users. For every frame a client receives it
//! records the time since the notification's `created_at`, stamped when it was produced, so
//! the figures include the Kafka hop, the inbox write and the fan-out. The gateway's memory per
//! connection is its resident set growth (Linux `/proc`) from before the first connection to
//! after the last, divided by the connections.
//!
//! Clients and gateway share the machine's cores, so the latencies are an upper bound of what
//! the gateway alone would show.
//!
//! `vigia bench processors` measures the processors' logic alone, without Kafka, on one core:
//! the simulator's fixed-seed stream, decoded from JSON exactly as the runner decodes records,
//! applied to a [`vigia_processors::PartitionEngine`] with the watermark advancing with the
//! records' delivery times, and every output serialised as the runner would produce it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;
use vigia_schemas::{Audience, Notification, NotificationType, Role};

use crate::config::Config;
use crate::simulate::percentile;

mod gateway_peers;
mod latency;
mod recovery;
mod sink;
mod transactions;

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Bench {
    /// Fan-out latency and memory per connection of the gateway with many WebSocket clients.
    Gateway(GatewayArgs),
    /// The gateway beside Centrifugo and the socket.io servers (one harness, same machine).
    GatewayPeers(gateway_peers::PeersArgs),
    /// Events per second of the processors' logic on one core, without Kafka.
    Processors(ProcessorsArgs),
    /// The whole pipeline (`vigia serve` + `vigia simulate --measure`) at rising rates.
    Pipeline(PipelineArgs),
    /// The ClickHouse sink alone: rows/s from a full `events` topic, and exactly-once checks.
    Sink(sink::SinkArgs),
    /// One Kafka hop with and without transactions (read_committed): latency and throughput.
    Transactions(transactions::TransactionsArgs),
    /// Recovery of a `vigia process` killed with -9, with checkpoints and with a full replay,
    /// for growing histories; output gaps while instances join.
    Recovery(recovery::RecoveryArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct PipelineArgs {
    /// Target rates to try, events/s (all tenants together), in rising order.
    #[arg(long, value_delimiter = ',', default_value = "250,500,1000,2000")]
    pub rates: Vec<f64>,
    /// How long each rate is measured, after its warm-up.
    #[arg(long, default_value = "60s")]
    pub step: humantime::Duration,
    /// Traffic posted at each rate before its measured step and left out of its figures: the
    /// simulator's conversations last minutes, so its rate builds up over the first minutes.
    #[arg(long, default_value = "90s")]
    pub warmup: humantime::Duration,
    /// Try every rate, also after one that was not sustained (for its figures).
    #[arg(long)]
    pub all_rates: bool,
    /// The near-idle stream (one tenant at --idle-rate events/s, before the rates): how long
    /// (0s: skipped). At 2 events/s about one alert fires every 6 s.
    #[arg(long, default_value = "6m")]
    pub idle_step: humantime::Duration,
    /// Deadlines on an idle stream: this many conversations whose customer writes once and is
    /// never answered, posted over --idle-burst-span, so that their deadlines (after
    /// --unanswered-after) fall where nothing is posted (0: skipped).
    #[arg(long, default_value_t = 600)]
    pub idle_burst: usize,
    #[arg(long, default_value = "10s")]
    pub idle_burst_span: humantime::Duration,
    #[arg(long, default_value_t = 2.0)]
    pub idle_rate: f64,
    #[arg(long, default_value_t = 4)]
    pub tenants: u64,
    #[arg(long, default_value_t = 10)]
    pub sellers: u64,
    /// The unanswered threshold of the run (compressed so that deadlines fire during a step).
    #[arg(long, default_value = "20s")]
    pub unanswered_after: humantime::Duration,
    /// The end-to-end p99 a rate must stay under to count as sustained.
    #[arg(long, default_value = "1s")]
    pub p99_limit: humantime::Duration,
    /// The results file; this benchmark replaces only its own section.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ProcessorsArgs {
    /// Runs over the same stream; the figures are their median.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// The results file; this benchmark replaces only its own section.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// The stream: the simulator's model with these options (the rest its defaults).
    #[arg(long, default_value_t = 10)]
    pub tenants: u64,
    #[arg(long, default_value_t = 20)]
    pub sellers: u64,
    /// Events per second of event time.
    #[arg(long, default_value_t = 300.0)]
    pub rate: f64,
    /// Event time covered by the stream.
    #[arg(long, default_value = "1h")]
    pub duration: humantime::Duration,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value = "2026-03-02T08:00:00Z")]
    pub start: DateTime<Utc>,
}

impl ProcessorsArgs {
    /// The simulator's options for this stream.
    fn stream(&self) -> Result<crate::simulate::Args> {
        simulate_args([
            "simulate".to_string(),
            format!("--tenants={}", self.tenants),
            format!("--sellers={}", self.sellers),
            format!("--rate={}", self.rate),
            format!("--duration={}", self.duration),
            format!("--seed={}", self.seed),
            format!("--start={}", self.start.to_rfc3339()),
        ])
    }
}

/// The simulator's options from `vigia simulate` arguments (`argv[0]` is the program name).
fn simulate_args<const N: usize>(argv: [String; N]) -> Result<crate::simulate::Args> {
    use clap::Parser;
    #[derive(Parser)]
    struct Simulate {
        #[command(flatten)]
        args: crate::simulate::Args,
    }
    Ok(Simulate::try_parse_from(argv)?.args)
}

#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// WebSocket clients to open (each a seller of one tenant).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Notifications broadcast to every client (audience: the tenant's sellers).
    #[arg(long, default_value_t = 20)]
    pub broadcasts: usize,
    /// Time between two broadcasts.
    #[arg(long, default_value = "1s")]
    pub broadcast_every: humantime::Duration,
    /// Notifications to single users (random clients).
    #[arg(long, default_value_t = 1_000)]
    pub singles: usize,
    /// Time between two single-user notifications.
    #[arg(long, default_value = "5ms")]
    pub single_every: humantime::Duration,
    /// Connections opened at the same time while connecting.
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
    /// The results file; this benchmark replaces only its own section.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
}

pub async fn run(config: Config, bench: Bench) -> Result<()> {
    match bench {
        Bench::Gateway(args) => gateway(config, args).await,
        Bench::GatewayPeers(args) => gateway_peers::run(config, args).await,
        Bench::Processors(args) => processors(config, args),
        Bench::Pipeline(args) => pipeline(config, args).await,
        Bench::Sink(args) => sink::run(config, args).await,
        Bench::Transactions(args) => transactions::run(config, args).await,
        Bench::Recovery(args) => recovery::run(config, args).await,
    }
}

/// One step of the pipeline benchmark: what `vigia simulate --measure` reported for the
/// measured window (after the warm-up).
#[derive(Debug, Clone, Default)]
struct Step {
    target_rate: f64,
    /// Events whose POST completed within the measured window, per second of the window.
    posted_rate: f64,
    /// Events posted after the warm-up (the window's and the late deliveries after it).
    events: u64,
    failed: u64,
    post_p99: f64,
    /// Event POSTed → its effect on a CEO's WebSocket (a withdrawal, caused by a late answer).
    e2e: (f64, f64, u64),
    /// Deadline → the unanswered alert on a CEO's WebSocket.
    deadline: (f64, f64, u64),
    disconnections: usize,
    /// Hop by hop, from the tap (see [`latency`]).
    breakdown: Option<latency::Breakdown>,
}

/// The share of its target a step must post for its figures to describe that rate.
const MIN_POSTED_SHARE: f64 = 0.95;

impl Step {
    fn posted_share(&self) -> f64 {
        self.posted_rate / self.target_rate
    }

    fn sustained(&self, limit_ms: f64) -> bool {
        self.failed == 0
            && self.disconnections == 0
            && self.e2e.2 > 0
            && self.e2e.1 < limit_ms
            && self.posted_share() >= MIN_POSTED_SHARE
    }
}

/// The traffic of one step.
struct StepShape {
    rate: f64,
    tenants: u64,
    warmup: Duration,
    measured: Duration,
}

async fn pipeline(config: Config, args: PipelineArgs) -> Result<()> {
    if args.rates.iter().any(|r| *r <= 0.0) || args.idle_rate <= 0.0 {
        bail!("--rates and --idle-rate must be positive events/s");
    }
    let mut steps = Vec::new();
    let burst = if args.idle_burst > 0 {
        let b = burst_step(&config, &args).await?;
        eprintln!("idle burst: {b:?} (load {})", loadavg());
        Some(b)
    } else {
        None
    };
    let idle = if args.idle_step.is_zero() {
        None
    } else {
        let idle_shape = StepShape {
            rate: args.idle_rate,
            tenants: 1,
            // Deadlines are what the idle stream measures: those of its ramp-up count too.
            warmup: Duration::ZERO,
            measured: *args.idle_step,
        };
        let idle = run_step(&config, &args, &idle_shape).await?;
        eprintln!("near-idle stream: {idle:?} (load {})", loadavg());
        Some(idle)
    };
    let limit_ms = args.p99_limit.as_millis() as f64;
    for &rate in &args.rates {
        let shape = StepShape {
            rate,
            tenants: args.tenants,
            warmup: *args.warmup,
            measured: *args.step,
        };
        let step = run_step(&config, &args, &shape).await?;
        eprintln!("rate {rate}: {step:?} (load {})", loadavg());
        let sustained = step.sustained(limit_ms);
        steps.push(step);
        if !sustained && !args.all_rates {
            break;
        }
    }
    let markdown = pipeline_markdown(&config, &args, burst.as_ref(), idle.as_ref(), &steps);
    write_section(&args.out, "pipeline", &markdown)?;
    eprintln!("wrote the pipeline section of {}", args.out.display());
    Ok(())
}

/// The rates whose end-to-end figures the section states outright (issue 12 asks for them).
const HEADLINE_RATES: [f64; 2] = [1000.0, 5000.0];

fn pipeline_markdown(
    config: &Config,
    args: &PipelineArgs,
    burst: Option<&latency::Breakdown>,
    idle: Option<&Step>,
    steps: &[Step],
) -> String {
    let limit_ms = args.p99_limit.as_millis() as f64;
    let best = steps.iter().rfind(|s| s.sustained(limit_ms));
    let mut rows = String::new();
    for s in steps {
        rows += &format!(
            "| {:.0} | {:.0} | {:.2} | {} | {} | {:.0} / {:.0} ({}) | {:.0} / {:.0} ({}) | {:.0} | {} | {} |\n",
            s.target_rate,
            s.posted_rate,
            s.posted_share(),
            s.events,
            s.failed,
            s.e2e.0,
            s.e2e.1,
            s.e2e.2,
            s.deadline.0,
            s.deadline.1,
            s.deadline.2,
            s.post_p99,
            s.disconnections,
            if s.sustained(limit_ms) { "yes" } else { "no" },
        );
    }
    let mut headline = String::new();
    for rate in HEADLINE_RATES {
        headline += &match steps.iter().find(|s| s.target_rate == rate) {
            Some(s) => format!(
                "- **End to end at {rate:.0} events/s: p50 {:.0} ms, p99 {:.0} ms** ({} \
                 withdrawals; posted {:.0} events/s, {:.2} of the target).\n",
                s.e2e.0,
                s.e2e.1,
                s.e2e.2,
                s.posted_rate,
                s.posted_share()
            ),
            None => format!(
                "- End to end at {rate:.0} events/s: not measured in this run (add it to \
                 `--rates`; `--all-rates` goes on past a rate that was not sustained).\n"
            ),
        };
    }
    let verdict = match best {
        Some(b) => format!(
            "**Highest sustained rate: {:.0} events/s target ({:.0} posted per second of the \
             measured step, {:.2} of the target)**, end-to-end p99 {:.0} ms; deadline → \
             notification p50 {:.0} ms, p99 {:.0} ms on that busy stream.",
            b.target_rate,
            b.posted_rate,
            b.posted_share(),
            b.e2e.1,
            b.deadline.0,
            b.deadline.1
        ),
        None => "No rate tried was sustained (end-to-end p99 under the limit, nothing failed, \
                 posted ≥ 0.95 of the target)."
            .to_string(),
    };
    let mut command = format!(
        "cargo run --release -- bench pipeline --rates {rates} --step {step} --warmup {warmup} \
         --tenants {tenants} --sellers {sellers} --unanswered-after {ua} --idle-step {idle_step} \
         --idle-rate {idle_rate} --idle-burst {burst} --idle-burst-span {span}",
        rates = args
            .rates
            .iter()
            .map(|r| format!("{r}"))
            .collect::<Vec<_>>()
            .join(","),
        step = cli_duration(*args.step),
        warmup = cli_duration(*args.warmup),
        tenants = args.tenants,
        sellers = args.sellers,
        ua = cli_duration(*args.unanswered_after),
        idle_step = cli_duration(*args.idle_step),
        idle_rate = args.idle_rate,
        burst = args.idle_burst,
        span = cli_duration(*args.idle_burst_span),
    );
    if args.all_rates {
        command += " --all-rates";
    }
    format!(
        "## Pipeline: the whole path through the broker\n\n\
         Reproduce: `{command}` with `VIGIA_KAFKA_BROKERS` pointing at the broker ({brokers} \
         here).\n\n\
         Measured {date} on this machine ({cores} cores): for each rate a fresh `vigia serve` \
         (ingest, processors, ClickHouse sink, gateway in one process) and `vigia simulate \
         --measure` ({tenants} tenants × {sellers} sellers, unanswered threshold {ua}) posting \
         for a {warmup} warm-up and then the measured {step}, with a CEO WebSocket per tenant. \
         The simulator's conversations last minutes, so its rate builds up during the warm-up; \
         the warm-up's events and the notifications caused during it are left out of the \
         figures, and *posted* counts the POSTs completed within the measured step. \
         *End to end* is event POSTed → its effect on the CEO's WebSocket (the withdrawal of an \
         alert, caused by the seller's late answer; the simulator's deliberately out-of-order \
         and late deliveries are off, so the answer's event time is its POST time); *deadline* \
         is the alert's deadline → its frame (the watermark trails the clock by \
         `watermark_delay` = {delay} for events still in flight, so that much is by design). \
         A rate is sustained when the end-to-end p99 stays \
         under {limit}, nothing fails and it posts at least {min_share} of its target; rates \
         rise until one is not{all_rates}.\n\n\
         {verdict}\n\n\
         {headline}\n\
         {idle}\
         | target events/s | posted events/s | posted / target | events | failed | end to end \
         p50 / p99 ms (n) | deadline p50 / p99 ms (n) | POST p99 ms | CEO sockets dropped | \
         sustained |\n\
         |---|---|---|---|---|---|---|---|---|---|\n\
         {rows}\n\
         {hops}",
        delay = humantime::format_duration(config.processors.watermark_delay),
        idle = idle_markdown(args, burst, idle),
        hops = hops_markdown(args, burst, steps),
        brokers = config.kafka.brokers,
        step = args.step,
        warmup = args.warmup,
        tenants = args.tenants,
        sellers = args.sellers,
        ua = args.unanswered_after,
        limit = args.p99_limit,
        min_share = MIN_POSTED_SHARE,
        all_rates = if args.all_rates {
            " (here every rate was run)"
        } else {
            ""
        },
        date = Utc::now().format("%Y-%m-%d"),
        cores = std::thread::available_parallelism().map_or(0, |n| n.get()),
    )
}

/// The idle deadline figures: the burst's, and the near-idle stream's.
fn idle_markdown(
    args: &PipelineArgs,
    burst: Option<&latency::Breakdown>,
    idle: Option<&Step>,
) -> String {
    let mut out = String::new();
    if let Some(b) = burst {
        let t = b.alert_total;
        out += &format!(
            "**Deadlines on an idle stream** ({conversations} never-answered conversations of \
             one tenant posted over {span}, their deadlines {ua} later, when nothing is posted): \
             deadline → frame on the CEO's WebSocket **p50 {:.0} ms, p99 {:.0} ms** (max {:.0}; \
             n = {} of {} alerts).\n\n",
            t.p50,
            t.p99,
            t.max,
            t.n,
            b.alerts,
            conversations = args.idle_burst,
            span = args.idle_burst_span,
            ua = args.unanswered_after,
        );
    }
    if let Some(idle) = idle {
        out += &format!(
            "Near-idle stream (1 tenant, {} events/s for {}): deadline → notification p50 \
             {:.0} ms, p99 {:.0} ms (n = {} alerts).\n\n",
            args.idle_rate, args.idle_step, idle.deadline.0, idle.deadline.1, idle.deadline.2,
        );
    }
    out
}

/// Where the time goes, hop by hop, for the burst and every rate (see [`latency`]).
fn hops_markdown(
    args: &PipelineArgs,
    burst: Option<&latency::Breakdown>,
    steps: &[Step],
) -> String {
    let mut columns: Vec<(String, &latency::Breakdown)> = Vec::new();
    if let Some(b) = burst {
        columns.push(("idle burst".into(), b));
    }
    for s in steps {
        if let Some(b) = &s.breakdown {
            columns.push((format!("{:.0} events/s", s.target_rate), b));
        }
    }
    if columns.is_empty() {
        return String::new();
    }
    let mut table = format!(
        "Where the time goes (p50 / p99 / max ms (n), measured steps only; a tap reads the run's \
         `events` and `notifications` topics in a consumer group of its own and holds a CEO \
         WebSocket per tenant; *Kafka timestamp* is the producer's: ingest's for events, the \
         processors' for notifications; the tap's reads stand for any consumer's):\n\n\
         | hop | {} |\n|---|{}\n",
        columns
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(columns.len()),
    );
    let rows: Vec<Vec<String>> = columns
        .iter()
        .map(|(_, b)| b.rows().lines().map(str::to_string).collect())
        .collect();
    for i in 0..rows[0].len() {
        // Each row is `| hop | figures |`: keep the hop of the first column.
        let name = rows[0][i].split(" | ").next().unwrap_or("|").to_string();
        let cells: Vec<&str> = rows
            .iter()
            .map(|r| {
                r[i].trim_end_matches(" |")
                    .rsplit(" | ")
                    .next()
                    .unwrap_or("")
            })
            .collect();
        table += &format!("{name} | {} |\n", cells.join(" | "));
    }
    table += &format!(
        "| alerts withdrawn as `corrected` (an event in flight when the deadline fired) | {} |\n",
        columns
            .iter()
            .map(|(_, b)| format!(
                "{} of {} ({:.2}%)",
                b.corrected,
                b.alerts,
                100.0 * b.corrected_share()
            ))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = args;
    table
}

/// `/proc/loadavg`'s first three fields.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A `vigia serve` of one step: fresh topics, ClickHouse database and inbox.
struct Serve {
    child: ChildProcess,
    name: String,
    data_dir: PathBuf,
    base_url: String,
    keys: Vec<String>,
}

impl Serve {
    async fn start(config: &Config, args: &PipelineArgs, tenants: u64) -> Result<Serve> {
        let run_id = Uuid::new_v4().simple().to_string();
        let name = format!("benchpipe{}", &run_id[..10]);
        let data_dir = std::env::temp_dir().join(format!("vigia-{name}"));
        std::fs::create_dir_all(&data_dir)?;
        let port = free_port()?;
        let keys: Vec<String> = (1..=tenants)
            .map(|t| format!("bench-key-{t}={t}"))
            .collect();
        let mut child = ChildProcess::start(
            "serve",
            &[
                ("VIGIA_KAFKA_BROKERS", config.kafka.brokers.clone()),
                ("VIGIA_KAFKA_TOPIC_PREFIX", format!("{name}.")),
                ("VIGIA_CLICKHOUSE_URL", config.clickhouse.url.clone()),
                ("VIGIA_CLICKHOUSE_DATABASE", name.clone()),
                ("VIGIA_HTTP_ADDR", format!("127.0.0.1:{port}")),
                ("VIGIA_DATA_DIR", data_dir.display().to_string()),
                ("VIGIA_JWT_SECRET", SECRET.to_string()),
                ("VIGIA_API_KEYS", keys.join(",")),
                ("VIGIA_UNANSWERED_AFTER", args.unanswered_after.to_string()),
            ],
        )?;
        let base_url = format!("http://127.0.0.1:{port}");
        wait_ready(&base_url, &mut child).await?;
        Ok(Serve {
            child,
            name,
            data_dir,
            base_url,
            keys,
        })
    }

    async fn tap(&self, config: &Config, tenants: u64) -> Result<latency::Tap> {
        let ws = self.base_url.replacen("http://", "ws://", 1);
        latency::Tap::start(config, &format!("{}.", self.name), &ws, SECRET, tenants).await
    }

    async fn stop(mut self, config: &Config) {
        self.child.stop();
        let _ = drop_clickhouse_database(config, &self.name).await;
        // A step's checkpoints alone can be a gigabyte: leave nothing in the broker.
        let client = crate::kafka::base_client_config(&config.kafka, "vigia-bench");
        let topics = vigia_schemas::Topics::with_prefix(&format!("{}.", self.name));
        delete_topics(&client, &topics).await;
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Deletes every topic of `topics` (best effort: a benchmark's leftovers, not its result).
async fn delete_topics(client: &rdkafka::ClientConfig, topics: &vigia_schemas::Topics) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let Ok(admin) = client.create::<AdminClient<rdkafka::client::DefaultClientContext>>() else {
        return;
    };
    let _ = admin
        .delete_topics(&topics.all(), &AdminOptions::new())
        .await;
}

/// Deadlines on an idle stream: a burst of never-answered conversations, then nothing posted
/// while their deadlines fire.
async fn burst_step(config: &Config, args: &PipelineArgs) -> Result<latency::Breakdown> {
    let serve = Serve::start(config, args, 1).await?;
    let tap = serve.tap(config, 1).await?;
    let from = Utc::now();
    let key = serve.keys[0]
        .split('=')
        .next()
        .unwrap_or_default()
        .to_string();
    let posted = latency::post_unanswered_burst(
        &serve.base_url,
        &key,
        1,
        args.idle_burst,
        *args.idle_burst_span,
    )
    .await;
    if posted.is_ok() {
        // The last deadline, and time for its frame.
        tokio::time::sleep(*args.unanswered_after + Duration::from_secs(3)).await;
    }
    let breakdown = tap.finish(from).await;
    serve.stop(config).await;
    posted?;
    breakdown
}

/// Runs `vigia serve` (fresh topics, database and inbox) and the simulator at `shape` against it.
async fn run_step(config: &Config, args: &PipelineArgs, shape: &StepShape) -> Result<Step> {
    let (rate, tenants) = (shape.rate, shape.tenants);
    let serve = Serve::start(config, args, tenants).await?;
    let (base_url, keys, data_dir) = (&serve.base_url, &serve.keys, &serve.data_dir);
    let tap = serve.tap(config, tenants).await?;

    let mut sim_config = config.clone();
    sim_config.gateway.jwt_secret = SECRET.into();
    sim_config.ingest.api_keys =
        vigia_ingest::parse_api_keys(&keys.join(",")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let report_path = data_dir.join("report.json");
    let sim_args = {
        let linger = *args.unanswered_after + Duration::from_secs(5);
        simulate_args([
            "simulate".to_string(),
            format!("--target={base_url}"),
            format!("--tenants={tenants}"),
            format!("--sellers={}", args.sellers),
            format!("--rate={rate}"),
            format!("--warmup={}", humantime::format_duration(shape.warmup)),
            format!("--duration={}", humantime::format_duration(shape.measured)),
            // Late deliveries (1%) come 10 s late instead of 2 min, and answers within 40 s
            // (half of them after the 20 s threshold: withdrawals), so a step ends sooner.
            "--late-by=10s".to_string(),
            // Deliberately delayed deliveries would be measured as latency (the measurer counts
            // from the answer's event time): the pipeline's own latency needs them off.
            "--out-of-order-share=0".to_string(),
            "--late-share=0".to_string(),
            "--reply-max=40s".to_string(),
            "--measure".to_string(),
            format!("--linger={}", humantime::format_duration(linger)),
            format!("--report={}", report_path.display()),
        ])?
    };
    let from = Utc::now() + shape.warmup;
    if let Err(e) = crate::simulate::run(&sim_config, sim_args).await {
        tracing::warn!(rate, error = %e, "the simulator reported a failure");
    }
    let breakdown = tap.finish(from).await;
    let report: Value = std::fs::read_to_string(&report_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    serve.stop(config).await;
    let mut step = step_from_report(rate, &report);
    match breakdown {
        Ok(b) => {
            eprintln!("rate {rate}: hops {}", b.json());
            step.breakdown = Some(b);
        }
        Err(e) => tracing::warn!(rate, error = %e, "the tap failed"),
    }
    Ok(step)
}

/// The step's figures from the simulator's report (`Value::Null` if it wrote none: then the
/// step shows as failed, never as sustained).
fn step_from_report(rate: f64, report: &Value) -> Step {
    let n = &report["notifications"];
    let figures = |kind: &str| {
        let k = &n[kind];
        (
            k["p50_ms"].as_f64().unwrap_or(f64::NAN),
            k["p99_ms"].as_f64().unwrap_or(f64::NAN),
            k["count"].as_u64().unwrap_or(0),
        )
    };
    Step {
        target_rate: rate,
        posted_rate: report["window"]["events_per_second"]
            .as_f64()
            .unwrap_or(0.0),
        events: report["events_posted"].as_u64().unwrap_or(0),
        failed: report["events_failed"].as_u64().unwrap_or(u64::MAX),
        post_p99: report["post_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
        e2e: figures("unanswered_conversation.withdrawal"),
        deadline: figures("unanswered_conversation"),
        disconnections: n["disconnections"].as_array().map_or(usize::MAX, Vec::len),
        breakdown: None,
    }
}

async fn drop_clickhouse_database(config: &Config, name: &str) -> Result<()> {
    reqwest::Client::new()
        .post(&config.clickhouse.url)
        .basic_auth(&config.clickhouse.user, Some(&config.clickhouse.password))
        .body(format!("DROP DATABASE IF EXISTS {name}"))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

fn processors(config: Config, args: ProcessorsArgs) -> Result<()> {
    use vigia_processors::PartitionEngine;
    use vigia_schemas::Event;

    let stream = args.stream()?;
    let start = args.start;
    let mut generator = crate::simulate::Generator::new(stream.clone(), start)?;
    let mut records: Vec<(DateTime<Utc>, Vec<u8>)> = Vec::new();
    while let Some(d) = generator.next_delivery() {
        records.push((d.deliver_at, serde_json::to_vec(&d.event)?));
    }
    if records.is_empty() {
        bail!("the simulator produced no events: raise --rate or --duration");
    }
    let engine_config = Arc::new(config.processors.clone());
    let delay = chrono::Duration::from_std(config.processors.watermark_delay)?;
    eprintln!(
        "{} events ({} tenants × {} sellers, {} of event time); {} runs",
        records.len(),
        stream.tenants,
        stream.sellers,
        stream.duration,
        args.repeat
    );

    // The hash of every output, in order, from a pass outside the timed ones: an optimisation
    // must leave it unchanged (the same work, done faster).
    let hash = outputs_hash(&engine_config, delay, &records)?;
    eprintln!("outputs hash (FNV-1a 64 of every output in order): {hash:016x}");
    let full_pass =
        |records: &[(DateTime<Utc>, Vec<u8>)]| processors_full_pass(&engine_config, delay, records);
    // The engine alone, on events decoded beforehand.
    let decoded: Vec<(DateTime<Utc>, Event)> = records
        .iter()
        .map(|(at, p)| {
            Ok((
                *at,
                Event::from_json(std::str::from_utf8(p)?).map_err(|e| anyhow::anyhow!("{e:?}"))?,
            ))
        })
        .collect::<Result<_>>()?;
    let engine_pass = || {
        let heap_before = heap_in_use();
        let mut engine = PartitionEngine::new(engine_config.clone());
        let mut outputs = 0usize;
        let mut log_time: Option<DateTime<Utc>> = None;
        let started = Instant::now();
        for (at, event) in &decoded {
            if log_time.is_none_or(|t| *at > t) {
                log_time = Some(*at);
                outputs += engine.advance_watermark(*at - delay).len();
            }
            outputs += engine.on_event(event).len();
        }
        let secs = started.elapsed().as_secs_f64();
        // Every output was dropped as it came: what the pass left allocated is the state.
        let state_heap = heap_before
            .zip(heap_in_use())
            .map(|(b, a)| a.saturating_sub(b));
        (secs, outputs, engine, state_heap)
    };

    let mut full_rates = Vec::new();
    let mut engine_rates = Vec::new();
    let mut outputs_seen = None;
    let mut final_engine = None;
    let mut state_heap = None;
    for run in 0..args.repeat.max(1) {
        let (secs, outputs, bytes, full_engine) = full_pass(&records)?;
        drop(full_engine);
        let (engine_secs, engine_outputs, engine, heap) = engine_pass();
        state_heap = heap;
        // The state at the end of the stream, for the checkpoint's costs below.
        final_engine = Some(engine);
        // Deterministic: every run gives the same outputs.
        if let Some(prev) = outputs_seen.replace((outputs, bytes, engine_outputs)) {
            if prev != (outputs, bytes, engine_outputs) {
                bail!(
                    "run {run} gave different outputs: {prev:?} then {:?}",
                    (outputs, bytes, engine_outputs)
                );
            }
        }
        full_rates.push(records.len() as f64 / secs);
        engine_rates.push(records.len() as f64 / engine_secs);
        eprintln!(
            "run {}: {:.0} events/s (decode + engine + serialise), {:.0} events/s (engine alone)",
            run + 1,
            records.len() as f64 / secs,
            records.len() as f64 / engine_secs
        );
    }
    let (outputs, bytes, _) = outputs_seen.unwrap_or_default();
    let engine = final_engine.context("no run")?;
    let checkpoint = checkpoint_costs(&engine_config, &engine, args.repeat.max(1))?;
    eprintln!("{checkpoint:?}");
    let median = |xs: &mut Vec<f64>| percentile(xs, 0.5);
    let spread = |xs: &[f64]| {
        let min = xs.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = xs.iter().cloned().fold(0.0, f64::max);
        (min, max)
    };
    let (full_min, full_max) = spread(&full_rates);
    let (engine_min, engine_max) = spread(&engine_rates);
    let full = median(&mut full_rates);
    let engine = median(&mut engine_rates);
    let json = json!({
        "events": records.len(), "outputs": outputs, "output_bytes": bytes,
        "outputs_hash": format!("{hash:016x}"),
        "runs": args.repeat,
        "events_per_second_full": {"median": full, "min": full_min, "max": full_max},
        "events_per_second_engine": {"median": engine, "min": engine_min, "max": engine_max},
        "engine_share_of_time": full / engine,
        "state_heap_bytes": state_heap,
        "checkpoint": {
            "bytes": checkpoint.bytes,
            "copy_ms": checkpoint.copy_ms, "serialize_ms": checkpoint.serialize_ms,
            "restore_ms": checkpoint.restore_ms,
        },
    });
    println!("{}", serde_json::to_string_pretty(&json)?);
    let command = format!(
        "cargo run --release -- bench processors --repeat {} --tenants {} --sellers {} --rate {} \
         --duration {} --seed {} --start {}",
        args.repeat,
        stream.tenants,
        stream.sellers,
        stream.rate,
        stream.duration,
        stream.seed,
        start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let markdown = format!(
        "## Processors: rule logic alone, one core, no Kafka\n\n\
         Reproduce: `{command}`\n\n\
         Measured {date} on this machine ({cores} cores; one thread). The simulator's fixed-seed \
         stream ({events} events with its duplicates, out-of-order and late deliveries) is \
         decoded and validated from JSON as the runner does it, applied to one \
         `PartitionEngine` with the clock watermark advancing with the delivery times, and \
         every output serialised ({outputs} outputs, {mib:.1} MiB; FNV-1a 64 hash of all of them \
         in order `{hash:016x}`). Median of {runs} runs \
         (min–max in brackets).\n\n\
         | pass | events/s per core |\n|---|---|\n\
         | decode + rules + serialise outputs | **{full:.0}** ({full_min:.0}–{full_max:.0}) |\n\
         | rules alone (events decoded beforehand) | {engine:.0} ({engine_min:.0}–{engine_max:.0}) |\n\n\
         The rules take {share:.0}% of a full pass; JSON decoding and encoding the rest.\n\n\
         The engine's state at the end of the stream: {heap} in memory (glibc's heap in use \
         that the pass left allocated); as a checkpoint ([`PartitionEngine::snapshot`]) \
         {ckpt_mb:.1} MB; copy (on the runner's loop) {copy:.1} ms, serialize {ser:.0} ms, \
         restore {restore:.0} ms (medians of {runs}).\n",
        heap = state_heap.map_or_else(
            || "not measured (not glibc)".to_string(),
            |b| format!("{:.1} MB", b as f64 / 1e6)
        ),
        ckpt_mb = checkpoint.bytes as f64 / 1e6,
        copy = checkpoint.copy_ms,
        ser = checkpoint.serialize_ms,
        restore = checkpoint.restore_ms,
        date = Utc::now().format("%Y-%m-%d"),
        cores = std::thread::available_parallelism().map_or(0, |n| n.get()),
        events = records.len(),
        mib = bytes as f64 / (1024.0 * 1024.0),
        runs = args.repeat,
        share = 100.0 * full / engine,
    );
    write_section(&args.out, "processors", &markdown)?;
    eprintln!("wrote the processors section of {}", args.out.display());
    Ok(())
}

/// What a checkpoint of the engine at the end of the stream costs (medians of `runs`).
#[derive(Debug)]
struct CheckpointCosts {
    bytes: usize,
    copy_ms: f64,
    serialize_ms: f64,
    restore_ms: f64,
}

fn checkpoint_costs(
    engine_config: &Arc<vigia_processors::Config>,
    engine: &vigia_processors::PartitionEngine,
    runs: usize,
) -> Result<CheckpointCosts> {
    use vigia_processors::PartitionEngine;
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    let (mut copy, mut serialize, mut restore) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let copied = engine.clone();
        copy.push(ms(t));
        let t = Instant::now();
        let snapshot = copied.snapshot();
        serialize.push(ms(t));
        bytes = snapshot.len();
        let t = Instant::now();
        let restored = PartitionEngine::restore(engine_config.clone(), &snapshot)
            .map_err(|e| anyhow::anyhow!("the engine's own snapshot did not restore: {e}"))?;
        restore.push(ms(t));
        drop((copied, restored));
    }
    Ok(CheckpointCosts {
        bytes,
        copy_ms: percentile(&mut copy, 0.5),
        serialize_ms: percentile(&mut serialize, 0.5),
        restore_ms: percentile(&mut restore, 0.5),
    })
}

/// The bytes glibc's allocator has handed out and not taken back (`None` off glibc). The
/// state's size in memory decides how much of it each event's random reads miss in the caches
/// and the TLB, which on the 1-hour stream is most of what separates it from the 5-minute one.
fn heap_in_use() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallinfo2` takes no arguments and only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        Some(info.uordblks + info.hblkhd)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// One output as the runner serialises it into its record's payload (a refused event: the
/// words of its dead letter, which stand in for the dead letter the runner writes).
fn serialise_output(o: &vigia_processors::Output) -> Vec<u8> {
    use vigia_processors::Output;
    o.to_json().unwrap_or_else(|| match o {
        Output::TooLate(t) => t.to_string().into_bytes(),
        Output::OverLimit(o) => o.to_string().into_bytes(),
        _ => unreachable!("only refused events have no record of their own"),
    })
}

/// One pass as the runner does it: decode, advance the clock watermark, apply, serialise.
/// Returns its seconds, outputs and output bytes, and the engine at the end of the stream:
/// the caller drops it, outside the timed span and the instructions counted (a runner keeps
/// its state; freeing a whole hour of it is not part of processing the events, and took ~5 %
/// of the pass). Not inlined, so that `scripts/bench-callgrind.sh` can count the instructions
/// of this pass alone (`--toggle-collect`), without the simulator that made the stream.
#[inline(never)]
fn processors_full_pass(
    engine_config: &Arc<vigia_processors::Config>,
    delay: chrono::Duration,
    records: &[(DateTime<Utc>, Vec<u8>)],
) -> Result<(f64, usize, u64, vigia_processors::PartitionEngine)> {
    let (mut outputs, mut bytes) = (0usize, 0u64);
    let started = Instant::now();
    let engine = apply_stream(engine_config, delay, records, |o| {
        bytes += serialise_output(o).len() as u64;
        outputs += 1;
    })?;
    Ok((started.elapsed().as_secs_f64(), outputs, bytes, engine))
}

/// The FNV-1a 64 hash of every output of the stream, in order: its kind and its serialised
/// bytes (length-prefixed). Written out here rather than taken from a crate so that the figure
/// in BENCHMARKS.md stays comparable across versions of anything.
fn outputs_hash(
    engine_config: &Arc<vigia_processors::Config>,
    delay: chrono::Duration,
    records: &[(DateTime<Utc>, Vec<u8>)],
) -> Result<u64> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    apply_stream(engine_config, delay, records, |o| {
        let payload = serialise_output(o);
        feed(o.kind().as_bytes());
        feed(&(payload.len() as u64).to_le_bytes());
        feed(&payload);
    })?;
    Ok(hash)
}

/// Decodes every record as the runner does, advances the clock watermark with the delivery
/// times and applies the event to one fresh engine, handing every output to `each`.
fn apply_stream(
    engine_config: &Arc<vigia_processors::Config>,
    delay: chrono::Duration,
    records: &[(DateTime<Utc>, Vec<u8>)],
    mut each: impl FnMut(&vigia_processors::Output),
) -> Result<vigia_processors::PartitionEngine> {
    use vigia_processors::PartitionEngine;
    let mut engine = PartitionEngine::new(engine_config.clone());
    let mut log_time: Option<DateTime<Utc>> = None;
    for (at, payload) in records {
        if log_time.is_none_or(|t| *at > t) {
            log_time = Some(*at);
            engine
                .advance_watermark(*at - delay)
                .iter()
                .for_each(&mut each);
        }
        let event = vigia_schemas::decode_event(Some(payload))
            .map_err(|e| anyhow::anyhow!("the simulator made an invalid event: {e}"))?;
        engine.on_event(&event).iter().for_each(&mut each);
    }
    Ok(engine)
}

/// The tenant the benchmark's clients belong to.
const TENANT: u64 = 1;
const SECRET: &str = "vigia-bench-gateway-secret";

async fn gateway(config: Config, args: GatewayArgs) -> Result<()> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    raise_fd_limit(args.connections)?;
    let run_id = Uuid::new_v4().simple().to_string();
    let prefix = format!("bench{}.", &run_id[..12]);
    let mut kafka = config.kafka.clone();
    kafka.topic_prefix = prefix.clone();
    let topics = vigia_schemas::Topics::with_prefix(&prefix);
    let base = crate::kafka::base_client_config(&kafka, "vigia-bench");
    crate::kafka::ensure_topics(&base, &kafka, &topics).await?;
    let producer: FutureProducer = base
        .clone()
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .create()
        .context("cannot create the benchmark's Kafka producer")?;

    let data_dir = std::env::temp_dir().join(format!("vigia-bench-{run_id}"));
    std::fs::create_dir_all(&data_dir)?;
    let port = free_port()?;
    let mut child = ChildProcess::start(
        "gateway",
        &[
            ("VIGIA_KAFKA_BROKERS", config.kafka.brokers.clone()),
            ("VIGIA_KAFKA_TOPIC_PREFIX", prefix.clone()),
            ("VIGIA_HTTP_ADDR", format!("127.0.0.1:{port}")),
            ("VIGIA_DATA_DIR", data_dir.display().to_string()),
            (
                "VIGIA_DATABASE_URL",
                format!("sqlite://{}/gateway.db?mode=rwc", data_dir.display()),
            ),
            ("VIGIA_JWT_SECRET", SECRET.to_string()),
        ],
    )?;
    let base_url = format!("http://127.0.0.1:{port}");
    wait_ready(&base_url, &mut child).await?;
    // Let the consumer join its group and the process settle before the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = child.rss_kib()?;

    eprintln!("opening {} WebSocket connections…", args.connections);
    let started = Instant::now();
    let clients = Clients::connect(port, &args).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    // The greeting frames (connection_established, unread_count) settle the per-connection state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = child.rss_kib()?;
    eprintln!(
        "{} connected in {connect_secs:.1} s; gateway RSS {} → {} KiB",
        args.connections, rss_before, rss_connected
    );

    // Broadcasts: each to every client.
    let mut broadcast_ids = Vec::new();
    for _ in 0..args.broadcasts {
        let n = notification(Audience::Role { role: Role::Seller });
        broadcast_ids.push(n.id);
        produce(&producer, &topics.notifications, &n).await?;
        tokio::time::sleep(*args.broadcast_every).await;
    }
    // Single users.
    let mut single_ids: HashMap<Uuid, u64> = HashMap::new();
    let mut rng_state = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..args.singles {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let user = 1 + rng_state % args.connections as u64;
        let n = notification(Audience::User { user_id: user });
        single_ids.insert(n.id, user);
        produce(&producer, &topics.notifications, &n).await?;
        tokio::time::sleep(*args.single_every).await;
    }
    let rss_after = child.rss_kib()?;

    // Wait until every expected frame arrived, or 30 s of silence.
    let expected = args.connections * args.broadcasts + args.singles;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (clients.received(), Instant::now());
    while clients.received() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = clients.received();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    let closed_early = clients.closed_early();
    let samples = clients.finish().await;
    child.stop();
    let _ = std::fs::remove_dir_all(&data_dir);

    let report = GatewayReport::from_samples(
        &args,
        &samples,
        &broadcast_ids,
        &single_ids,
        closed_early,
        connect_secs,
        [rss_before, rss_connected, rss_after],
    );
    println!("{}", serde_json::to_string_pretty(&report.json)?);
    write_section(&args.out, "gateway", &report.markdown)?;
    eprintln!("wrote the gateway section of {}", args.out.display());
    if report.missing > 0 || report.duplicated > 0 || report.misdelivered > 0 {
        bail!(
            "{} frames missing, {} duplicated, {} delivered to the wrong client",
            report.missing,
            report.duplicated,
            report.misdelivered
        );
    }
    Ok(())
}

fn notification(audience: Audience) -> Notification {
    let kind = NotificationType::UnansweredConversation;
    Notification {
        id: Uuid::new_v4(),
        tenant_id: TENANT,
        kind,
        priority: kind.default_priority(),
        audience,
        title: "Conversación sin responder".into(),
        message: "Un cliente espera respuesta desde hace 1 h".into(),
        data: json!({"conversation_id": 1}),
        actions: vec![],
        created_at: Utc::now(),
        withdraws: None,
    }
}

async fn produce(producer: &FutureProducer, topic: &str, n: &Notification) -> Result<()> {
    let payload = serde_json::to_vec(n)?;
    let key = n.tenant_id.to_string();
    producer
        .send(
            FutureRecord::to(topic).key(&key).payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("cannot produce a notification to {topic}: {e}"))?;
    Ok(())
}

/// One received notification frame: (client's user id, notification id, ms since created_at).
type Sample = (u64, Uuid, f64);

struct Clients {
    tasks: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
    received: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
}

impl Clients {
    async fn connect(port: u16, args: &GatewayArgs) -> Result<Clients> {
        let received = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
        let mut opening = Vec::with_capacity(args.connections);
        for user in 1..=args.connections as u64 {
            let gate = gate.clone();
            let token = vigia_gateway::issue_token(
                SECRET,
                user,
                TENANT,
                Role::Seller,
                Duration::from_secs(24 * 3600),
            );
            opening.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await;
                let url = format!("ws://127.0.0.1:{port}/ws?token={token}");
                let mut attempt = 0;
                loop {
                    match tokio_tungstenite::connect_async(url.as_str()).await {
                        Ok((ws, _)) => return Ok((user, ws)),
                        Err(e) if attempt < 5 => {
                            attempt += 1;
                            tracing::debug!(user, error = %e, "connect failed; retrying");
                            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                        }
                        Err(e) => return Err(anyhow::anyhow!("client {user}: {e}")),
                    }
                }
            }));
        }
        let mut tasks = Vec::with_capacity(args.connections);
        for opened in opening {
            let (user, ws) = opened.await??;
            let (received, closed, stop) = (received.clone(), closed.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let (mut write, mut read) = ws.split();
                let mut seen = Vec::new();
                loop {
                    let msg = tokio::select! {
                        _ = stop.cancelled() => break,
                        msg = read.next() => msg,
                    };
                    let text = match msg {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            closed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Some(Ok(_)) => continue,
                    };
                    let now = Utc::now();
                    let Ok(v) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    match v["type"].as_str() {
                        Some("ping") => {
                            let pong = Message::Text(r#"{"type":"pong"}"#.into());
                            if write.send(pong).await.is_err() {
                                closed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                        Some("notification") => {
                            let n = if v["notification"].is_object() {
                                &v["notification"]
                            } else {
                                &v["data"]
                            };
                            let id = n["id"].as_str().and_then(|s| s.parse::<Uuid>().ok());
                            let at = n["created_at"]
                                .as_str()
                                .and_then(|s| s.parse::<DateTime<Utc>>().ok());
                            if let (Some(id), Some(at)) = (id, at) {
                                let ms = (now - at).num_microseconds().unwrap_or(0) as f64 / 1e3;
                                seen.push((user, id, ms));
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {}
                    }
                }
                seen
            }));
        }
        Ok(Clients {
            tasks,
            received,
            closed,
            stop,
        })
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::Relaxed)
    }

    fn closed_early(&self) -> usize {
        self.closed.load(Ordering::Relaxed)
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.cancel();
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap_or_default());
        }
        all
    }
}

struct GatewayReport {
    json: Value,
    markdown: String,
    missing: usize,
    duplicated: usize,
    misdelivered: usize,
}

impl GatewayReport {
    fn from_samples(
        args: &GatewayArgs,
        samples: &[Sample],
        broadcasts: &[Uuid],
        singles: &HashMap<Uuid, u64>,
        closed_early: usize,
        connect_secs: f64,
        [rss_before, rss_connected, rss_after]: [u64; 3],
    ) -> GatewayReport {
        let mut broadcast_ms = Vec::new();
        let mut single_ms = Vec::new();
        // The slowest client of each broadcast: when the fan-out was complete.
        let mut complete_ms: HashMap<Uuid, f64> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        let (mut duplicated, mut misdelivered) = (0, 0);
        for &(user, id, ms) in samples {
            if !seen.insert((user, id)) {
                duplicated += 1;
                continue;
            }
            if broadcasts.contains(&id) {
                broadcast_ms.push(ms);
                let c = complete_ms.entry(id).or_insert(0.0);
                *c = c.max(ms);
            } else if let Some(&target) = singles.get(&id) {
                if target == user {
                    single_ms.push(ms);
                } else {
                    misdelivered += 1;
                }
            }
        }
        let expected = args.connections * broadcasts.len() + singles.len();
        let missing = expected.saturating_sub(broadcast_ms.len() + single_ms.len());
        let mut complete: Vec<f64> = complete_ms.into_values().collect();
        let per_conn =
            |rss: u64| (rss.saturating_sub(rss_before) as f64 * 1024.0) / args.connections as f64;
        let q = |xs: &mut Vec<f64>, p: f64| percentile(xs, p);
        let (b50, b99) = (q(&mut broadcast_ms, 0.5), q(&mut broadcast_ms, 0.99));
        let (c50, c99) = (q(&mut complete, 0.5), q(&mut complete, 0.99));
        let (s50, s99) = (q(&mut single_ms, 0.5), q(&mut single_ms, 0.99));
        let json = json!({
            "connections": args.connections,
            "connect_seconds": connect_secs,
            "broadcasts": broadcasts.len(),
            "broadcast_frames": broadcast_ms.len(),
            "broadcast_latency_ms": {"p50": b50, "p99": b99},
            "broadcast_complete_ms": {"p50": c50, "p99": c99},
            "singles": singles.len(),
            "single_latency_ms": {"p50": s50, "p99": s99},
            "missing": missing, "duplicated": duplicated, "misdelivered": misdelivered,
            "closed_early": closed_early,
            "gateway_rss_kib": {"before": rss_before, "connected": rss_connected, "after_pushes": rss_after},
            "bytes_per_connection": {"idle": per_conn(rss_connected), "after_pushes": per_conn(rss_after)},
        });
        let command = format!(
            "bash scripts/services.sh up && cargo run --release -- bench gateway \
             --connections {} --broadcasts {} --broadcast-every {} --singles {} --single-every {}",
            args.connections,
            args.broadcasts,
            args.broadcast_every,
            args.singles,
            args.single_every
        );
        let markdown = format!(
            "## Gateway: fan-out to {conns} WebSocket clients\n\n\
             Reproduce: `{command}`\n\n\
             Measured {date} on this machine ({cores} cores), gateway and clients on the same \
             cores, broker: the local Apache Kafka. Latency = frame received by the client − \
             `created_at` stamped when the notification was produced to Kafka (includes the \
             Kafka hop and the inbox write).\n\n\
             | figure | p50 | p99 |\n|---|---|---|\n\
             | broadcast to all {conns} clients, per frame (ms) | {b50:.0} | {b99:.0} |\n\
             | broadcast, until the last client has it (ms) | {c50:.0} | {c99:.0} |\n\
             | single-user notification (ms) | {s50:.0} | {s99:.0} |\n\n\
             - {nb} broadcasts ({bf} frames) and {ns} single-user notifications; missing {missing}, \
             duplicated {duplicated}, delivered to the wrong client {misdelivered}, connections \
             closed early {closed_early}.\n\
             - Connecting {conns} clients took {connect_secs:.1} s.\n\
             - Gateway memory (resident set): {before} KiB before, {connected} KiB with \
             {conns} idle connections, {after} KiB after the pushes: **{idle:.0} bytes per idle \
             connection**, {busy:.0} bytes per connection after the pushes (inbox cache and \
             allocator growth included).\n",
            conns = args.connections,
            date = Utc::now().format("%Y-%m-%d"),
            cores = std::thread::available_parallelism().map_or(0, |n| n.get()),
            nb = broadcasts.len(),
            bf = broadcast_ms.len(),
            ns = singles.len(),
            before = rss_before,
            connected = rss_connected,
            after = rss_after,
            idle = per_conn(rss_connected),
            busy = per_conn(rss_after),
        );
        GatewayReport {
            json,
            markdown,
            missing,
            duplicated,
            misdelivered,
        }
    }
}

/// A `vigia` child process (this binary), killed when dropped.
struct ChildProcess {
    child: std::process::Child,
}

impl ChildProcess {
    /// `VIGIA_BENCH_SERVE_BIN` names another `vigia` binary to start (e.g. an earlier build,
    /// for a before/after comparison in the same conditions); by default this one.
    fn start(subcommand: &str, env: &[(&str, String)]) -> Result<ChildProcess> {
        let exe = match std::env::var_os("VIGIA_BENCH_SERVE_BIN") {
            Some(bin) => PathBuf::from(bin),
            None => std::env::current_exe().context("cannot find the vigia binary")?,
        };
        let mut cmd = std::process::Command::new(exe);
        cmd.arg(subcommand)
            .env(
                "RUST_LOG",
                std::env::var("VIGIA_BENCH_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `vigia {subcommand}`"))?;
        Ok(ChildProcess { child })
    }

    /// The child's resident set size in KiB.
    fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("cannot read the gateway's memory (/proc: Linux only)")?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS in /proc/<pid>/status")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn wait_ready(base: &str, child: &mut ChildProcess) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = child.child.try_wait()? {
            bail!("the `vigia` child exited at start-up ({status}); see its log above");
        }
        if let Ok(r) = client.get(format!("{base}/health/readiness")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the `vigia` child was not ready within 60 s")
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Each connection is a file descriptor in the benchmark and in the gateway (which inherits the
/// limit): raise the soft limit to the hard one, and refuse early if that is not enough.
fn raise_fd_limit(connections: usize) -> Result<()> {
    let needed = connections as u64 + 512;
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if soft < needed {
        rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard)?;
    }
    if hard < needed {
        bail!(
            "{connections} connections need {needed} open files, and this shell allows {hard}: \
             raise it (ulimit -Hn) or open fewer (--connections)"
        );
    }
    Ok(())
}

/// A duration as one shell word for a reproduce command ("150s", not humantime's "2m 30s").
pub fn cli_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Replaces the `name` section of the results file (between its markers), or appends it.
pub fn write_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let begin = format!("<!-- bench:{name} -->");
    let end = format!("<!-- /bench:{name} -->");
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| {
        "# Benchmarks\n\nWritten by `vigia bench …`; each section says how to reproduce it.\n"
            .to_string()
    });
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{section}{}", &old[..b], &old[e + end.len()..])
        }
        _ => format!("{}\n{section}\n", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_commands_are_one_shell_word() {
        assert_eq!(cli_duration(Duration::from_secs(150)), "150s");
        assert_eq!(cli_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(cli_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn a_section_is_replaced_in_place_and_others_are_kept() {
        let path = std::env::temp_dir().join(format!("bench-{}.md", Uuid::new_v4()));
        write_section(&path, "gateway", "one").unwrap();
        write_section(&path, "processors", "two").unwrap();
        write_section(&path, "gateway", "three").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Benchmarks"));
        assert!(!text.contains("one"));
        let g = text.find("three").unwrap();
        let p = text.find("two").unwrap();
        assert!(g < p, "the gateway section stays first: {text}");
        assert_eq!(text.matches("<!-- bench:gateway -->").count(), 1);
        let _ = std::fs::remove_file(path);
    }

    /// The processors benchmark on a short stream: it fails if two runs over the same events
    /// give outputs that differ by a single byte (as HashMap iteration order once made the
    /// seller metrics' sums do).
    #[test]
    fn the_processors_benchmark_gives_identical_outputs_run_after_run() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            bench: Bench,
        }
        let out = std::env::temp_dir().join(format!("bench-{}.md", Uuid::new_v4()));
        let out_arg = out.to_str().unwrap().to_string();
        let argv = [
            "x",
            "processors",
            "--repeat",
            "3",
            "--duration",
            "3m",
            "--out",
            &out_arg,
        ];
        let Bench::Processors(args) = Cli::parse_from(argv).bench else {
            unreachable!()
        };
        processors(Config::default(), args).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("events/s per core"), "{text}");
        assert!(text.contains("bench processors --repeat 3"), "{text}");
        let _ = std::fs::remove_file(out);
    }

    fn report(window_rate: f64, e2e_p99: f64) -> Value {
        json!({
            "events_posted": 61000, "events_failed": 0,
            "window": {"seconds": 60.0, "events_posted": 60 * window_rate as u64,
                       "events_per_second": window_rate},
            "post_ms": {"p99": 12.0},
            "notifications": {
                "unanswered_conversation.withdrawal": {"count": 900, "p50_ms": 150.0, "p99_ms": e2e_p99},
                "unanswered_conversation": {"count": 4000, "p50_ms": 1100.0, "p99_ms": 1300.0},
                "warmup_excluded": 7,
                "disconnections": [],
            },
        })
    }

    fn pipeline_args(extra: &[&str]) -> PipelineArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            bench: Bench,
        }
        let mut argv = vec!["x", "pipeline"];
        argv.extend_from_slice(extra);
        let Bench::Pipeline(args) = Cli::parse_from(argv).bench else {
            unreachable!()
        };
        args
    }

    #[test]
    fn a_step_is_sustained_only_when_it_posted_its_target_within_the_latency_limit() {
        let ok = step_from_report(1000.0, &report(980.0, 300.0));
        assert_eq!(ok.posted_rate, 980.0);
        assert_eq!(ok.e2e, (150.0, 300.0, 900));
        assert_eq!(ok.deadline.2, 4000);
        assert!(ok.sustained(1000.0), "{ok:?}");
        // Half the target posted: the figures do not describe that rate.
        assert!(!step_from_report(1000.0, &report(524.0, 300.0)).sustained(1000.0));
        assert!(!step_from_report(1000.0, &report(980.0, 1500.0)).sustained(1000.0));
        // No report at all (the simulator died): failed, never sustained.
        let none = step_from_report(1000.0, &Value::Null);
        assert!(!none.sustained(1000.0));
        assert_eq!(none.failed, u64::MAX);
    }

    #[test]
    fn the_pipeline_section_shows_posted_over_target_and_the_headline_rates() {
        let args = pipeline_args(&["--rates", "1000,2000,5000", "--all-rates"]);
        let steps = vec![
            step_from_report(1000.0, &report(990.0, 250.0)),
            step_from_report(2000.0, &report(1960.0, 400.0)),
            step_from_report(5000.0, &report(4000.0, 4000.0)),
        ];
        let idle = step_from_report(2.0, &report(2.0, 0.0));
        let mut steps = steps;
        steps[1].breakdown = Some(latency::Breakdown {
            alerts: 400,
            corrected: 1,
            ..Default::default()
        });
        let burst = latency::Breakdown {
            alerts: 600,
            ..Default::default()
        };
        let text = pipeline_markdown(&Config::default(), &args, Some(&burst), Some(&idle), &steps);
        assert!(
            text.contains("| hop | idle burst | 2000 events/s |"),
            "{text}"
        );
        assert!(
            text.contains("| 0 of 600 (0.00%) | 1 of 400 (0.25%) |"),
            "{text}"
        );
        assert!(text.contains("n = 0 of 600 alerts"), "{text}");
        assert!(text.contains("`watermark_delay` = 50ms"), "{text}");
        assert!(text.contains("| 1000 | 990 | 0.99 |"), "{text}");
        assert!(text.contains("| 5000 | 4000 | 0.80 |"), "{text}");
        assert!(
            text.contains("End to end at 1000 events/s: p50 150 ms, p99 250 ms"),
            "{text}"
        );
        assert!(
            text.contains("End to end at 5000 events/s: p50 150 ms, p99 4000 ms"),
            "{text}"
        );
        assert!(
            text.contains("Highest sustained rate: 2000 events/s"),
            "{text}"
        );
        assert!(text.contains("(n = 4000 alerts)"), "{text}");
        assert!(
            text.contains("--step 60s --warmup 90s") && text.contains("--all-rates"),
            "{text}"
        );
        let only_low = pipeline_markdown(&Config::default(), &args, None, None, &steps[..1]);
        assert!(!only_low.contains("Where the time goes"), "{only_low}");
        assert!(
            only_low.contains("End to end at 5000 events/s: not measured"),
            "{only_low}"
        );
    }

    fn args(connections: usize) -> GatewayArgs {
        GatewayArgs {
            connections,
            broadcasts: 1,
            broadcast_every: Duration::from_secs(1).into(),
            singles: 1,
            single_every: Duration::from_millis(5).into(),
            connect_concurrency: 10,
            out: "x".into(),
        }
    }

    #[test]
    fn the_report_counts_missing_duplicated_and_misdelivered_frames() {
        let (b, s) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let singles = HashMap::from([(s, 2)]);
        // Client 1 gets the broadcast twice and client 2's single; client 2 never gets the
        // broadcast.
        let samples = vec![(1, b, 10.0), (1, b, 11.0), (1, s, 5.0), (3, b, 30.0)];
        let r = GatewayReport::from_samples(
            &args(3),
            &samples,
            &[b],
            &singles,
            0,
            1.0,
            [100, 200, 300],
        );
        assert_eq!(
            (r.duplicated, r.misdelivered, r.missing),
            (1, 1, 2),
            "{}",
            r.json
        );
        assert_eq!(r.json["broadcast_complete_ms"]["p50"], 30.0);
        // (200 - 100) KiB over 3 connections.
        assert_eq!(
            r.json["bytes_per_connection"]["idle"].as_f64().unwrap(),
            100.0 * 1024.0 / 3.0
        );
    }
}
