//! `vigia`: the one binary. `serve` runs every stage in one process on one HTTP port; `ingest`,
//! `process`, `sink` and `gateway` run one stage each so a deployment scales them separately;
//! `migrate` prepares ClickHouse; `simulate` posts realistic CRM traffic; `token` prints a JWT.
//!
//! This file only wires configuration into the stage crates; the logic lives in them.

mod bench;
mod config;
mod http;
mod kafka;
mod simulate;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use clap::{Parser, Subcommand};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::{probe, Probe};

#[derive(Parser)]
#[command(name = "vigia", version, about = "Real-time sales analytics for CRMs")]
struct Cli {
    /// TOML configuration file (VIGIA_* environment variables override it).
    #[arg(long, global = true, env = "VIGIA_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every stage in one process: ingest, processors, ClickHouse sink, gateway.
    Serve,
    /// HTTP ingest only: POST /v1/events -> Kafka.
    Ingest,
    /// Stream processors only (scale out: run several in one consumer group).
    Process,
    /// Kafka -> ClickHouse sink only.
    Sink,
    /// Notification gateway only (WebSocket + inbox + REST).
    Gateway,
    /// Apply ClickHouse migrations and exit.
    Migrate,
    /// Post simulated CRM traffic to a running ingest.
    Simulate(simulate::Args),
    /// Benchmarks that write their figures into BENCHMARKS.md.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Print a JWT for the gateway (local use and tests).
    Token {
        #[arg(long)]
        user: u64,
        #[arg(long)]
        tenant: u64,
        /// ceo | manager | seller | secretary | supervisor
        #[arg(long, default_value = "ceo")]
        role: String,
        /// How long the token is valid, e.g. "12h".
        #[arg(long, default_value = "12h")]
        ttl: humantime::Duration,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rdkafka=warn,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => run_stages(config, Stages::all()).await,
        Command::Ingest => run_stages(config, Stages::only(|s| s.ingest = true)).await,
        Command::Process => run_stages(config, Stages::only(|s| s.process = true)).await,
        Command::Sink => run_stages(config, Stages::only(|s| s.sink = true)).await,
        Command::Gateway => run_stages(config, Stages::only(|s| s.gateway = true)).await,
        Command::Migrate => {
            let applied = vigia_sinks::migrate(&config.clickhouse)
                .await
                .with_context(|| {
                    format!(
                        "ClickHouse migrations failed at {} (VIGIA_CLICKHOUSE_URL)",
                        config.clickhouse.url
                    )
                })?;
            if applied.is_empty() {
                println!("ClickHouse schema is up to date");
            }
            for m in applied {
                println!("applied {m:?}");
            }
            Ok(())
        }
        Command::Simulate(args) => simulate::run(&config, args).await,
        Command::Bench(which) => bench::run(config, which).await,
        Command::Token {
            user,
            tenant,
            role,
            ttl,
        } => {
            let role: vigia_schemas::Role = serde_json::from_value(serde_json::json!(role))
                .context("--role must be one of ceo, manager, seller, secretary, supervisor")?;
            // With the configured issuer and audience, and within the maximum lifetime.
            let token = config
                .gateway
                .issue_token(user, tenant, role, ttl.into())
                .context("cannot mint the token")?;
            println!("{token}");
            Ok(())
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Stages {
    ingest: bool,
    process: bool,
    sink: bool,
    gateway: bool,
}

impl Stages {
    fn all() -> Self {
        Stages {
            ingest: true,
            process: true,
            sink: true,
            gateway: true,
        }
    }
    fn only(f: impl FnOnce(&mut Stages)) -> Self {
        let mut s = Stages::default();
        f(&mut s);
        s
    }
}

/// Starts the chosen stages, serves HTTP, and shuts down gracefully on Ctrl-C / SIGTERM.
async fn run_stages(config: Config, stages: Stages) -> Result<()> {
    let topics = config.topics();
    let base = kafka::base_client_config(&config.kafka, "vigia");
    kafka::ensure_topics(&base, &config.kafka, &topics).await?;
    if stages.sink {
        vigia_sinks::migrate(&config.clickhouse)
            .await
            .with_context(|| {
                format!(
                    "ClickHouse at {} (VIGIA_CLICKHOUSE_URL) is not usable; is it running? \
                     (locally: bash scripts/services.sh up)",
                    config.clickhouse.url
                )
            })?;
    }
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {} (VIGIA_DATA_DIR)",
            config.data_dir.display()
        )
    })?;

    let shutdown = CancellationToken::new();
    let mut registries = Vec::new();
    let mut probes: Vec<(&'static str, Probe)> = Vec::new();
    let mut app = Router::new();
    let mut tasks = tokio::task::JoinSet::new();

    {
        let base = base.clone();
        probes.push((
            "kafka",
            probe(move || {
                let base = base.clone();
                async move { kafka::broker_reachable(&base).await }
            }),
        ));
    }

    let mut ingest = None;
    if stages.ingest {
        let mut registry = Registry::default();
        let i = vigia_ingest::Ingest::new(config.ingest.clone(), &base, &topics, &mut registry)
            .context("cannot start ingest")?;
        app = app.merge(i.router());
        registries.push(registry);
        ingest = Some(i);
    }
    if stages.gateway {
        let mut registry = Registry::default();
        let g = vigia_gateway::Gateway::start(
            config.gateway.clone(),
            &base,
            &topics,
            &mut registry,
            shutdown.clone(),
        )
        .await
        .context("cannot start the gateway")?;
        app = app.merge(g.router());
        let probe_g = g.clone();
        probes.push((
            "inbox",
            probe(move || {
                let g = probe_g.clone();
                async move { g.ready().await }
            }),
        ));
        registries.push(registry);
    }
    if stages.process {
        let mut registry = Registry::default();
        let processors = vigia_processors::Processors::new(
            config.processors.clone(),
            &base,
            &topics,
            &mut registry,
        )
        .context("cannot start the processors")?;
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let result = processors.run(stop).await;
            ("processors", result.map_err(anyhow::Error::from))
        });
        registries.push(registry);
    }
    if stages.sink {
        let mut registry = Registry::default();
        let sink = vigia_sinks::Sink::new(config.clickhouse.clone(), &base, &topics, &mut registry)
            .context("cannot start the ClickHouse sink")?;
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let result = sink.run(stop).await;
            ("sink", result.map_err(anyhow::Error::from))
        });
        let ch = config.clickhouse.clone();
        probes.push((
            "clickhouse",
            probe(move || {
                let ch = ch.clone();
                async move { vigia_sinks::ready(&ch).await }
            }),
        ));
        registries.push(registry);
    }

    app = app.merge(http::ops_router(probes, registries));
    {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: finishing in-flight work");
            stop.cancel();
        });
    }
    let server = {
        let stop = shutdown.clone();
        let addr = config.http.addr;
        let limits = http::Limits::from(&config.http);
        tokio::spawn(async move { http::serve(addr, app, limits, stop).await })
    };

    // A stage that stops on its own (an error) stops the whole process: a half-running
    // pipeline would silently fall behind.
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = joined.context("a stage panicked")?;
        if let Err(e) = result {
            tracing::error!("{name} stopped: {e:#}");
            failure.get_or_insert(e.context(format!("{name} failed")));
            shutdown.cancel();
        } else if !shutdown.is_cancelled() {
            tracing::error!("{name} stopped unexpectedly");
            shutdown.cancel();
        }
    }
    if stages.ingest || stages.gateway {
        shutdown.cancelled().await;
    }
    if let Some(i) = ingest {
        i.flush(Duration::from_secs(10)).await;
    }
    match tokio::time::timeout(config.http.shutdown_timeout, server).await {
        Ok(joined) => joined.context("HTTP server panicked")??,
        Err(_) => tracing::warn!("HTTP server did not drain in time"),
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand the production compose file runs exists in the CLI.
    #[test]
    fn every_compose_command_is_a_subcommand() {
        let compose = include_str!("../docker/compose.yaml");
        let mut found = 0;
        for line in compose.lines() {
            let Some(rest) = line.trim().strip_prefix("command: [\"") else {
                continue;
            };
            let sub = rest.split('"').next().unwrap();
            Cli::try_parse_from(["vigia", sub])
                .unwrap_or_else(|e| panic!("compose runs `vigia {sub}`: {e}"));
            found += 1;
        }
        assert_eq!(found, 5, "expected migrate, ingest, process, sink, gateway");
    }
}
