//! The Arroyo UDFs (`udfs/`) agree with the processors on the simulator's stream.
//!
//! The test builds the UDF libraries with cargo (`udfs/` is a workspace of its own: Arrow 51),
//! loads each one and calls its `__run` the way Arroyo's host does — arguments as Arrow arrays
//! through the C data interface, in `FfiArrays`, the result back as a `RunResult` — with this
//! crate's own, newer Arrow on the host side, as in Arroyo, whose host is not built on the
//! plugin's Arrow either.
//!
//! The stream is `vigia simulate --dry-run` (fixed seed and start, two tenants with different
//! high-value locations). It goes through a [`PartitionEngine`] in delivery order; for every
//! `LeadScore` the engine emits, the test assembles the UDF's columns from the events applied so
//! far — what `docker/arroyo/pipeline.sql` gathers in SQL: the lead's source and location, its
//! conversation's customer-message count, seconds since the last customer message at the cause's
//! time, the OR of the messages' buying-signal masks — and requires `hot_lead_score` to return
//! exactly the engine's score (and [`scoring::score`] of the same inputs to, which checks the
//! test's own bookkeeping). Every customer message's text goes through `intent_mask`,
//! `intent_signals` and `intent_score`, which must equal the processors' classifier's verdict.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use arrow_array::ffi::{from_ffi, to_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::{make_array, Array, ArrayRef, Float64Array, Int64Array, StringArray};
use chrono::{DateTime, Utc};
use serde_json::Value;
use vigia_processors::scoring::{self, ScoreInputs};
use vigia_processors::{Config, Output, PartitionEngine, ThresholdOverrides};
use vigia_schemas::{Event, LeadScore, Payload};

// The plugin FFI of arroyo-udf-common 0.2 (what `arroyo_udf_plugin::udf` exports and Arroyo's
// host calls), declared here with the same `repr(C)` layouts. The Arrow structs are the C data
// interface's, the same in every Arrow version.

#[repr(C)]
struct FfiArraySchema(FFI_ArrowArray, FFI_ArrowSchema);

/// A vector of arguments handed over to the library, which frees it (and the arrays).
#[repr(C)]
struct FfiArrays {
    ptr: *mut FfiArraySchema,
    len: usize,
    capacity: usize,
    error: bool,
}

#[repr(C)]
#[allow(dead_code)] // built by the library, never by the test
enum RunResult {
    Ok(FfiArraySchema),
    Err,
}

type Run = unsafe extern "C-unwind" fn(FfiArrays) -> RunResult;

/// One loaded UDF library.
struct Udf {
    name: String,
    run: Run,
    /// Kept loaded: results hold release callbacks into it.
    _library: libloading::Library,
}

impl Udf {
    fn load(name: &str, path: &Path) -> Udf {
        // SAFETY: our own library, built by cargo just now; loading runs no initialisers of note.
        let library = unsafe { libloading::Library::new(path) }
            .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()));
        // SAFETY: the symbol `#[udf]` exports, with the signature Arroyo's host gives it.
        let run = *unsafe { library.get::<Run>(b"__run\0") }
            .unwrap_or_else(|e| panic!("{} exports no __run: {e}", path.display()));
        Udf {
            name: name.to_string(),
            run,
            _library: library,
        }
    }

    /// Calls the UDF on one batch, as Arroyo's host does (`SyncUdfDylib::invoke`).
    fn call(&self, args: &[ArrayRef]) -> ArrayRef {
        let args: Vec<FfiArraySchema> = args
            .iter()
            .map(|a| {
                let (array, schema) = to_ffi(&a.to_data()).unwrap();
                FfiArraySchema(array, schema)
            })
            .collect();
        // The library takes the vector over (`Vec::from_raw_parts`) and releases the arrays.
        let mut args = std::mem::ManuallyDrop::new(args);
        let ffi = FfiArrays {
            ptr: args.as_mut_ptr(),
            len: args.len(),
            capacity: args.capacity(),
            error: false,
        };
        // SAFETY: `ffi` is laid out as the library expects and owned by it from here on.
        match unsafe { (self.run)(ffi) } {
            RunResult::Ok(FfiArraySchema(array, schema)) => {
                // SAFETY: a valid exported array and its schema, released through the library.
                make_array(unsafe { from_ffi(array, &schema) }.unwrap())
            }
            RunResult::Err => panic!("UDF {} panicked", self.name),
        }
    }
}

/// `<this build's target directory>/udfs`.
fn udfs_target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("udfs")
}

/// Builds `udfs/` and returns its UDF libraries by UDF name (`hot_lead_score`, …).
fn build_udfs() -> BTreeMap<String, PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--workspace",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(root.join("udfs/Cargo.toml"))
        // Its own target directory, inside this build's (kept between runs, also in CI, whose
        // target directory is outside the clone): another lock file and Arrow than this build's.
        .env("CARGO_TARGET_DIR", udfs_target_dir(root))
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo build of udfs/ failed");
    let mut libs = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let msg: Value = serde_json::from_str(line).unwrap();
        let is_cdylib = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "cdylib"));
        if msg["reason"] != "compiler-artifact" || !is_cdylib {
            continue;
        }
        let name = msg["target"]["name"].as_str().unwrap();
        let udf = name.strip_prefix("vigia_arroyo_udf_").unwrap().to_string();
        let file = msg["filenames"][0].as_str().unwrap();
        libs.insert(udf, PathBuf::from(file));
    }
    libs
}

const START: &str = "2026-03-02T09:00:00Z";

/// The simulator's fixed-seed stream, in delivery order (duplicates, reordering and late
/// deliveries included).
fn stream() -> Vec<Event> {
    let out = Command::new(env!("CARGO_BIN_EXE_vigia"))
        .args(["simulate", "--dry-run", "--seed", "5", "--tenants", "2"])
        .args(["--sellers", "4", "--rate", "20", "--duration", "40m"])
        .args(["--start", START])
        .output()
        .expect("vigia simulate runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| Event::from_json(l).expect("the simulator's events are valid"))
        .collect()
}

/// The processors' configuration: each tenant its own high-value areas.
fn config() -> Config {
    let mut c = Config::default();
    c.defaults.high_value_locations = vec!["Bogotá".into(), "Lima".into()];
    c.tenants.insert(
        2,
        ThresholdOverrides {
            high_value_locations: Some(vec!["Madrid".into(), " quito ".into()]),
            ..ThresholdOverrides::default()
        },
    );
    c
}

/// The test's reference for a message's mask: bit i = the i-th of the processors' signals.
fn reference_mask(text: &str) -> i64 {
    let names: Vec<&str> = scoring::signal_names().collect();
    scoring::intent_signals(text)
        .iter()
        .map(|s| 1i64 << names.iter().position(|n| n == s).unwrap())
        .fold(0, |a, b| a | b)
}

#[derive(Default)]
struct Conversation {
    customer_messages: i64,
    last_customer_message_at: Option<DateTime<Utc>>,
    intent_mask: i64,
}

struct Lead {
    source: String,
    location: Option<String>,
    conversation: Option<String>,
}

/// One `hot_lead_score` call: the UDF's columns and what the processors emitted.
struct Row {
    source: String,
    customer_messages: i64,
    seconds_since_last_customer_message: Option<i64>,
    intent_mask: i64,
    location: Option<String>,
    high_value_locations: String,
    reference: f64,
    emitted: LeadScore,
    /// A status change scored when its lead's late `lead.created` arrived.
    held: bool,
}

#[test]
#[ignore = "builds udfs/ (its own workspace, Arrow 51) with cargo; scripts/test.sh runs it"]
fn the_udfs_agree_with_the_processors_on_the_simulators_stream() {
    let libs = build_udfs();
    let names: Vec<&str> = libs.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "hot_lead_score",
            "intent_mask",
            "intent_score",
            "intent_signals"
        ]
    );
    let udf = |name: &str| Udf::load(name, &libs[name]);
    let (hot_lead_score, intent_mask, intent_signals, intent_score) = (
        udf("hot_lead_score"),
        udf("intent_mask"),
        udf("intent_signals"),
        udf("intent_score"),
    );

    let config = Arc::new(config());
    let mut engine = PartitionEngine::new(config.clone());
    let mut applied = HashSet::new();
    let mut conversations: HashMap<String, Conversation> = HashMap::new();
    let mut leads: HashMap<String, Lead> = HashMap::new();
    let mut rows = Vec::new();
    let mut texts: Vec<Option<String>> = Vec::new();
    let events = stream();
    for event in &events {
        let outputs = engine.on_event(event);
        if outputs.iter().any(|o| matches!(o, Output::TooLate(_)))
            || !applied.insert(event.event_id)
        {
            continue; // not applied by the engine: not part of anyone's inputs either
        }
        match &event.payload {
            Payload::LeadCreated(l) => {
                leads.insert(
                    l.lead_id.to_string(),
                    Lead {
                        source: serde_json::to_value(l.source)
                            .unwrap()
                            .as_str()
                            .unwrap()
                            .to_string(),
                        location: l.location.clone(),
                        conversation: l.conversation_id.as_ref().map(|c| c.to_string()),
                    },
                );
            }
            Payload::MessageReceived(m) => {
                texts.push(m.text.clone());
                let c = conversations
                    .entry(m.conversation_id.to_string())
                    .or_default();
                c.customer_messages += 1;
                c.last_customer_message_at =
                    c.last_customer_message_at.max(Some(event.occurred_at));
                c.intent_mask |= m.text.as_deref().map_or(0, reference_mask);
            }
            _ => {}
        }
        for output in outputs {
            let Output::LeadScore(emitted) = output else {
                continue;
            };
            // A score is caused by the event, or by a status change that arrived before its
            // lead's lead.created and is scored now, as of its own time (processors' leads.rs).
            let at = emitted.computed_at;
            let held = emitted.cause_event_id != event.event_id;
            if held {
                assert!(
                    matches!(event.payload, Payload::LeadCreated(_))
                        && emitted.status_change.is_some(),
                    "{emitted:?} caused by another event than {event:?}"
                );
            } else {
                assert_eq!(at, event.occurred_at);
            }
            let lead = &leads[emitted.lead_id.as_str()];
            let empty = Conversation::default();
            let conv = lead
                .conversation
                .as_ref()
                .and_then(|c| conversations.get(c))
                .unwrap_or(&empty);
            let areas = config.thresholds(event.tenant_id).high_value_locations;
            let reference = scoring::score(&ScoreInputs {
                source: &lead.source,
                customer_messages: conv.customer_messages as u32,
                last_customer_message_at: conv.last_customer_message_at,
                evaluated_at: at,
                intent_signals: conv.intent_mask.count_ones(),
                location: lead.location.as_deref(),
                high_value_locations: &areas,
            })
            .score;
            rows.push(Row {
                source: lead.source.clone(),
                customer_messages: conv.customer_messages,
                seconds_since_last_customer_message: conv
                    .last_customer_message_at
                    .map(|last| (at - last).num_seconds()),
                intent_mask: conv.intent_mask,
                location: lead.location.clone(),
                high_value_locations: areas.join(","),
                reference,
                emitted,
                held,
            });
        }
    }

    // The stream exercises every component, both tenants' areas, and the threshold.
    let count = |f: &dyn Fn(&Row) -> bool| rows.iter().filter(|r| f(r)).count();
    let coverage = [
        ("location", count(&|r| r.emitted.location_score > 0.0)),
        ("no location", count(&|r| r.emitted.location_score == 0.0)),
        (
            "tenant 2's areas",
            count(&|r| r.emitted.tenant_id == 2 && r.emitted.location_score > 0.0),
        ),
        ("intent", count(&|r| r.emitted.intent_score > 0.0)),
        ("intent capped", count(&|r| r.emitted.intent_score == 0.25)),
        ("engagement", count(&|r| r.emitted.engagement_score > 0.0)),
        ("recency", count(&|r| r.emitted.recency_score > 0.0)),
        ("no recency", count(&|r| r.emitted.recency_score == 0.0)),
        (
            "a later message",
            count(&|r| r.seconds_since_last_customer_message.is_some_and(|s| s < 0)),
        ),
        ("score >= 0.8", count(&|r| r.emitted.score >= 0.8)),
        ("a status change before its lead", count(&|r| r.held)),
    ];
    println!(
        "{} events, {} lead scores, {} customer messages; {coverage:?}",
        events.len(),
        rows.len(),
        texts.len()
    );
    for (what, n) in coverage {
        assert!(
            n > 0,
            "no lead score with {what}: the stream does not test it"
        );
    }

    let mut compared = 0;
    for batch in rows.chunks(500) {
        let args: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter(
                batch.iter().map(|r| Some(&r.source)),
            )),
            Arc::new(Int64Array::from_iter_values(
                batch.iter().map(|r| r.customer_messages),
            )),
            Arc::new(Int64Array::from_iter(
                batch.iter().map(|r| r.seconds_since_last_customer_message),
            )),
            Arc::new(Int64Array::from_iter_values(
                batch.iter().map(|r| r.intent_mask),
            )),
            Arc::new(StringArray::from_iter(
                batch.iter().map(|r| r.location.as_ref()),
            )),
            Arc::new(StringArray::from_iter(
                batch.iter().map(|r| Some(&r.high_value_locations)),
            )),
        ];
        let out = hot_lead_score.call(&args);
        let out = out.as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(out.len(), batch.len());
        assert_eq!(out.null_count(), 0);
        for (r, got) in batch.iter().zip(out.values()) {
            assert_eq!(
                r.reference, r.emitted.score,
                "the test's inputs are not the engine's for lead {} at {}",
                r.emitted.lead_id, r.emitted.cause_event_id
            );
            assert_eq!(
                *got, r.emitted.score,
                "hot_lead_score differs from the processors for lead {} at {}",
                r.emitted.lead_id, r.emitted.cause_event_id
            );
            compared += 1;
        }
    }
    assert_eq!(compared, rows.len());

    // NULL columns: no text, no source, no location, no list, no customer message yet.
    let nulls = hot_lead_score.call(&[
        Arc::new(StringArray::from(vec![None::<&str>])),
        Arc::new(Int64Array::from(vec![7])),
        Arc::new(Int64Array::from(vec![None])),
        Arc::new(Int64Array::from(vec![0])),
        Arc::new(StringArray::from(vec![None::<&str>])),
        Arc::new(StringArray::from(vec![None::<&str>])),
    ]);
    let nulls = nulls.as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(nulls.value(0), 0.20);

    texts.push(None);
    let mut with_signals = 0;
    for batch in texts.chunks(1000) {
        let arg: ArrayRef = Arc::new(StringArray::from_iter(batch.iter().map(Option::as_ref)));
        let masks = intent_mask.call(std::slice::from_ref(&arg));
        let masks = masks.as_any().downcast_ref::<Int64Array>().unwrap();
        let names = intent_signals.call(std::slice::from_ref(&arg));
        let names = names.as_any().downcast_ref::<StringArray>().unwrap();
        let scores = intent_score.call(&[arg]);
        let scores = scores.as_any().downcast_ref::<Float64Array>().unwrap();
        for (i, text) in batch.iter().enumerate() {
            let signals = text
                .as_deref()
                .map(scoring::intent_signals)
                .unwrap_or_default();
            with_signals += usize::from(!signals.is_empty());
            let expected_score = scoring::score(&ScoreInputs {
                source: "",
                customer_messages: 0,
                last_customer_message_at: None,
                evaluated_at: START.parse().unwrap(),
                intent_signals: signals.len() as u32,
                location: None,
                high_value_locations: &[],
            })
            .intent;
            assert_eq!(
                masks.value(i),
                text.as_deref().map_or(0, reference_mask),
                "{text:?}"
            );
            assert_eq!(names.value(i), signals.join(","), "{text:?}");
            assert_eq!(scores.value(i), expected_score, "{text:?}");
        }
    }
    assert!(with_signals > 0 && with_signals < texts.len());
    println!(
        "hot_lead_score equal on {compared} lead scores; intent_mask, intent_signals and \
         intent_score equal on {} messages ({with_signals} with buying signals)",
        texts.len()
    );
}
