//! Hostile input (issue 13): no record, however large or odd, stops a stage, and one tenant's
//! ids never hide another tenant's events.
//!
//! Ingest refuses oversized fields at the HTTP door, so the records that must not stop the
//! processors, the sink or the gateway are written straight to Kafka, as a CRM or a tool
//! bypassing ingest would.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

/// Longest a stage may take to get a record through the pipeline here.
const WITHIN: Duration = Duration::from_secs(90);

fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("acks", "all")
        .create()
        .expect("a Kafka producer")
}

/// Writes one record straight to `topic` (keyed like ingest keys events: the tenant id) and
/// returns its (partition, offset).
async fn write_raw(topic: &str, key: &str, payload: &[u8]) -> (i32, i64) {
    let delivery = producer()
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("Kafka refused a record of {} bytes: {e}", payload.len()));
    (delivery.partition, delivery.offset)
}

/// Whether `vigia` is still running (a stage that fails takes `vigia serve` down).
fn still_running(v: &mut Vigia) -> bool {
    matches!(v.child.try_wait(), Ok(None))
}

/// A question and its reply 30 s later: one response-time sample once the processors apply
/// both.
fn question_and_reply(tenant: u64, conversation: &str, at: chrono::DateTime<chrono::Utc>) -> Value {
    json!([
        event(
            "message.received",
            tenant,
            at,
            json!({"conversation_id": conversation, "channel": "whatsapp", "seller_id": 1010}),
        ),
        event(
            "message.sent",
            tenant,
            at + chrono::Duration::seconds(30),
            json!({"conversation_id": conversation, "seller_id": 1010}),
        ),
    ])
}

async fn response_times(db: &str, tenant: u64, conversation: &str) -> u64 {
    ch_count(
        db,
        "response_times",
        &format!("tenant_id = {tenant} AND conversation_id = '{conversation}'"),
    )
    .await
}

/// `n` double quotes: each one is escaped again every time the text is put inside a JSON string,
/// which is how a dead letter (the refused record as a JSON string) outgrew its record.
fn quotes(n: usize) -> String {
    "\"".repeat(n)
}

/// The reproduction: an event older than the allowed lateness with ~600 KB of text
/// whose dead letter, re-escaped, passes Kafka's 1 MB record limit; and a record that is not an
/// event at all, as large, whose field error quotes its huge `event_id`. Before the fix the
/// processors failed to send the dead letter and exited (taking `vigia serve` down), and did
/// again after every restart; the sink retried its own dead letter forever. Now both records
/// are dead-lettered in bounded form, every stage goes on with every tenant's events, the late
/// event is stored in `events` for analysts and applied to no rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_late_and_invalid_records_are_dead_lettered_and_every_stage_goes_on() {
    let ns = Namespace::new("hostile_poison");
    let db = ns.database();
    let mut vigia = ns.spawn("serve");
    let events_topic = format!("{}.events", ns.name);

    // Tenant 1's event time is now: an event from three hours ago is past the allowed lateness.
    let now = now();
    post_ok(
        &vigia,
        1,
        &question_and_reply(1, "before", now - chrono::Duration::minutes(5)),
    )
    .await;
    assert_eq!(
        eventually(WITHIN, 1, || response_times(&db, 1, "before")).await,
        1,
        "tenant 1's first conversation was not processed"
    );

    let late_id = uuid::Uuid::new_v4();
    let late = json!({"event_id": late_id, "type": "message.received", "tenant_id": 1,
        "occurred_at": ts(now - chrono::Duration::hours(3)), "conversation_id": "late",
        "channel": "whatsapp", "text": quotes(300_000)})
    .to_string();
    assert!(late.len() < 1_000_000 && late.len() > 500_000);
    let (_, late_offset) = write_raw(&events_topic, "1", late.as_bytes()).await;

    let invalid = json!({"event_id": quotes(200_000), "type": "message.received",
        "tenant_id": 1, "text": quotes(100_000)})
    .to_string();
    assert!(invalid.len() < 1_000_000);
    let (_, invalid_offset) = write_raw(&events_topic, "1", invalid.as_bytes()).await;

    // After them, on the same partition (tenant 1) and on the other tenant's.
    post_ok(
        &vigia,
        1,
        &question_and_reply(1, "after", now - chrono::Duration::minutes(2)),
    )
    .await;
    post_ok(
        &vigia,
        2,
        &question_and_reply(2, "other", now - chrono::Duration::minutes(2)),
    )
    .await;
    for (tenant, conversation) in [(1, "after"), (2, "other")] {
        assert_eq!(
            eventually(WITHIN, 1, || response_times(&db, tenant, conversation)).await,
            1,
            "tenant {tenant}'s events after the poison records were not processed; vigia \
             running: {}; log:\n{}",
            still_running(&mut vigia),
            tail(&vigia.log())
        );
    }
    assert!(
        still_running(&mut vigia),
        "vigia exited:\n{}",
        tail(&vigia.log())
    );

    // The late event is stored for analysts, and no rule applied it.
    assert_eq!(
        ch_count(&db, "events", &format!("event_id = toUUID('{late_id}')")).await,
        1
    );
    assert_eq!(response_times(&db, 1, "late").await, 0);

    // Each poison record has its dead letter: bounded, with the original's length and hash.
    let letters = |offset: i64, stage: &'static str| {
        let db = db.clone();
        let topic = events_topic.clone();
        async move {
            ch_query(&format!(
                "SELECT reason, length(payload), payload_bytes, length(payload_sha1), \
                 length(error) < 8192, tenant_id FROM {db}.dead_letters WHERE stage = '{stage}' \
                 AND origin_topic = '{topic}' AND origin_offset = {offset} FORMAT TSV"
            ))
            .await
        }
    };
    let got = eventually(WITHIN, true, || async {
        !letters(late_offset, "processors").await.is_empty()
    })
    .await;
    assert!(got, "no dead letter for the late event");
    assert_eq!(
        letters(late_offset, "processors").await.trim(),
        format!("too_late\t65536\t{}\t40\t1\t1", late.len())
    );
    for stage in ["processors", "sink"] {
        let got = eventually(WITHIN, true, || async {
            !letters(invalid_offset, stage).await.is_empty()
        })
        .await;
        assert!(got, "no {stage} dead letter for the invalid record");
        assert_eq!(
            letters(invalid_offset, stage).await.trim(),
            format!("invalid_event\t65536\t{}\t40\t1\t1", invalid.len()),
            "{stage}"
        );
    }

    // A restart re-reads the same records and goes on as well.
    assert!(vigia.terminate(), "vigia did not stop cleanly");
    let mut vigia = ns.spawn("serve");
    post_ok(
        &vigia,
        2,
        &question_and_reply(2, "restarted", now - chrono::Duration::minutes(1)),
    )
    .await;
    assert_eq!(
        eventually(WITHIN, 1, || response_times(&db, 2, "restarted")).await,
        1,
        "not processed after a restart; log:\n{}",
        tail(&vigia.log())
    );
    assert!(
        still_running(&mut vigia),
        "vigia exited:\n{}",
        tail(&vigia.log())
    );
    drop_database(&db).await;
}

/// A notification too large for a Kafka record (a lead's name and a follow-up note of ~700 KB
/// each, both in the reminder) is dead-lettered in bounded form instead of stopping the
/// processors; the other tenant's reminder still arrives. Before the fix the processors exited
/// on the delivery error, and again after each restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_too_large_for_kafka_is_dead_lettered_and_the_processors_go_on() {
    let ns = Namespace::new("hostile_output");
    let db = ns.database();
    let mut vigia = ns.spawn("serve");
    let events_topic = format!("{}.events", ns.name);
    let now = now();
    let due = now + chrono::Duration::seconds(3);

    let lead = |tenant: u64, name: &str, note: &str| {
        json!([
            event(
                "lead.created",
                tenant,
                now,
                json!({"lead_id": "l1", "source": "WEBSITE",
                "seller_id": 1010, "name": name})
            ),
            // Reminders are for leads still in play.
            event(
                "lead.status_changed",
                tenant,
                now,
                json!({"lead_id": "l1", "status": "interested"})
            ),
            event(
                "lead.follow_up_scheduled",
                tenant,
                now,
                json!({"lead_id": "l1",
                "seller_id": 1010, "due_at": ts(due), "note": note})
            ),
        ])
    };
    let hostile = lead(1, &quotes(350_000), &quotes(350_000));
    for e in hostile.as_array().unwrap() {
        write_raw(&events_topic, "1", e.to_string().as_bytes()).await;
    }
    post_ok(&vigia, 2, &lead(2, "Ana", "llamar")).await;

    let reminders = |tenant: u64| {
        let db = db.clone();
        async move {
            ch_count(
                &db,
                "notifications",
                &format!("tenant_id = {tenant} AND type = 'follow_up_reminder'"),
            )
            .await
                > 0
        }
    };
    assert!(
        eventually(WITHIN, true, || reminders(2)).await,
        "tenant 2's reminder never arrived; vigia running: {}; log:\n{}",
        still_running(&mut vigia),
        tail(&vigia.log())
    );
    assert!(
        still_running(&mut vigia),
        "vigia exited:\n{}",
        tail(&vigia.log())
    );
    assert!(!reminders(1).await, "a reminder over 1 MB was stored");

    let letter = || async {
        ch_query(&format!(
            "SELECT reason, length(payload), payload_bytes > 1000000, length(payload_sha1), \
             tenant_id FROM {db}.dead_letters WHERE stage = 'processors' AND origin_topic = \
             '{}.notifications' FORMAT TSV",
            ns.name
        ))
        .await
    };
    assert!(
        eventually(WITHIN, true, || async { !letter().await.is_empty() }).await,
        "no dead letter for the oversized reminder"
    );
    // One per reminder stage that fired (due, and perhaps "before"): all the same shape.
    for line in letter().await.lines() {
        assert_eq!(line, "output_too_large\t65536\t1\t40\t1");
    }
    drop_database(&db).await;
}

/// Two tenants' events with one `event_id` are two events: ClickHouse keeps both (the sink
/// de-duplicates by tenant and id). Before the fix the second was answered 202 and never stored,
/// so a tenant that learnt another's ids could hide that tenant's events from analysts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_events_with_one_event_id_are_both_stored() {
    let ns = Namespace::new("hostile_ids");
    let db = ns.database();
    let ingest = ns.spawn("ingest");
    let shared_id = uuid::Uuid::new_v4().to_string();
    let at = now() - chrono::Duration::minutes(1);
    let closed = |tenant: u64| {
        let mut e = event(
            "conversation.closed",
            tenant,
            at,
            json!({"conversation_id": format!("c{tenant}")}),
        );
        e["event_id"] = json!(shared_id);
        e
    };
    // Both are on Kafka before the sink starts: it reads them in one batch.
    post_ok(&ingest, 1, &closed(1)).await;
    post_ok(&ingest, 2, &closed(2)).await;
    let _sink = ns.spawn("sink");
    let stored = || async {
        ch_query(&format!(
            "SELECT tenant_id, conversation_id FROM {db}.events WHERE event_id = \
             toUUID('{shared_id}') ORDER BY tenant_id FORMAT TSV"
        ))
        .await
    };
    let both = "1\tc1\n2\tc2\n".to_string();
    assert_eq!(eventually(WITHIN, both.clone(), stored).await, both);
    // Posted again (in later batches, one tenant at a time): still one row per tenant.
    post_ok(&ingest, 2, &closed(2)).await;
    post_ok(&ingest, 1, &closed(1)).await;
    let other = event(
        "conversation.closed",
        1,
        at,
        json!({"conversation_id": "marker"}),
    );
    post_ok(&ingest, 1, &other).await;
    let marker = format!(
        "event_id = toUUID('{}')",
        other["event_id"].as_str().unwrap()
    );
    assert_eq!(
        eventually(WITHIN, 1, || ch_count(&db, "events", &marker)).await,
        1
    );
    assert_eq!(stored().await, both);
    drop_database(&db).await;
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The gateway's consumer takes a notification of ~900 KB written straight to Kafka like any
/// other, skips (and counts) records that are not notifications, and goes on with the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_takes_huge_and_skips_malformed_notifications_and_goes_on() {
    let ns = Namespace::new("hostile_gateway");
    let mut vigia = ns.spawn("gateway");
    let topic = format!("{}.notifications", ns.name);
    let notification = |title: &str| {
        json!({"id": uuid::Uuid::new_v4(), "tenant_id": 2, "type": "hot_lead",
            "priority": "urgent", "audience": {"role": "ceo"}, "title": title, "message": "m",
            "created_at": ts(now())})
    };
    let huge = notification(&quotes(450_000));
    let after = notification("after");
    write_raw(&topic, "2", huge.to_string().as_bytes()).await;
    write_raw(&topic, "2", b"{\"id\": \"not a notification\"").await;
    write_raw(&topic, "2", &[0xff; 16]).await;
    write_raw(&topic, "2", after.to_string().as_bytes()).await;

    let token = token(2001, 2, vigia_schemas::Role::Ceo);
    let listed = || async {
        let body = reqwest::Client::new()
            .get(vigia.url("/v1/notifications?limit=10"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("the gateway answers")
            .text()
            .await
            .unwrap();
        [&huge, &after]
            .iter()
            .filter(|n| body.contains(n["id"].as_str().unwrap()))
            .count()
    };
    assert_eq!(
        eventually(WITHIN, 2, listed).await,
        2,
        "log:\n{}",
        tail(&vigia.log())
    );
    assert!(
        still_running(&mut vigia),
        "vigia exited:\n{}",
        tail(&vigia.log())
    );
    let metrics = reqwest::get(vigia.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("vigia_gateway_notifications_undecodable_total 2"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("undecodable"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
