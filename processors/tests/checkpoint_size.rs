//! How large a checkpoint is: the engine's snapshot for live conversations and for days of
//! seller samples, and that it stops growing once the traffic is older than the 7 days the
//! seller windows keep (the retention rule, `engine::retention`). Sizes, not times: they do not
//! depend on the build. `cargo test -p vigia-processors --test checkpoint_size -- --nocapture`
//! prints the figures quoted in BENCHMARKS.md.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;
use vigia_processors::{Config, PartitionEngine};
use vigia_schemas::{Channel, Event, MessageReceived, MessageSent, Payload};

fn t0() -> DateTime<Utc> {
    "2026-03-02T00:00:00Z".parse().unwrap()
}

fn received(tenant: u64, conv: &str, at: DateTime<Utc>, seller: u64) -> Event {
    Event {
        event_id: Uuid::new_v4(),
        tenant_id: tenant,
        occurred_at: at,
        payload: Payload::MessageReceived(MessageReceived {
            conversation_id: conv.into(),
            channel: Channel::Whatsapp,
            seller_id: Some(seller),
            phone_number: Some("+573001234567".into()),
            text: Some("Hola, ¿cuál es el precio del plan anual?".into()),
        }),
    }
}

fn sent(tenant: u64, conv: &str, at: DateTime<Utc>, seller: u64) -> Event {
    Event {
        event_id: Uuid::new_v4(),
        tenant_id: tenant,
        occurred_at: at,
        payload: Payload::MessageSent(MessageSent {
            conversation_id: conv.into(),
            seller_id: seller,
            automated: false,
        }),
    }
}

/// Snapshot size with `n` conversations waiting for a reply (20 sellers).
fn open_conversations(n: u64) -> usize {
    let mut e = PartitionEngine::new(Arc::new(Config::default()));
    for i in 0..n {
        let at = t0() + Duration::milliseconds(i as i64 * 100);
        e.on_event(&received(1, &format!("conv-{i}"), at, 100 + i % 20));
    }
    e.snapshot().len()
}

#[test]
fn checkpoint_size_per_1000_live_conversations() {
    let one = open_conversations(1_000);
    let three = open_conversations(3_000);
    let per_thousand = (three - one) as f64 / 2.0;
    println!(
        "checkpoint: 1,000 open conversations {one} bytes, 3,000 {three} bytes: \
         {:.0} KB per 1,000 live conversations",
        per_thousand / 1000.0
    );
    // Linear in the live conversations, a few hundred bytes each (ids, times, the wait).
    assert!(
        per_thousand > 50_000.0 && per_thousand < 2_000_000.0,
        "{per_thousand}"
    );
}

/// Snapshot sizes at the end of each day of `per_day` answered conversations (20 sellers).
fn days_of_samples(days: i64, per_day: i64) -> Vec<usize> {
    let mut e = PartitionEngine::new(Arc::new(Config::default()));
    let mut sizes = Vec::new();
    for day in 0..days {
        for i in 0..per_day {
            // A day's conversations within minutes: the seller figures are evaluated at each
            // minute of event time, which a debug build makes slow when minutes are many.
            let at = t0() + Duration::days(day) + Duration::seconds(i);
            let conv = format!("d{day}-c{i}");
            let seller = 100 + (i as u64 % 20);
            e.on_event(&received(1, &conv, at, seller));
            e.on_event(&sent(1, &conv, at + Duration::seconds(90), seller));
        }
        sizes.push(e.snapshot().len());
    }
    sizes
}

#[test]
fn checkpoint_size_follows_the_last_7_days_of_samples_not_history() {
    // Small enough for a debug build in seconds; the size per reply does not depend on it.
    let per_day = 1_000;
    let sizes = days_of_samples(10, per_day);
    for (day, size) in sizes.iter().enumerate() {
        println!(
            "checkpoint after day {:2} of {per_day} answered conversations/day: {:.2} MB",
            day + 1,
            *size as f64 / 1e6
        );
    }
    let per_day_bytes = (sizes[6] - sizes[0]) as f64 / 6.0;
    println!(
        "per day of samples ({per_day} replies/day, 20 sellers): {:.0} KB",
        per_day_bytes / 1000.0
    );
    // Grows for the first week, then stays: days 9 and 10 within 10 % of day 8.
    assert!(sizes[6] > sizes[0] * 3, "{sizes:?}");
    for later in &sizes[8..] {
        let ratio = *later as f64 / sizes[7] as f64;
        assert!((0.9..1.1).contains(&ratio), "not bounded: {sizes:?}");
    }
}
