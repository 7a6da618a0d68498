//! Migrations and exactly-once writes against a real ClickHouse at `VIGIA_CLICKHOUSE_URL`
//! (default http://127.0.0.1:8123), each test in its own database `vigia_test_<random>`.
//! Ignored by default; run with `cargo test -p vigia-sinks --test clickhouse -- --ignored`.

mod common;

use common::*;
use uuid::Uuid;
use vigia_schemas::{
    Action, Audience, DeadLetter, LeadScore, LeadStatus, Notification, NotificationType, Priority,
    ResponseTimeSample, Role,
};
use vigia_sinks::{
    migrate, migrate_until, ready, server_version, Config, DeadLetterRow, EventRow, KafkaOrigin,
    LeadScoreRow, NotificationRow, ResponseTimeRow, Writer, MIGRATIONS,
};

const NEEDS: &str = "needs ClickHouse at VIGIA_CLICKHOUSE_URL (default http://127.0.0.1:8123)";

#[tokio::test]
#[ignore = "needs ClickHouse at VIGIA_CLICKHOUSE_URL (default http://127.0.0.1:8123)"]
async fn migrating_twice_applies_everything_once() {
    let db = TestDb::new();
    assert!(ready(&db.cfg).await, "{NEEDS}");
    let version = server_version(&db.cfg).await.unwrap();
    assert!(
        version.split('.').next().unwrap().parse::<u32>().is_ok(),
        "{version}"
    );

    let first = migrate(&db.cfg).await.unwrap();
    let versions: Vec<u32> = first.iter().map(|m| m.version).collect();
    let all: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(versions, all);
    assert!(first.iter().all(|m| m.statements >= 1));

    let second = migrate(&db.cfg).await.unwrap();
    assert!(second.is_empty(), "second run applied {second:?}");

    let recorded = db
        .tsv(&format!(
            "SELECT version, name FROM {}.schema_migrations ORDER BY version",
            db.name()
        ))
        .await;
    let expected: Vec<String> = MIGRATIONS
        .iter()
        .map(|m| format!("{}\t{}", m.version, m.name))
        .collect();
    assert_eq!(recorded, expected.join("\n"));

    let tables = db
        .tsv(&format!(
            "SELECT name FROM system.tables WHERE database = '{}' ORDER BY name",
            db.name()
        ))
        .await;
    for t in [
        "dead_letters",
        "events",
        "lead_scores",
        "notifications",
        "response_times",
        "schema_migrations",
        "seller_hourly",
        "seller_hourly_mv_events",
        "seller_hourly_mv_response_times",
        "seller_hourly_mv_notifications",
        "seller_hourly_mv_conversions",
        "response_times_current",
        "unanswered_episodes",
    ] {
        assert!(tables.lines().any(|l| l == t), "{t} missing from {tables}");
    }
    // Analysts see what each column means.
    let uncommented = db
        .tsv(&format!(
            "SELECT table, name FROM system.columns WHERE database = '{d}' AND comment = '' \
             AND table IN (SELECT name FROM system.tables WHERE database = '{d}' \
             AND engine NOT IN ('MaterializedView', 'View'))",
            d = db.name()
        ))
        .await;
    assert_eq!(uncommented, "", "columns without a COMMENT");
}

#[tokio::test]
#[ignore = "needs ClickHouse at VIGIA_CLICKHOUSE_URL (default http://127.0.0.1:8123)"]
async fn a_redelivered_or_half_written_batch_is_stored_once() {
    let db = TestDb::new();
    migrate(&db.cfg).await.expect(NEEDS);
    let writer = Writer::new(&db.cfg).unwrap();

    // 100 events of 3 tenants over two months (two partitions), plus an in-batch duplicate.
    let t0 = at("2026-01-31T23:59:00Z");
    let mut batch: Vec<EventRow> = (0..100u128)
        .map(|n| {
            event_row(
                n,
                (n % 3) as u64 + 1,
                t0 + chrono::Duration::seconds(n as i64),
            )
        })
        .collect();
    batch.push(batch[10].clone());

    // A "crash" after the first 60 rows were inserted and before the offsets were committed...
    let partial = writer.write(&batch[..60]).await.unwrap();
    assert_eq!(partial.inserted, 60);
    // ...then the whole batch is delivered again.
    let again = writer.write(&batch).await.unwrap();
    assert_eq!(
        (
            again.inserted,
            again.already_stored,
            again.duplicates_in_batch
        ),
        (40, 60, 1)
    );
    // And once more, as if the commit had failed too.
    let third = writer.write(&batch).await.unwrap();
    assert_eq!((third.inserted, third.already_stored), (0, 100));
    // An overlapping next batch: 50 old rows and 20 new ones.
    let mut next: Vec<EventRow> = batch[50..100].to_vec();
    next.extend((100..120u128).map(|n| event_row(n, 2, t0 + chrono::Duration::seconds(n as i64))));
    let overlap = writer.write(&next).await.unwrap();
    assert_eq!((overlap.inserted, overlap.already_stored), (20, 50));

    assert_eq!(db.count_and_unique("events", "event_id").await, (120, 120));
    let per_month = db
        .tsv(&format!(
            "SELECT toYYYYMM(occurred_at) AS month, count() FROM {}.events \
             GROUP BY month ORDER BY month",
            db.name()
        ))
        .await;
    assert_eq!(per_month, "202601\t60\n202602\t60");

    // The same id under another tenant is another row (ids are checked per tenant and time).
    let other_tenant = event_row(5, 99, t0);
    let r = writer.write(&[other_tenant]).await.unwrap();
    assert_eq!(r.inserted, 1);
    assert_eq!(db.count("events").await, 121);
}

/// Issue 13: ids are the tenant's own, so one tenant's id never hides another tenant's row: two
/// tenants' events with one `event_id`, in one batch or in batches that overlap in time, are two
/// rows; a redelivery of either is still one row per tenant.
#[tokio::test]
#[ignore = "needs ClickHouse at VIGIA_CLICKHOUSE_URL (default http://127.0.0.1:8123)"]
async fn one_id_under_two_tenants_is_two_rows() {
    let db = TestDb::new();
    migrate(&db.cfg).await.expect(NEEDS);
    let writer = Writer::new(&db.cfg).unwrap();
    let t0 = at("2026-03-01T10:00:00Z");
    let (of_1, of_2) = (event_row(7, 1, t0), event_row(7, 2, t0));

    // In one batch.
    let r = writer.write(&[of_1.clone(), of_2.clone()]).await.unwrap();
    assert_eq!((r.inserted, r.duplicates_in_batch), (2, 0));
    // Again, with a third tenant's copy and in the other order.
    let of_3 = event_row(7, 3, t0 + chrono::Duration::seconds(5));
    let r = writer
        .write(&[of_3.clone(), of_2.clone(), of_1.clone()])
        .await
        .unwrap();
    assert_eq!((r.inserted, r.already_stored), (1, 2));
    let rows = db
        .tsv(&format!(
            "SELECT tenant_id, count() FROM {}.events WHERE event_id = toUUID('{}') \
             GROUP BY tenant_id ORDER BY tenant_id",
            db.name(),
            of_1.event_id
        ))
        .await;
    assert_eq!(rows, "1\t1\n2\t1\n3\t1");
}

#[tokio::test]
#[ignore = "needs ClickHouse at VIGIA_CLICKHOUSE_URL (default http://127.0.0.1:8123)"]
async fn every_row_type_reads_back_as_written() {
    let db = TestDb::new();
    migrate(&db.cfg).await.expect(NEEDS);
    let writer = Writer::new(&db.cfg).unwrap();
    let origin = KafkaOrigin {
        partition: 2,
        offset: 41,
    };
    let d = db.name();

    let e = event_row(7, 42, at("2026-02-27T15:00:00.250Z"));
    writer.write(std::slice::from_ref(&e)).await.unwrap();
    assert_eq!(
        db.tsv(&format!(
            "SELECT toString(event_id), tenant_id, type, toUnixTimestamp(occurred_at), \
             occurred_at_ms, conversation_id, lead_id, seller_id, kafka_partition, kafka_offset, \
             inserted_at > toDateTime('2020-01-01 00:00:00') FROM {d}.events"
        ))
        .await,
        format!(
            "{}\t42\tconversation.closed\t1772204400\t1772204400250\tc7\t\t0\t0\t7\t1",
            Uuid::from_u128(7)
        )
    );
    let payload = db.tsv(&format!("SELECT payload FROM {d}.events")).await;
    assert_eq!(payload, e.payload);

    let n = Notification {
        id: Uuid::from_u128(8),
        tenant_id: 42,
        kind: NotificationType::UnansweredConversation,
        priority: Priority::High,
        audience: Audience::User { user_id: 123 },
        title: "Conversación sin respuesta".into(),
        message: "El cliente espera".into(),
        data: serde_json::json!({"conversation_id": "c7"}),
        actions: vec![Action {
            label: "Abrir".into(),
            action: "open_chat".into(),
            params: serde_json::json!({"conversation_id": "c7"}),
        }],
        created_at: at("2026-02-27T16:00:00Z"),
        withdraws: None,
    };
    let withdrawal = Notification {
        id: Uuid::from_u128(9),
        audience: Audience::Role { role: Role::Ceo },
        withdraws: Some(Uuid::from_u128(8)),
        ..n.clone()
    };
    writer
        .write(&[
            NotificationRow::new(&n, origin),
            NotificationRow::new(&withdrawal, origin),
        ])
        .await
        .unwrap();
    assert_eq!(
        db.tsv(&format!(
            "SELECT toString(id), type, priority, audience_user_id, audience_role, title, \
             visitParamExtractString(data, 'conversation_id'), \
             toUnixTimestamp(created_at), ifNull(toString(withdraws), 'none') \
             FROM {d}.notifications ORDER BY id"
        ))
        .await,
        format!(
            "{a}\tunanswered_conversation\thigh\t123\t\tConversación sin respuesta\tc7\t1772208000\tnone\n\
             {b}\tunanswered_conversation\thigh\t0\tceo\tConversación sin respuesta\tc7\t1772208000\t{a}",
            a = Uuid::from_u128(8),
            b = Uuid::from_u128(9)
        )
    );

    let s = ResponseTimeSample {
        id: Uuid::from_u128(10),
        tenant_id: 42,
        conversation_id: "c7".into(),
        seller_id: 5,
        customer_event_id: Uuid::from_u128(11),
        reply_event_id: Uuid::from_u128(12),
        waiting_since: at("2026-02-27T15:00:00Z"),
        replied_at: at("2026-02-27T15:02:30.5Z"),
        response_seconds: 150.5,
        retracts: None,
    };
    writer
        .write(&[ResponseTimeRow::new(&s, origin)])
        .await
        .unwrap();
    assert_eq!(
        db.tsv(&format!(
            "SELECT toString(id), seller_id, toString(customer_event_id), \
             toString(reply_event_id), toUnixTimestamp(waiting_since), \
             toUnixTimestamp(replied_at), replied_at_ms, response_seconds FROM {d}.response_times"
        ))
        .await,
        format!(
            "{}\t5\t{}\t{}\t1772204400\t1772204550\t1772204550500\t150.5",
            Uuid::from_u128(10),
            Uuid::from_u128(11),
            Uuid::from_u128(12)
        )
    );

    let l = LeadScore {
        id: Uuid::from_u128(13),
        tenant_id: 42,
        lead_id: "l1".into(),
        seller_id: Some(5),
        score: 0.85,
        source_score: 0.3,
        engagement_score: 0.2,
        recency_score: 0.15,
        intent_score: 0.1,
        location_score: 0.1,
        cause_event_id: Uuid::from_u128(7),
        computed_at: at("2026-02-27T15:00:00Z"),
        status_change: Some(LeadStatus::Contacted),
    };
    writer
        .write(&[LeadScoreRow::new(&l, origin)])
        .await
        .unwrap();
    assert_eq!(
        db.tsv(&format!(
            "SELECT lead_id, seller_id, score, source_score, engagement_score, recency_score, \
             intent_score, location_score, toString(cause_event_id), status_change \
             FROM {d}.lead_scores"
        ))
        .await,
        format!(
            "l1\t5\t0.85\t0.3\t0.2\t0.15\t0.1\t0.1\t{}\tcontacted",
            Uuid::from_u128(7)
        )
    );

    let payload = format!(r#"{{"tenant_id":42,"text":"{}"}}"#, "x".repeat(70_000));
    let dl = DeadLetter::of_record(
        "processors",
        &vigia_schemas::Origin {
            topic: "vigia.events",
            partition: 1,
            offset: 99,
            timestamp: None,
            key: None,
        },
        vigia_schemas::DeadLetterReason::InvalidEvent,
        &"unknown type",
        payload.as_bytes(),
    );
    let row = DeadLetterRow::new(&dl, 1_772_204_400_000, origin);
    writer.write(&[row.clone(), row]).await.unwrap();
    assert_eq!(
        db.tsv(&format!(
            "SELECT tenant_id, stage, origin_topic, origin_partition, origin_offset, error, \
             toUnixTimestamp(failed_at), reason, length(payload), payload_bytes, payload_sha1 \
             FROM {d}.dead_letters"
        ))
        .await,
        format!(
            "42\tprocessors\tvigia.events\t1\t99\tunknown type\t1772204400\tinvalid_event\t65536\t{}\t{}",
            payload.len(),
            dl.payload_sha1.as_deref().unwrap()
        )
    );
}

#[tokio::test]
#[ignore = "needs ClickHouse at VIGIA_CLICKHOUSE_URL (default http://127.0.0.1:8123)"]
async fn the_hourly_rollup_counts_each_event_once() {
    let db = TestDb::new();
    migrate(&db.cfg).await.expect(NEEDS);
    let writer = Writer::new(&db.cfg).unwrap();
    let mk = |n: u128, automated: bool, minute: i64| {
        let event = vigia_schemas::Event::from_value(serde_json::json!({
            "event_id": Uuid::from_u128(n).to_string(), "tenant_id": 1,
            "type": "message.sent",
            "occurred_at": (at("2026-02-27T15:00:00Z") + chrono::Duration::minutes(minute))
                .to_rfc3339(),
            "conversation_id": "c", "seller_id": 7, "automated": automated,
        }))
        .unwrap();
        EventRow::new(&event, KafkaOrigin::default())
    };
    let batch = vec![mk(1, false, 1), mk(2, true, 2), mk(3, false, 70)];
    writer.write(&batch).await.unwrap();
    writer.write(&batch).await.unwrap(); // redelivered: no row, so nothing for the views
    assert_eq!(
        db.tsv(&format!(
            "SELECT toHour(hour), sum(replies_sent), sum(automated_replies) \
             FROM {}.seller_hourly WHERE tenant_id = 1 AND seller_id = 7 \
             GROUP BY hour ORDER BY hour",
            db.name()
        ))
        .await,
        "15\t1\t1\n16\t1\t0"
    );
}

#[tokio::test]
#[ignore = "needs ClickHouse at VIGIA_CLICKHOUSE_URL (default http://127.0.0.1:8123)"]
async fn retractions_and_corrected_alerts_keep_the_rollup_right() {
    let db = TestDb::new();
    migrate(&db.cfg).await.expect(NEEDS);
    let writer = Writer::new(&db.cfg).unwrap();
    let d = db.name();
    let sample = |n: u128, seconds: f64| ResponseTimeSample {
        id: Uuid::from_u128(n),
        tenant_id: 1,
        conversation_id: format!("c{n}").as_str().into(),
        seller_id: 7,
        customer_event_id: Uuid::from_u128(1000 + n),
        reply_event_id: Uuid::from_u128(2000 + n),
        waiting_since: at("2026-02-27T15:00:00Z"),
        replied_at: at("2026-02-27T15:30:00Z"),
        response_seconds: seconds,
        retracts: None,
    };
    let origin = KafkaOrigin::default();
    // Three samples (one block), then one is retracted and replaced (another block), then a
    // sample of 1000 s is written and retracted in one block.
    let wrong = sample(3, 30.0);
    writer
        .write(&[
            ResponseTimeRow::new(&sample(1, 10.0), origin),
            ResponseTimeRow::new(&sample(2, 20.0), origin),
            ResponseTimeRow::new(&wrong, origin),
        ])
        .await
        .unwrap();
    writer
        .write(&[
            ResponseTimeRow::new(&wrong.retraction(), origin),
            ResponseTimeRow::new(&sample(4, 40.0), origin),
        ])
        .await
        .unwrap();
    let big = sample(5, 1000.0);
    writer
        .write(&[
            ResponseTimeRow::new(&big, origin),
            ResponseTimeRow::new(&big.retraction(), origin),
        ])
        .await
        .unwrap();
    // Redelivered: written once.
    writer
        .write(&[ResponseTimeRow::new(&wrong.retraction(), origin)])
        .await
        .unwrap();

    // Unanswered alerts: two sent, one withdrawn as resolved (still counts), one corrected.
    let alert = |n: u128| Notification {
        id: Uuid::from_u128(n),
        tenant_id: 1,
        kind: NotificationType::UnansweredConversation,
        priority: Priority::High,
        audience: Audience::User { user_id: 7 },
        title: "t".into(),
        message: "m".into(),
        data: serde_json::json!({"conversation_id": "c", "seller_id": 7}),
        actions: vec![],
        created_at: at("2026-02-27T16:00:00Z"),
        withdraws: None,
    };
    let withdrawal = |n: u128, of: u128, state: &str| Notification {
        id: Uuid::from_u128(n),
        data: serde_json::json!({"conversation_id": "c", "seller_id": 7, "state": state}),
        withdraws: Some(Uuid::from_u128(of)),
        ..alert(of)
    };
    writer
        .write(&[
            NotificationRow::new(&alert(20), origin),
            NotificationRow::new(&alert(21), origin),
            NotificationRow::new(&withdrawal(22, 20, "resolved"), origin),
            NotificationRow::new(&withdrawal(23, 21, "corrected"), origin),
        ])
        .await
        .unwrap();

    let rollup = format!(
        "SELECT toHour(hour), sum(responses), sum(response_seconds_sum), \
         quantilesExactWeightedMerge(0.5, 0.9)(response_quantiles), sum(unanswered) \
         FROM {d}.seller_hourly WHERE tenant_id = 1 AND seller_id = 7 GROUP BY hour ORDER BY hour"
    );
    // Samples standing: 10, 20, 40. Nearest rank: p50 = 2nd of 3, p90 = 3rd.
    let expected = "15\t3\t70\t[20,40]\t0\n16\t0\t0\t[0,0]\t1";
    assert_eq!(db.tsv(&rollup).await, expected);
    db.tsv(&format!("OPTIMIZE TABLE {d}.seller_hourly FINAL"))
        .await;
    assert_eq!(db.tsv(&rollup).await, expected, "the same after merging");
    assert_eq!(
        db.tsv(&format!(
            "SELECT arraySort(groupArray(response_seconds)) FROM {d}.response_times_current"
        ))
        .await,
        "[10,20,40]"
    );
    assert_eq!(
        db.tsv(&format!(
            "SELECT sign, count() FROM {d}.response_times GROUP BY sign ORDER BY sign"
        ))
        .await,
        "-1\t2\n1\t5",
        "every version is kept"
    );
}

fn lead_score(n: u128, seller: Option<u64>, minute: i64, change: Option<LeadStatus>) -> LeadScore {
    LeadScore {
        id: Uuid::from_u128(n),
        tenant_id: 1,
        lead_id: format!("l{n}").as_str().into(),
        seller_id: seller,
        score: 0.5,
        source_score: 0.3,
        engagement_score: 0.0,
        recency_score: 0.0,
        intent_score: 0.2,
        location_score: 0.0,
        cause_event_id: Uuid::from_u128(100 + n),
        computed_at: at("2026-02-27T15:00:00Z") + chrono::Duration::minutes(minute),
        status_change: change,
    }
}

#[tokio::test]
#[ignore = "needs ClickHouse at VIGIA_CLICKHOUSE_URL (default http://127.0.0.1:8123)"]
async fn conversions_count_once_per_status_change_to_converted_by_seller_and_hour() {
    let db = TestDb::new();
    migrate(&db.cfg).await.expect(NEEDS);
    let writer = Writer::new(&db.cfg).unwrap();
    let d = db.name();
    let origin = KafkaOrigin::default();
    let rows: Vec<LeadScoreRow> = [
        lead_score(1, Some(7), 5, Some(LeadStatus::Converted)),
        lead_score(2, Some(7), 50, Some(LeadStatus::Converted)),
        lead_score(3, Some(7), 70, Some(LeadStatus::Converted)), // next hour
        lead_score(4, Some(7), 6, Some(LeadStatus::Lost)),
        lead_score(5, Some(7), 7, None), // a message rescored the lead
        lead_score(6, Some(8), 8, Some(LeadStatus::Converted)),
        lead_score(7, None, 9, Some(LeadStatus::Converted)), // no seller: seller 0
    ]
    .iter()
    .map(|l| LeadScoreRow::new(l, origin))
    .collect();
    writer.write(&rows).await.unwrap();
    writer.write(&rows[..2]).await.unwrap(); // redelivered: nothing new for the view
    let rollup = format!(
        "SELECT seller_id, toHour(hour), sum(conversions) FROM {d}.seller_hourly \
         WHERE tenant_id = 1 GROUP BY seller_id, hour ORDER BY seller_id, hour"
    );
    let expected = "0\t15\t1\n7\t15\t2\n7\t16\t1\n8\t15\t1";
    assert_eq!(db.tsv(&rollup).await, expected);
    db.tsv(&format!("OPTIMIZE TABLE {d}.seller_hourly FINAL"))
        .await;
    assert_eq!(db.tsv(&rollup).await, expected, "the same after merging");
}

#[tokio::test]
#[ignore = "needs ClickHouse at VIGIA_CLICKHOUSE_URL (default http://127.0.0.1:8123)"]
async fn upgrading_a_schema_with_rows_replaces_the_rollup_views_without_double_counting() {
    let db = TestDb::new();
    let before: Vec<u32> = migrate_until(&db.cfg, 8)
        .await
        .expect(NEEDS)
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(before, (1..=8).collect::<Vec<u32>>());
    let writer = Writer::new(&db.cfg).unwrap();
    let d = db.name();
    let received = |n: u128| {
        let event = vigia_schemas::Event::from_value(serde_json::json!({
            "event_id": Uuid::from_u128(n).to_string(), "tenant_id": 1,
            "type": "message.received", "occurred_at": "2026-02-27T15:10:00Z",
            "conversation_id": "c", "seller_id": 7, "channel": "web",
        }))
        .unwrap();
        EventRow::new(&event, KafkaOrigin::default())
    };
    writer.write(&[received(1), received(2)]).await.unwrap();

    let after = migrate(&db.cfg).await.unwrap();
    let newer: Vec<u32> = MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|v| *v > 8)
        .collect();
    assert_eq!(after.iter().map(|m| m.version).collect::<Vec<_>>(), newer);
    writer.write(&[received(3)]).await.unwrap();
    writer
        .write(&[LeadScoreRow::new(
            &lead_score(4, Some(7), 20, Some(LeadStatus::Converted)),
            KafkaOrigin::default(),
        )])
        .await
        .unwrap();
    assert_eq!(
        db.tsv(&format!(
            "SELECT sum(messages_received), sum(conversions) FROM {d}.seller_hourly \
             WHERE tenant_id = 1 AND seller_id = 7"
        ))
        .await,
        "3\t1",
        "rows before the upgrade kept, the message after it counted once"
    );
    let views = db
        .tsv(&format!(
            "SELECT name FROM system.tables WHERE database = '{d}' \
             AND engine = 'MaterializedView' ORDER BY name"
        ))
        .await;
    assert_eq!(
        views,
        "seller_hourly_mv_conversions\nseller_hourly_mv_events\n\
         seller_hourly_mv_notifications\nseller_hourly_mv_response_times"
    );
}

#[tokio::test]
#[ignore = "needs ClickHouse at VIGIA_CLICKHOUSE_URL (default http://127.0.0.1:8123)"]
async fn unanswered_episodes_pair_each_alert_with_how_it_ended() {
    let db = TestDb::new();
    migrate(&db.cfg).await.expect(NEEDS);
    let writer = Writer::new(&db.cfg).unwrap();
    let d = db.name();
    let alert = |n: u128, conv: &str| Notification {
        id: Uuid::from_u128(n),
        tenant_id: 1,
        kind: NotificationType::UnansweredConversation,
        priority: Priority::High,
        audience: Audience::User { user_id: 7 },
        title: "t".into(),
        message: "m".into(),
        data: serde_json::json!({
            "conversation_id": conv, "seller_id": 7, "channel": "whatsapp",
            "waiting_since": "2026-02-27T15:00:00.250Z", "deadline": "2026-02-27T16:00:00.250Z",
        }),
        actions: vec![],
        created_at: at("2026-02-27T16:00:00.250Z"),
        withdraws: None,
    };
    let withdrawal = |n: u128, of: u128, state: &str, at_: &str| Notification {
        id: Uuid::from_u128(n),
        data: serde_json::json!({"conversation_id": "c", "seller_id": 7, "state": state,
                                 "resolved_at": at_}),
        withdraws: Some(Uuid::from_u128(of)),
        ..alert(of, "c")
    };
    let origin = KafkaOrigin::default();
    let rows: Vec<NotificationRow> = [
        alert(1, "open"),
        alert(2, "answered"),
        withdrawal(12, 2, "resolved", "2026-02-27T16:30:00.900Z"),
        alert(3, "closed"),
        withdrawal(13, 3, "closed", "2026-02-27T16:00:10Z"),
        alert(4, "wrong"),
        withdrawal(14, 4, "corrected", "2026-02-27T15:10:00Z"),
        // Withdrawn as answered, then found wrong by a late event: not an episode.
        alert(5, "answered then wrong"),
        withdrawal(15, 5, "resolved", "2026-02-27T16:20:00Z"),
        withdrawal(25, 5, "corrected", "2026-02-27T15:50:00Z"),
    ]
    .iter()
    .map(|n| NotificationRow::new(n, origin))
    .collect();
    writer.write(&rows).await.unwrap();
    assert_eq!(
        db.tsv(&format!(
            "SELECT conversation_id, seller_id, channel, waiting_since, deadline, state, \
             seconds_past_deadline FROM {d}.unanswered_episodes WHERE tenant_id = 1 \
             ORDER BY conversation_id"
        ))
        .await,
        "answered\t7\twhatsapp\t2026-02-27 15:00:00\t2026-02-27 16:00:00\tresolved\t1800\n\
         closed\t7\twhatsapp\t2026-02-27 15:00:00\t2026-02-27 16:00:00\tclosed\t10\n\
         open\t7\twhatsapp\t2026-02-27 15:00:00\t2026-02-27 16:00:00\topen\t0"
    );
}

#[tokio::test]
#[ignore = "needs ClickHouse at VIGIA_CLICKHOUSE_URL (default http://127.0.0.1:8123)"]
async fn probes_and_errors_name_the_problem() {
    let down = Config {
        url: "http://127.0.0.1:1".into(),
        ..Config::default()
    };
    assert!(!ready(&down).await);
    let e = migrate(&down).await.unwrap_err().to_string();
    assert!(e.contains("http://127.0.0.1:1"), "{e}");

    let bad = Config {
        database: "no-dashes".into(),
        ..Config::default()
    };
    assert!(migrate(&bad)
        .await
        .unwrap_err()
        .to_string()
        .contains("clickhouse.database"));

    // Writing before migrating names the database and says to migrate.
    let db = TestDb::new();
    let writer = Writer::new(&db.cfg).unwrap();
    let e = writer
        .write(&[event_row(1, 1, at("2026-02-27T15:00:00Z"))])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(db.name()) && e.contains("vigia migrate"), "{e}");
}

#[tokio::test]
#[ignore = "needs ClickHouse at VIGIA_CLICKHOUSE_URL (default http://127.0.0.1:8123)"]
async fn a_write_waits_while_an_earlier_insert_may_still_be_running() {
    let db = TestDb::new();
    migrate(&db.cfg).await.expect(NEEDS);
    let writer = Writer::new(&db.cfg).unwrap();
    // Stand-in for an INSERT whose client gave up but which ClickHouse is still running.
    let query_id = writer.insert_query_id("events");
    let client = clickhouse::Client::default()
        .with_url(&db.cfg.url)
        .with_validation(false)
        .with_setting("query_id", &query_id);
    let running = tokio::spawn(async move {
        client.query_raw("SELECT sleep(2)").execute().await.unwrap();
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let rows = [event_row(1, 1, at("2026-02-27T15:00:00Z"))];
    let e = writer.write(&rows).await.unwrap_err();
    assert!(
        matches!(e, vigia_sinks::SinkError::InsertStillRunning { .. }),
        "{e}"
    );
    assert_eq!(db.count("events").await, 0);

    running.await.unwrap();
    assert_eq!(writer.write(&rows).await.unwrap().inserted, 1);
}

#[tokio::test]
#[ignore = "needs ClickHouse at VIGIA_CLICKHOUSE_URL (default http://127.0.0.1:8123)"]
async fn the_documented_example_queries_run() {
    let db = TestDb::new();
    migrate(&db.cfg).await.expect(NEEDS);
    let writer = Writer::new(&db.cfg).unwrap();
    let now = chrono::Utc::now();
    writer
        .write(&[event_row(1, 42, now), event_row(2, 42, now)])
        .await
        .unwrap();
    let readme = include_str!("../migrations/README.md");
    let queries: Vec<&str> = readme
        .split("```sql")
        .skip(1)
        .map(|block| block.split("```").next().unwrap())
        .collect();
    assert!(queries.len() >= 8, "found {} queries", queries.len());
    for q in queries {
        let sql = q.replace("vigia.", &format!("{}.", db.name()));
        let _ = db.tsv(&sql).await; // panics with ClickHouse's message if refused
    }
    let check = db
        .tsv(&format!(
            "SELECT count(), uniqExact(event_id) FROM {}.events WHERE tenant_id = 42",
            db.name()
        ))
        .await;
    assert_eq!(check, "2\t2");
}
