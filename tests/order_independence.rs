//! Order independence on the simulator's stream (issue 4): the same deliveries posted in order
//! and shuffled (each moved up to 300 positions, about 10 s of traffic, far beyond the
//! 50 ms watermark delay and within the 1 h allowed lateness). The records differ — samples are
//! retracted and alerts corrected as late events arrive — but the *net* results are the same:
//! the response-time samples that stand and the unanswered alerts not corrected (with whether
//! each was withdrawn), byte for byte; and the status changes (conversions) by seller and time,
//! also when a status change arrives before its lead's `lead.created`. A test binary of its own, so that it runs on a fresh
//! broker (`scripts/test.sh`).

mod common;

use common::outputs::*;
use common::*;
use rand::{RngExt, SeedableRng};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka (scripts/services.sh up)"]
async fn shuffled_deliveries_give_the_results_of_ordered_ones_after_corrections() {
    let start =
        (now() - chrono::Duration::minutes(15)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let events = stream(&start);
    let reference = run("order_reference", &events, &[], 1).await;
    let seed: u64 = std::env::var("VIGIA_SHUFFLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("shuffle from seed {seed} (VIGIA_SHUFFLE_SEED={seed} repeats it)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut keyed: Vec<(f64, Value)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (i as f64 + rng.random_range(0.0..300.0), e.clone()))
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let shuffled: Vec<Value> = keyed.into_iter().map(|(_, e)| e).collect();
    if let Ok(dir) = std::env::var("VIGIA_ORDER_DUMP") {
        // For debugging: both delivery orders, as NDJSON.
        for (name, list) in [("ordered", &events), ("shuffled", &shuffled)] {
            let text: Vec<String> = list.iter().map(|e| e.to_string()).collect();
            std::fs::write(format!("{dir}/{name}.ndjson"), text.join("\n")).unwrap();
        }
    }
    let reordered = run("order_shuffled", &shuffled, &[], 1).await;
    let (want, got) = (Net::of(&reference), Net::of(&reordered));
    assert!(want.samples.len() > 50 && want.alerts.len() > 5, "{want:?}");
    same(
        &want.samples,
        &got.samples,
        "response-time samples standing",
    );
    same(&want.alerts, &got.alerts, "unanswered alerts standing");
    let conversions = |n: &Net| {
        n.status_changes
            .values()
            .filter(|c| c.ends_with("\"converted\""))
            .count()
    };
    assert!(conversions(&want) > 0, "the stream converts leads");
    same(
        &want.status_changes,
        &got.status_changes,
        "lead status changes (conversions) by seller and time",
    );
    println!(
        "shuffled: {} samples, {} alerts and {} status changes ({} conversions) stand, as in \
         order, after {} retractions and {} corrected alerts",
        got.samples.len(),
        got.alerts.len(),
        got.status_changes.len(),
        conversions(&got),
        got.retracted,
        got.corrected
    );
}

/// Equal maps, or a failure that shows a few of the differences.
fn same<V: PartialEq + std::fmt::Debug>(
    want: &std::collections::BTreeMap<String, V>,
    got: &std::collections::BTreeMap<String, V>,
    what: &str,
) {
    let missing: Vec<_> = want
        .iter()
        .filter(|(k, _)| !got.contains_key(*k))
        .take(3)
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, _)| !want.contains_key(*k))
        .take(3)
        .collect();
    let differing: Vec<_> = want
        .iter()
        .filter_map(|(k, v)| got.get(k).filter(|g| *g != v).map(|g| (k, v, g)))
        .take(3)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differing.is_empty(),
        "{what}: {} in order, {} shuffled\nmissing: {missing:#?}\nextra: {extra:#?}\n\
         differing (in order, shuffled): {differing:#?}",
        want.len(),
        got.len()
    );
}
