//! `kill -9` the ClickHouse sink mid-stream, twice, and restart it: ClickHouse still holds every
//! row exactly once.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_sink_mid_stream_neither_loses_nor_duplicates_rows() {
    let ns = Namespace::new("sink_crash").env("VIGIA_UNANSWERED_AFTER", "1h");
    let db = ns.database();
    let ingest = ns.spawn("ingest");
    let _process = ns.spawn("process");
    let mut sink = Some(ns.spawn("sink"));

    // 60 requests of 25 conversations: question + reply each, every 7th request posted twice.
    let t0 = now() - chrono::Duration::minutes(10);
    let mut distinct = 0u64;
    let mut pairs = 0u64;
    let mut sink_restarts = 0;
    for batch in 0..60u64 {
        let mut events = Vec::new();
        for i in 0..25u64 {
            let conv = format!("c-{batch}-{i}");
            let at = t0 + chrono::Duration::milliseconds((batch * 25 + i) as i64 * 100);
            events.push(event(
                "message.received",
                1,
                at,
                json!({"conversation_id": conv, "channel": "whatsapp", "seller_id": 1010}),
            ));
            events.push(event(
                "message.sent",
                1,
                at + chrono::Duration::seconds(30),
                json!({"conversation_id": conv, "seller_id": 1010}),
            ));
            distinct += 2;
            pairs += 1;
        }
        let body = json!(events);
        post_ok(&ingest, 1, &body).await;
        if batch % 7 == 0 {
            post_ok(&ingest, 1, &body).await;
        }
        if batch == 20 || batch == 40 {
            // Let the sink get some rows in, then kill it without warning, mid-batch.
            tokio::time::sleep(Duration::from_millis(700)).await;
            let mut s = sink.take().unwrap();
            s.kill9();
            sink_restarts += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            sink = Some(ns.spawn("sink"));
        } else {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    assert_eq!(sink_restarts, 2);

    let within = Duration::from_secs(60);
    let got = eventually(within, distinct, || ch_count(&db, "events", "")).await;
    assert_eq!(got, distinct, "raw events after two kill -9 of the sink");
    let got = eventually(within, pairs, || ch_count(&db, "response_times", "")).await;
    assert_eq!(got, pairs, "response-time samples");

    // Settled: no late duplicates trickle in, and every id is unique in every table.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ch_count(&db, "events", "").await, distinct);
    assert_eq!(ch_count(&db, "response_times", "").await, pairs);
    for (table, id) in [
        ("events", "event_id"),
        ("response_times", "id"),
        ("lead_scores", "id"),
        ("notifications", "id"),
    ] {
        let row = ch_query(&format!(
            "SELECT count(), uniqExact({id}) FROM {db}.{table}"
        ))
        .await;
        let mut it = row.split_whitespace();
        assert_eq!(it.next(), it.next(), "{table} has duplicate rows: {row}");
    }
    drop(sink);
    drop_database(&db).await;
}
