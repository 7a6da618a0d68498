//! What serialising the inbox's stores costs (`inbox.rs`, "Sequences without gaps"): N
//! notifications stored in batches of 500 (the consumer's batch) by one writer, and by three
//! writers that each store all of them (three gateway instances), with and without the insert
//! lock, on a PostgreSQL database of its own. Prints the median of `RUNS` runs per case, with
//! the load average.
//!
//!     VIGIA_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5433/vigia \
//!       cargo run --release -p vigia-gateway --example inbox_writers -- 20000 5

use std::time::{Duration, Instant};

use sqlx::{Connection, Executor};
use uuid::Uuid;
use vigia_gateway::{Inbox, OutboxEntry};
use vigia_schemas::{Audience, Notification, NotificationType, Priority};

const BATCH: usize = 500;

fn notifications(n: usize) -> Vec<Notification> {
    let tenant_id = 1 + (Uuid::new_v4().as_u128() % 1_000_000) as u64;
    (0..n)
        .map(|i| Notification {
            id: Uuid::new_v4(),
            tenant_id,
            kind: NotificationType::HotLead,
            priority: Priority::Urgent,
            audience: Audience::User {
                user_id: 10 + (i % 20) as u64,
            },
            title: "Lead caliente".into(),
            message: "Un cliente está listo para comprar".into(),
            data: serde_json::json!({ "i": i }),
            actions: vec![],
            created_at: chrono::Utc::now(),
            withdraws: None,
        })
        .collect()
}

/// Stores `all` through each of `writers` (each all of it), concurrently; the wall time.
async fn run(writers: &[Inbox], all: &[Notification]) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = writers
        .iter()
        .cloned()
        .map(|inbox| {
            let all = all.to_vec();
            tokio::spawn(async move {
                for chunk in all.chunks(BATCH) {
                    let batch: Vec<(&Notification, &[OutboxEntry])> =
                        chunk.iter().map(|n| (n, &[][..])).collect();
                    inbox.store(&batch, &[]).await.expect("stored");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(20_000, |a| a.parse().expect("N"));
    let runs: usize = args.next().map_or(5, |a| a.parse().expect("RUNS"));
    let admin = std::env::var("VIGIA_TEST_POSTGRES_URL")
        .expect("set VIGIA_TEST_POSTGRES_URL to a PostgreSQL database it may create one next to");
    let name = format!("vigia_bench_{}", Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name}"
    ))))
    .await
    .unwrap();
    let base = admin.split('?').next().unwrap();
    let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
    let connect = || Inbox::connect(&url);
    let one = vec![connect().await.unwrap()];
    let three = vec![
        connect().await.unwrap(),
        connect().await.unwrap(),
        connect().await.unwrap(),
    ];
    let three_unlocked: Vec<Inbox> = three
        .iter()
        .cloned()
        .map(Inbox::without_insert_lock)
        .collect();
    println!("{n} notifications, batches of {BATCH}, median of {runs} runs");
    for (label, writers) in [
        ("1 writer, lock", &one),
        ("3 writers (each stores all), lock", &three),
        ("3 writers (each stores all), no lock", &three_unlocked),
    ] {
        let times: Vec<Duration> = {
            let mut t = Vec::new();
            for _ in 0..runs {
                t.push(run(writers, &notifications(n)).await);
            }
            t
        };
        let m = median(times);
        println!(
            "{label:<40} {:>8.0} ms  {:>8.0} notifications/s stored through  (load {})",
            m.as_secs_f64() * 1000.0,
            n as f64 / m.as_secs_f64(),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    drop((one, three, three_unlocked));
    conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    ))))
    .await
    .unwrap();
}
