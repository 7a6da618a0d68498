//! The recovery decision, as pure logic: what a processor does with a partition it is assigned —
//! which engine to run (the one it still holds, one restored from a checkpoint, or a fresh one),
//! where to start consuming, when replay ends and outputs are produced again, and which clock
//! watermarks to restore when. Like the engine, it is sans-io: its inputs are facts the runner
//! read from Kafka (committed offset and the [`Watermarks`] committed with it, the low and high
//! watermarks, the headers of the checkpoints available), its outputs are decisions the runner
//! carries out with Kafka calls. So every branch is unit-tested without a broker.
//!
//! What it does not: read or write Kafka, hold engines, deliver or count outputs, or decide when
//! to commit (except that nothing is committed while replaying what was delivered before:
//! [`Replay::may_commit`]). Serializing engine state into checkpoints is not here either; a
//! checkpoint appears here only as its header ([`CheckpointFacts`]).
//!
//! # The decision
//!
//! Let `C` be the group's committed offset at assignment (ignored if beyond the partition's end:
//! the topic was recreated) and `H` the high-water mark then.
//! - **Which engine** ([`plan_assignment`]): the engine this instance kept since the partition
//!   was revoked, if the consumer resumes exactly where it stopped; else the latest usable
//!   checkpoint at or before `C` ([`choose_checkpoint`]); else a fresh engine replaying from the
//!   partition's beginning.
//! - **When replay ends** ([`Replay`]): records before `C` rebuild state with their outputs
//!   suppressed (they were delivered before); from `C` on, outputs are produced. When the engine
//!   reaches `C`, the watermarks committed with it are restored — the *delivered* one with its
//!   outputs suppressed, then the *clock* one with its outputs produced (perhaps again, same ids).
//!   The partition is *live* (its watermark follows the wall clock) once the engine reaches `H`.
//! - **Revocation** keeps the engine (not owned): if the partition comes back and the consumer
//!   resumes at that engine's position, it goes on from there; engines of partitions assigned
//!   elsewhere are dropped at the next assignment ([`stale_engines`]).
//!
//! # Which checkpoint is usable
//!
//! A checkpoint holds an engine's state after the records before its offset `O`, and the clock
//! watermark it had then. It replaces the replay of `..O` only if that replay would have produced
//! nothing: every output it holds as already fired must have been delivered. Hence, in order:
//! - it must be readable and of this build's state version (else: full replay, never a guess);
//! - `O <= C`: a checkpoint after `C` (a commit was lost) holds the effects of records whose
//!   outputs may not have been delivered;
//! - if `O == C`, its clock watermark must not pass the committed *delivered* watermark: the clock
//!   may have fired at position `C` after the commit, outputs not covered by any commit. With
//!   `O < C` such outputs were counted at a position before `C`, so the commit of `C` covers them.
//!
//! Without a committed offset no checkpoint is used: nothing is known to be delivered, so every
//! output is produced, as in a full replay. Among usable checkpoints the one with the greatest
//! offset wins (the least to replay); on a tie, the later in the list (the newer write).

use chrono::{DateTime, Utc};

use crate::engine::{Output, PartitionEngine};

/// The clock watermarks travelling with a committed offset, as the commit's metadata (JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Watermarks {
    /// Every output the clock fired up to here was acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_watermark: Option<DateTime<Utc>>,
    /// The clock watermark (fired up to here; committed before firing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_watermark: Option<DateTime<Utc>>,
}

impl Watermarks {
    /// Reads commit metadata. Empty or foreign metadata (a broker that drops it, another tool's
    /// commit) reads as no watermarks: the replay then rebuilds the clock from log time alone.
    pub fn from_metadata(metadata: &str) -> Self {
        serde_json::from_str(metadata).unwrap_or_default()
    }

    /// The commit metadata.
    pub fn to_metadata(&self) -> String {
        serde_json::to_string(self).expect("watermarks serialize")
    }

    /// The watermarks to commit for an engine with clock watermark `clock`, next pending deadline
    /// `next_deadline`, when all its outputs are acknowledged (`quiet`) or not. The delivered
    /// watermark is only known when quiet (then the committed offset is exactly the engine's
    /// position): the clock watermark, but before any deadline still pending, so that a restore
    /// suppresses only what the engine fired and Kafka acknowledged.
    pub fn to_commit(
        clock: Option<DateTime<Utc>>,
        quiet: bool,
        next_deadline: Option<DateTime<Utc>>,
    ) -> Self {
        let delivered = clock.filter(|_| quiet).map(|c| match next_deadline {
            Some(d) if d <= c => d - chrono::Duration::nanoseconds(1),
            _ => c,
        });
        Watermarks {
            delivered_watermark: delivered,
            clock_watermark: clock,
        }
    }

    /// Applies these committed watermarks to `engine`: the delivered one first, its outputs
    /// dropped (delivered before), then the clock one; returns the outputs to produce.
    pub fn restore(self, engine: &mut PartitionEngine) -> Vec<Output> {
        if let Some(d) = self.delivered_watermark {
            let _ = engine.advance_watermark(d);
        }
        match self.clock_watermark {
            Some(c) => engine.advance_watermark(c),
            None => Vec::new(),
        }
    }
}

/// What the runner reads from Kafka about a partition when it is assigned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartitionOffsets {
    /// The group's committed offset, if any.
    pub committed: Option<i64>,
    /// The watermarks committed with it (default when none).
    pub watermarks: Watermarks,
    /// Low-water mark: the first offset retention kept.
    pub low: i64,
    /// High-water mark: the offset the next record written gets.
    pub high: i64,
}

/// An engine this instance already holds for the partition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeldEngine {
    /// Still owned (no revocation came before this assignment).
    pub owned: bool,
    /// Offset of the next record it needs.
    pub next_offset: i64,
    pub clock_watermark: Option<DateTime<Utc>>,
}

/// What is known about an available checkpoint before using it: its header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckpointFacts {
    /// The state is the engine's after every record before this offset.
    pub offset: i64,
    /// The version of the state's format; only this build's can be loaded.
    pub state_version: u32,
    /// The engine's clock watermark when it was taken.
    pub clock_watermark: Option<DateTime<Utc>>,
    /// Reading or decoding it failed (pieces missing, corrupt): never chosen.
    pub unreadable: bool,
}

/// Everything the assignment of one partition is decided from.
#[derive(Debug, Clone, Copy)]
pub struct Assignment<'a> {
    /// Where the rebalance callback started consumption: a held engine's position, or `None` for
    /// the partition's beginning.
    pub start: Option<i64>,
    pub held: Option<HeldEngine>,
    pub offsets: PartitionOffsets,
    pub checkpoints: &'a [CheckpointFacts],
    /// The state version this build reads and writes.
    pub state_version: u32,
}

/// Something odd about the committed offset, to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommittedAnomaly {
    /// Beyond the partition's end (was the topic recreated?): ignored.
    BeyondEnd { committed: i64, high: i64 },
    /// Before the first record kept: records `committed..low` were deleted by retention before
    /// being processed. Kept (outputs of what remains are produced from `low`).
    Deleted { committed: i64, low: i64 },
}

/// The committed offset to use, and what was odd about it.
pub fn check_committed(offsets: &PartitionOffsets) -> (Option<i64>, Option<CommittedAnomaly>) {
    match offsets.committed {
        Some(c) if c > offsets.high => (
            None,
            Some(CommittedAnomaly::BeyondEnd {
                committed: c,
                high: offsets.high,
            }),
        ),
        Some(c) if c < offsets.low => (
            Some(c),
            Some(CommittedAnomaly::Deleted {
                committed: c,
                low: offsets.low,
            }),
        ),
        c => (c, None),
    }
}

/// Why a checkpoint was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Unreadable,
    /// Written by a build with another state format.
    Incompatible {
        state_version: u32,
    },
    /// After the committed offset: its state may include undelivered outputs' effects.
    AfterCommitted,
    /// At the committed offset, but its clock passed the committed delivered watermark: it may
    /// hold clock-fired outputs that were never delivered.
    ClockNotDelivered,
}

/// Why a partition replays from its beginning rather than from a checkpoint (logged and counted
/// once checkpoints are written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// No committed offset: nothing is known to be delivered, every output is produced.
    NothingCommitted,
    /// No checkpoint is available.
    NoCheckpoint,
    /// Checkpoints are available, none usable (see the rejections).
    NoneUsable,
}

/// Why a partition replays from its beginning, as logged and counted
/// (`vigia_processor_full_replays_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FullReplayReason {
    /// No committed offset (a new consumer group): nothing is known to be delivered.
    NothingCommitted,
    /// No checkpoint of the partition was found.
    NoCheckpoint,
    /// Pieces missing, mixed or corrupt (a crash while writing, a broken record).
    Unreadable,
    /// Written by a build with another engine state version.
    OtherStateVersion,
    /// Taken under another configuration of the rules (`Config::for_state`).
    OtherConfig,
    /// After the committed offset (a commit was lost).
    AfterCommitted,
    /// At the committed offset, holding clock-fired outputs not known delivered.
    ClockNotDelivered,
}

impl FullReplayReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FullReplayReason::NothingCommitted => "nothing_committed",
            FullReplayReason::NoCheckpoint => "no_checkpoint",
            FullReplayReason::Unreadable => "unreadable",
            FullReplayReason::OtherStateVersion => "other_state_version",
            FullReplayReason::OtherConfig => "other_config",
            FullReplayReason::AfterCommitted => "after_committed",
            FullReplayReason::ClockNotDelivered => "clock_not_delivered",
        }
    }

    /// The reason of a fallback: for [`Fallback::NoneUsable`], why the newest checkpoint (the
    /// last rejected, in the order [`choose_checkpoint`] was given them) was refused.
    pub fn of(fallback: Fallback, rejected: &[(usize, Rejection)]) -> Self {
        match fallback {
            Fallback::NothingCommitted => FullReplayReason::NothingCommitted,
            Fallback::NoCheckpoint => FullReplayReason::NoCheckpoint,
            Fallback::NoneUsable => match rejected.iter().max_by_key(|(i, _)| *i) {
                Some((_, Rejection::Incompatible { .. })) => FullReplayReason::OtherStateVersion,
                Some((_, Rejection::AfterCommitted)) => FullReplayReason::AfterCommitted,
                Some((_, Rejection::ClockNotDelivered)) => FullReplayReason::ClockNotDelivered,
                Some((_, Rejection::Unreadable)) | None => FullReplayReason::Unreadable,
            },
        }
    }
}

/// The outcome of [`choose_checkpoint`].
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointChoice {
    /// Index of the chosen checkpoint, or why none.
    pub chosen: Result<usize, Fallback>,
    /// Checkpoints that could not be used, by index (older usable ones are not listed).
    pub rejected: Vec<(usize, Rejection)>,
}

/// The latest usable checkpoint at or before the committed offset (see the module doc).
/// `committed` is the checked one ([`check_committed`]).
pub fn choose_checkpoint(
    committed: Option<i64>,
    watermarks: Watermarks,
    checkpoints: &[CheckpointFacts],
    state_version: u32,
) -> CheckpointChoice {
    let Some(committed) = committed else {
        return CheckpointChoice {
            chosen: Err(Fallback::NothingCommitted),
            rejected: Vec::new(),
        };
    };
    let mut rejected = Vec::new();
    let mut best: Option<(usize, i64)> = None;
    for (i, cp) in checkpoints.iter().enumerate() {
        // Of a run whose outputs were not all delivered comes first, whatever the version: such
        // a checkpoint is deleted, as a build that reads its version (a rollback) must not
        // load it once a later commit passes its offset.
        let rejection = if cp.unreadable {
            Some(Rejection::Unreadable)
        } else if cp.offset > committed {
            Some(Rejection::AfterCommitted)
        } else if cp.offset == committed
            && cp.clock_watermark.is_some_and(|k| {
                watermarks
                    .delivered_watermark
                    .is_none_or(|delivered| k > delivered)
            })
        {
            Some(Rejection::ClockNotDelivered)
        } else if cp.state_version != state_version {
            Some(Rejection::Incompatible {
                state_version: cp.state_version,
            })
        } else {
            None
        };
        match rejection {
            Some(r) => rejected.push((i, r)),
            None if best.is_none_or(|(_, o)| cp.offset >= o) => best = Some((i, cp.offset)),
            None => {}
        }
    }
    let chosen = match best {
        Some((i, _)) => Ok(i),
        None if checkpoints.is_empty() => Err(Fallback::NoCheckpoint),
        None => Err(Fallback::NoneUsable),
    };
    CheckpointChoice { chosen, rejected }
}

/// Which engine runs the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineSource {
    /// The engine this instance held: it goes on.
    Resume,
    /// Restore checkpoint `.0` (an index into [`Assignment::checkpoints`]) into a new engine.
    Checkpoint(usize),
    /// A new, empty engine replaying from the partition's beginning.
    Fresh(Fallback),
}

/// Where to reposition the consumer, when the rebalance callback started it elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    Beginning,
    Offset(i64),
}

/// What to do with the engine's clock right at assignment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WatermarkStep {
    Nothing,
    /// The engine is at the committed offset (or caught up): restore the committed watermarks
    /// now ([`Watermarks::restore`]) and produce what that fires.
    Restore(Watermarks),
    /// The held engine is past the committed offset, behind the committed clock: what another
    /// owner delivered cannot be told apart from ours, so advance to the committed clock and
    /// produce (same ids, at worst again).
    Advance(DateTime<Utc>),
}

/// The decision for one assigned partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The committed offset used (after [`check_committed`]).
    pub committed: Option<i64>,
    pub anomaly: Option<CommittedAnomaly>,
    pub engine: EngineSource,
    /// Checkpoints that could not be used (empty when resuming).
    pub rejected: Vec<(usize, Rejection)>,
    pub seek: Option<Seek>,
    /// Offset of the next record the engine needs.
    pub next_offset: i64,
    /// Replay progress, for the partition's run.
    pub replay: Replay,
    pub watermarks_now: WatermarkStep,
}

/// Decides what to do with one assigned partition (see the module doc).
pub fn plan_assignment(a: &Assignment) -> Plan {
    let (committed, anomaly) = check_committed(&a.offsets);
    let low = a.offsets.low;
    let resumed = match (a.start, a.held) {
        (Some(o), Some(held)) => !held.owned && held.next_offset == o,
        _ => false,
    };
    let (engine, rejected, seek, next_offset, engine_clock) = if resumed {
        let held = a.held.expect("resumed implies held");
        (
            EngineSource::Resume,
            Vec::new(),
            None,
            held.next_offset,
            held.clock_watermark,
        )
    } else {
        let choice = choose_checkpoint(
            committed,
            a.offsets.watermarks,
            a.checkpoints,
            a.state_version,
        );
        match choice.chosen {
            Ok(i) => {
                let cp = a.checkpoints[i];
                // Records before `low` are gone: consumption starts at the first one kept.
                let next = cp.offset.max(low);
                let seek = (a.start != Some(next)).then_some(Seek::Offset(next));
                (
                    EngineSource::Checkpoint(i),
                    choice.rejected,
                    seek,
                    next,
                    cp.clock_watermark,
                )
            }
            Err(fallback) => (
                EngineSource::Fresh(fallback),
                choice.rejected,
                // Started from a held engine's position, but that engine cannot go on: rewind.
                a.start.map(|_| Seek::Beginning),
                low,
                None,
            ),
        }
    };
    let mut replay = Replay {
        committed,
        restore: None,
        high_water: a.offsets.high,
        live: next_offset >= a.offsets.high,
    };
    let watermarks = a.offsets.watermarks;
    let mut watermarks_now = WatermarkStep::Nothing;
    let behind =
        engine_clock.is_none_or(|have| watermarks.clock_watermark.is_some_and(|c| have < c));
    if behind {
        if committed.is_none_or(|c| next_offset <= c) {
            if committed.is_none_or(|c| next_offset == c) || replay.live {
                watermarks_now = WatermarkStep::Restore(watermarks);
            } else {
                replay.restore = Some(watermarks);
            }
        } else if let Some(c) = watermarks.clock_watermark {
            watermarks_now = WatermarkStep::Advance(c);
        }
    }
    Plan {
        committed,
        anomaly,
        engine,
        rejected,
        seek,
        next_offset,
        replay,
        watermarks_now,
    }
}

/// Replay progress of one partition: whether outputs are suppressed, when to restore the
/// committed watermarks, whether the partition is live.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Replay {
    /// The committed offset at assignment: outputs of records before it are suppressed.
    committed: Option<i64>,
    /// The watermarks committed with `committed`, to restore when the engine reaches it.
    restore: Option<Watermarks>,
    /// The high-water mark at assignment: replay until here, then live.
    high_water: i64,
    live: bool,
}

/// What to do around one record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordStep {
    /// Produce the record's outputs (else they were delivered before: suppress them).
    pub producing: bool,
    /// Restore these committed watermarks before the record ([`Watermarks::restore`]).
    pub restore: Option<Watermarks>,
}

/// What to do once a record is processed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AfterRecord {
    /// The engine just reached the high-water mark: the partition is live from now on.
    pub became_live: bool,
    /// Restore these committed watermarks now.
    pub restore: Option<Watermarks>,
}

impl Replay {
    /// A partition not assigned yet, its engine at `start`.
    pub fn new(start: i64) -> Self {
        Replay {
            committed: None,
            restore: None,
            high_water: start,
            live: false,
        }
    }

    /// Caught up with the high-water mark at assignment: the clock may drive the watermark.
    pub fn live(&self) -> bool {
        self.live
    }

    /// The committed offset at assignment.
    pub fn committed(&self) -> Option<i64> {
        self.committed
    }

    /// Before processing the record at `offset`.
    pub fn before_record(&mut self, offset: i64) -> RecordStep {
        let producing = self.committed.is_none_or(|c| offset >= c);
        let restore = if producing { self.restore.take() } else { None };
        RecordStep { producing, restore }
    }

    /// After processing a record, the engine now needing `next_offset`.
    pub fn after_record(&mut self, next_offset: i64) -> AfterRecord {
        if self.live || next_offset < self.high_water {
            return AfterRecord {
                became_live: false,
                restore: None,
            };
        }
        self.live = true;
        let restore = if self.committed.is_none_or(|c| next_offset >= c) {
            self.restore.take()
        } else {
            None
        };
        AfterRecord {
            became_live: true,
            restore,
        }
    }

    /// Whether `offset` may be committed: not while replaying what was delivered before (that
    /// would move the committed offset back).
    pub fn may_commit(&self, offset: i64) -> bool {
        self.committed.is_none_or(|c| offset >= c)
    }
}

/// Held engines to drop when `assigned` partitions are assigned: those not owned (revoked) and
/// not among them — their partitions went elsewhere. Sorted.
pub fn stale_engines(held: impl IntoIterator<Item = (i32, bool)>, assigned: &[i32]) -> Vec<i32> {
    let mut stale: Vec<i32> = held
        .into_iter()
        .filter(|(p, owned)| !owned && !assigned.contains(p))
        .map(|(p, _)| p)
        .collect();
    stale.sort_unstable();
    stale
}

#[cfg(test)]
mod tests;
