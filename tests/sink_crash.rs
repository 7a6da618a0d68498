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

    // 60 requests of 25 conversations (question + reply each), every 7th request posted twice,
    // posted steadily while the sink is killed twice.
    let t0 = now() - chrono::Duration::minutes(10);
    let distinct = 60 * 25 * 2u64;
    let pairs = 60 * 25u64;
    let poster = {
        let url = ingest.url("/v1/events");
        tokio::spawn(async move {
            let client = reqwest::Client::new();
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
                }
                let times = if batch % 7 == 0 { 2 } else { 1 };
                for _ in 0..times {
                    let r = client
                        .post(&url)
                        .header("X-API-Key", "key-t1")
                        .json(&events)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 202);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    // Twice: wait until the running sink is writing, then kill it without warning and start
    // another. The stream keeps flowing meanwhile.
    let mut seen = 0;
    for _ in 0..2 {
        seen = eventually(Duration::from_secs(60), u64::MAX, || async {
            let n = ch_count(&db, "events", "").await;
            if n > seen + 100 {
                u64::MAX
            } else {
                n
            }
        })
        .await;
        assert_eq!(seen, u64::MAX, "the sink made no progress");
        seen = ch_count(&db, "events", "").await;
        assert!(
            seen < distinct,
            "the stream ended before the sink could be killed"
        );
        sink.take().unwrap().kill9();
        sink = Some(ns.spawn("sink"));
    }
    poster.await.unwrap();

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
