//! Every branch of the recovery decision, with made-up offsets and times.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use vigia_schemas::{Channel, Event, MessageReceived, NotificationType, Payload};

use super::*;
use crate::config::Config;

const VERSION: u32 = 3;

/// Minute `m` after a fixed origin.
fn t(m: i64) -> DateTime<Utc> {
    "2026-03-02T09:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::Duration::minutes(m)
}

fn marks(delivered: Option<i64>, clock: Option<i64>) -> Watermarks {
    Watermarks {
        delivered_watermark: delivered.map(t),
        clock_watermark: clock.map(t),
    }
}

fn offsets(committed: Option<i64>, low: i64, high: i64) -> PartitionOffsets {
    PartitionOffsets {
        committed,
        watermarks: Watermarks::default(),
        low,
        high,
    }
}

fn cp(offset: i64) -> CheckpointFacts {
    CheckpointFacts {
        offset,
        state_version: VERSION,
        clock_watermark: None,
        unreadable: false,
    }
}

fn fresh(offsets: PartitionOffsets) -> Assignment<'static> {
    Assignment {
        start: None,
        held: None,
        offsets,
        checkpoints: &[],
        state_version: VERSION,
    }
}

fn held(owned: bool, next_offset: i64, clock: Option<i64>) -> Option<HeldEngine> {
    Some(HeldEngine {
        owned,
        next_offset,
        clock_watermark: clock.map(t),
    })
}

// --- commit metadata ---

#[test]
fn watermarks_round_trip_through_commit_metadata_and_foreign_metadata_reads_as_none() {
    let w = marks(Some(1), Some(2));
    assert_eq!(Watermarks::from_metadata(&w.to_metadata()), w);
    // The format other instances (older builds) wrote and read: unchanged field names, absent
    // fields omitted.
    assert_eq!(
        marks(None, Some(0)).to_metadata(),
        r#"{"clock_watermark":"2026-03-02T09:00:00Z"}"#
    );
    assert_eq!(Watermarks::default().to_metadata(), "{}");
    for foreign in ["", "not json", "[1]", r#"{"clock_watermark": 5}"#] {
        assert_eq!(Watermarks::from_metadata(foreign), Watermarks::default());
    }
}

#[test]
fn the_delivered_watermark_is_committed_only_when_quiet_and_stops_before_a_due_deadline() {
    assert_eq!(
        Watermarks::to_commit(None, true, None),
        Watermarks::default()
    );
    assert_eq!(
        Watermarks::to_commit(Some(t(10)), false, None),
        marks(None, Some(10)),
        "outputs in flight: nothing known delivered"
    );
    assert_eq!(
        Watermarks::to_commit(Some(t(10)), true, Some(t(20))),
        marks(Some(10), Some(10)),
        "the next deadline is after the clock"
    );
    let due = Watermarks::to_commit(Some(t(10)), true, Some(t(5)));
    assert_eq!(
        due.delivered_watermark,
        Some(t(5) - chrono::Duration::nanoseconds(1)),
        "a deadline at or before the clock has not fired yet: not delivered"
    );
    assert_eq!(due.clock_watermark, Some(t(10)));
}

fn received(n: u128, conv: &str, at: DateTime<Utc>) -> Event {
    Event {
        event_id: uuid::Uuid::from_u128(n),
        tenant_id: 42,
        occurred_at: at,
        payload: Payload::MessageReceived(MessageReceived {
            conversation_id: conv.into(),
            channel: Channel::Whatsapp,
            seller_id: Some(7),
            phone_number: None,
            text: None,
        }),
    }
}

fn unanswered(outs: &[Output]) -> usize {
    outs.iter()
        .filter(|o| {
            matches!(o, Output::Notification(n) if n.kind == NotificationType::UnansweredConversation)
        })
        .count()
}

#[test]
fn restoring_suppresses_what_was_delivered_and_produces_what_was_only_fired() {
    let engine = || {
        let mut e = PartitionEngine::new(Arc::new(Config::default()));
        // Two waits, unanswered after an hour: due at minutes 60 and 90.
        e.on_event(&received(1, "c1", t(0)));
        e.on_event(&received(2, "c2", t(30)));
        e
    };
    let mut e = engine();
    let outs = marks(Some(70), Some(100)).restore(&mut e);
    assert_eq!(
        unanswered(&outs),
        1,
        "c1 was delivered, c2 only fired: {outs:?}"
    );

    let mut e = engine();
    assert_eq!(unanswered(&marks(None, Some(100)).restore(&mut e)), 2);

    let mut e = engine();
    assert!(Watermarks::default().restore(&mut e).is_empty());
    assert_eq!(
        e.clock_watermark(),
        None,
        "no metadata: the clock is untouched"
    );
}

// --- the committed offset ---

#[test]
fn a_committed_offset_beyond_the_end_is_ignored_and_one_before_the_start_kept() {
    assert_eq!(check_committed(&offsets(None, 0, 10)), (None, None));
    assert_eq!(check_committed(&offsets(Some(10), 0, 10)), (Some(10), None));
    assert_eq!(check_committed(&offsets(Some(4), 4, 10)), (Some(4), None));
    assert_eq!(
        check_committed(&offsets(Some(11), 0, 10)),
        (
            None,
            Some(CommittedAnomaly::BeyondEnd {
                committed: 11,
                high: 10
            })
        )
    );
    assert_eq!(
        check_committed(&offsets(Some(2), 4, 10)),
        (
            Some(2),
            Some(CommittedAnomaly::Deleted {
                committed: 2,
                low: 4
            })
        )
    );
}

// --- which checkpoint ---

fn choose(committed: Option<i64>, w: Watermarks, cps: &[CheckpointFacts]) -> CheckpointChoice {
    choose_checkpoint(committed, w, cps, VERSION)
}

#[test]
fn without_checkpoints_it_is_a_full_replay() {
    let choice = choose(Some(5), Watermarks::default(), &[]);
    assert_eq!(choice.chosen, Err(Fallback::NoCheckpoint));
    assert!(choice.rejected.is_empty());
}

#[test]
fn without_a_committed_offset_no_checkpoint_is_used() {
    let choice = choose(None, Watermarks::default(), &[cp(0), cp(5)]);
    assert_eq!(choice.chosen, Err(Fallback::NothingCommitted));
    assert!(choice.rejected.is_empty());
}

#[test]
fn of_two_checkpoints_the_latest_at_or_before_the_committed_offset_wins() {
    let cps = [cp(100), cp(200)];
    assert_eq!(choose(Some(250), Watermarks::default(), &cps).chosen, Ok(1));
    assert_eq!(choose(Some(200), Watermarks::default(), &cps).chosen, Ok(1));
    // Order in the list does not matter.
    let cps = [cp(200), cp(100)];
    assert_eq!(choose(Some(250), Watermarks::default(), &cps).chosen, Ok(0));
}

#[test]
fn a_checkpoint_after_the_committed_offset_is_skipped_for_an_older_one() {
    // A compacted topic keeping only one checkpoint would leave nothing usable here.
    let cps = [cp(100), cp(200)];
    let choice = choose(Some(150), Watermarks::default(), &cps);
    assert_eq!(choice.chosen, Ok(0));
    assert_eq!(choice.rejected, vec![(1, Rejection::AfterCommitted)]);

    let choice = choose(Some(50), Watermarks::default(), &cps);
    assert_eq!(choice.chosen, Err(Fallback::NoneUsable));
    assert_eq!(
        choice.rejected,
        vec![
            (0, Rejection::AfterCommitted),
            (1, Rejection::AfterCommitted)
        ]
    );
}

#[test]
fn an_incompatible_checkpoint_is_never_loaded() {
    let cps = [
        cp(100),
        CheckpointFacts {
            state_version: VERSION + 1,
            ..cp(200)
        },
    ];
    let choice = choose(Some(300), Watermarks::default(), &cps);
    assert_eq!(choice.chosen, Ok(0));
    assert_eq!(
        choice.rejected,
        vec![(
            1,
            Rejection::Incompatible {
                state_version: VERSION + 1
            }
        )]
    );
    let choice = choose(Some(300), Watermarks::default(), &cps[1..]);
    assert_eq!(choice.chosen, Err(Fallback::NoneUsable));
}

#[test]
fn a_checkpoint_of_another_version_after_the_committed_offset_is_refused_as_after_it() {
    // Refused as after the committed offset, it is deleted: a build of its version (a rollback)
    // must not load it once a later commit passes it.
    let cps = [
        cp(100),
        CheckpointFacts {
            state_version: VERSION + 1,
            ..cp(400)
        },
    ];
    let choice = choose(Some(300), Watermarks::default(), &cps);
    assert_eq!(choice.chosen, Ok(0));
    assert_eq!(choice.rejected, vec![(1, Rejection::AfterCommitted)]);
}

#[test]
fn an_unreadable_checkpoint_falls_back_to_the_previous_one_then_to_full_replay() {
    let mut cps = [cp(100), cp(200)];
    cps[1].unreadable = true;
    let choice = choose(Some(300), Watermarks::default(), &cps);
    assert_eq!(choice.chosen, Ok(0));
    assert_eq!(choice.rejected, vec![(1, Rejection::Unreadable)]);
    cps[0].unreadable = true;
    let choice = choose(Some(300), Watermarks::default(), &cps);
    assert_eq!(choice.chosen, Err(Fallback::NoneUsable));
    assert_eq!(
        choice.rejected,
        vec![(0, Rejection::Unreadable), (1, Rejection::Unreadable)]
    );
}

#[test]
fn at_the_committed_offset_a_checkpoint_must_not_hold_undelivered_clock_firings() {
    let at = |clock: Option<i64>| CheckpointFacts {
        clock_watermark: clock.map(t),
        ..cp(200)
    };
    let cps = [cp(100), at(Some(50))];
    // Delivered up to 60: the checkpoint's clock (50) fired nothing undelivered.
    assert_eq!(
        choose(Some(200), marks(Some(60), Some(70)), &cps).chosen,
        Ok(1)
    );
    assert_eq!(
        choose(Some(200), marks(Some(50), Some(70)), &cps).chosen,
        Ok(1)
    );
    // Delivered only up to 40, or unknown (outputs were in flight at the commit): maybe not.
    for w in [marks(Some(40), Some(70)), marks(None, Some(70))] {
        let choice = choose(Some(200), w, &cps);
        assert_eq!(choice.chosen, Ok(0), "{w:?}");
        assert_eq!(choice.rejected, vec![(1, Rejection::ClockNotDelivered)]);
    }
    // A checkpoint without a clock fired nothing by the clock.
    assert_eq!(
        choose(Some(200), marks(None, None), &[at(None)]).chosen,
        Ok(0)
    );
    // Before the committed offset the commit covers what it fired, whatever its clock.
    let before = CheckpointFacts {
        clock_watermark: Some(t(90)),
        ..cp(150)
    };
    assert_eq!(
        choose(Some(200), marks(None, None), &[before]).chosen,
        Ok(0)
    );
}

#[test]
fn of_two_checkpoints_at_the_same_offset_the_later_written_wins() {
    let cps = [cp(100), cp(100)];
    assert_eq!(choose(Some(100), Watermarks::default(), &cps).chosen, Ok(1));
}

// --- the assignment ---

#[test]
fn an_empty_partition_is_live_at_once_and_restores_at_once() {
    let mut o = offsets(None, 0, 0);
    o.watermarks = marks(None, Some(5));
    let plan = plan_assignment(&fresh(o));
    assert_eq!(plan.engine, EngineSource::Fresh(Fallback::NothingCommitted));
    assert_eq!(plan.seek, None);
    assert_eq!(plan.next_offset, 0);
    assert!(plan.replay.live());
    assert_eq!(plan.watermarks_now, WatermarkStep::Restore(o.watermarks));
    assert_eq!(plan.replay.restore, None);
}

#[test]
fn a_new_group_replays_from_the_first_record_kept_producing_everything() {
    let plan = plan_assignment(&fresh(offsets(None, 40, 100)));
    assert_eq!(plan.engine, EngineSource::Fresh(Fallback::NothingCommitted));
    assert_eq!(plan.next_offset, 40);
    assert_eq!(plan.committed, None);
    assert!(!plan.replay.live());
    // Nothing committed: the (default) watermarks restore right away, doing nothing.
    assert_eq!(
        plan.watermarks_now,
        WatermarkStep::Restore(Watermarks::default())
    );
    let mut replay = plan.replay;
    assert!(replay.before_record(40).producing);
    assert!(replay.may_commit(41));
}

#[test]
fn a_full_replay_suppresses_until_the_committed_offset_then_restores_its_watermarks() {
    let mut o = offsets(Some(50), 0, 100);
    o.watermarks = marks(Some(7), Some(9));
    let plan = plan_assignment(&fresh(o));
    assert_eq!(plan.engine, EngineSource::Fresh(Fallback::NoCheckpoint));
    assert_eq!(plan.watermarks_now, WatermarkStep::Nothing);
    let mut replay = plan.replay;
    assert_eq!(replay.committed(), Some(50));
    for offset in 0..50 {
        assert_eq!(
            replay.before_record(offset),
            RecordStep {
                producing: false,
                restore: None
            }
        );
        assert_eq!(replay.may_commit(offset + 1), offset + 1 >= 50);
        let after = replay.after_record(offset + 1);
        assert!(!after.became_live && after.restore.is_none());
    }
    assert_eq!(
        replay.before_record(50),
        RecordStep {
            producing: true,
            restore: Some(o.watermarks)
        },
        "the committed watermarks are restored before the first record to produce"
    );
    assert_eq!(replay.before_record(51).restore, None, "restored once only");
    assert!(replay.may_commit(50));
    let after = replay.after_record(100);
    assert!(after.became_live && after.restore.is_none());
    assert!(replay.live());
    // Live stays live.
    assert!(!replay.after_record(101).became_live);
}

#[test]
fn when_the_committed_offset_is_the_end_the_watermarks_are_restored_on_catching_up() {
    // The usual state after a clean stop or a kill once caught up: C = H.
    let mut o = offsets(Some(100), 0, 100);
    o.watermarks = marks(Some(7), Some(9));
    let mut replay = plan_assignment(&fresh(o)).replay;
    for offset in 0..99 {
        assert!(!replay.before_record(offset).producing);
        assert!(!replay.after_record(offset + 1).became_live);
    }
    assert!(!replay.before_record(99).producing);
    assert_eq!(
        replay.after_record(100),
        AfterRecord {
            became_live: true,
            // Its clock outputs are to be produced: fired, perhaps not delivered.
            restore: Some(o.watermarks)
        }
    );
    assert_eq!(replay.before_record(100).restore, None);
}

#[test]
fn catching_up_before_the_committed_offset_waits_for_it_to_restore() {
    // Not reachable through `plan_assignment` (it ignores a committed offset beyond the end),
    // but the state machine must not restore before the committed offset even then.
    let mut replay = Replay {
        committed: Some(60),
        restore: Some(marks(None, Some(9))),
        high_water: 50,
        live: false,
    };
    let after = replay.after_record(50);
    assert!(after.became_live);
    assert_eq!(after.restore, None);
    assert_eq!(replay.before_record(60).restore, Some(marks(None, Some(9))));
}

#[test]
fn committed_at_the_first_record_restores_at_assignment() {
    let mut o = offsets(Some(40), 40, 100);
    o.watermarks = marks(None, Some(9));
    let plan = plan_assignment(&fresh(o));
    assert_eq!(plan.watermarks_now, WatermarkStep::Restore(o.watermarks));
    let mut replay = plan.replay;
    assert_eq!(
        replay.before_record(40),
        RecordStep {
            producing: true,
            restore: None
        }
    );
}

#[test]
fn a_committed_offset_beyond_the_end_is_replayed_as_if_nothing_was_committed() {
    let mut o = offsets(Some(500), 0, 100);
    o.watermarks = marks(None, Some(9));
    let plan = plan_assignment(&fresh(o));
    assert_eq!(plan.committed, None);
    assert_eq!(
        plan.anomaly,
        Some(CommittedAnomaly::BeyondEnd {
            committed: 500,
            high: 100
        })
    );
    assert_eq!(plan.engine, EngineSource::Fresh(Fallback::NothingCommitted));
    let mut replay = plan.replay;
    assert!(replay.before_record(0).producing);
}

#[test]
fn a_revoked_engine_resumes_where_the_consumer_resumes() {
    let mut o = offsets(Some(70), 0, 100);
    o.watermarks = marks(None, Some(9));
    let plan = plan_assignment(&Assignment {
        start: Some(80),
        held: held(false, 80, Some(20)),
        ..fresh(o)
    });
    assert_eq!(plan.engine, EngineSource::Resume);
    assert_eq!(plan.seek, None);
    assert_eq!(plan.next_offset, 80);
    assert_eq!(plan.watermarks_now, WatermarkStep::Nothing, "not behind");
    assert!(!plan.replay.live());
    let mut replay = plan.replay;
    assert!(replay.before_record(80).producing);
}

#[test]
fn a_resumed_engine_behind_the_committed_clock_advances_to_it() {
    // Another owner went past this engine's position and clock meanwhile.
    let resume = |o: PartitionOffsets, clock: Option<i64>| {
        plan_assignment(&Assignment {
            start: Some(80),
            held: held(false, 80, clock),
            ..fresh(o)
        })
    };
    let mut o = offsets(Some(90), 0, 100);
    o.watermarks = marks(Some(10), Some(30));
    // Behind the committed offset: restore when reaching it (suppressing what was delivered).
    let plan = resume(o, Some(20));
    assert_eq!(plan.watermarks_now, WatermarkStep::Nothing);
    assert_eq!(plan.replay.restore, Some(o.watermarks));
    let plan = resume(o, None);
    assert_eq!(plan.replay.restore, Some(o.watermarks));

    // Past the committed offset: advance to the committed clock now, producing.
    o.committed = Some(70);
    let plan = resume(o, Some(20));
    assert_eq!(plan.engine, EngineSource::Resume);
    assert_eq!(plan.watermarks_now, WatermarkStep::Advance(t(30)));
    assert_eq!(plan.replay.restore, None);
    // Without a committed clock there is nothing to advance to.
    o.watermarks = marks(None, None);
    assert_eq!(resume(o, Some(20)).watermarks_now, WatermarkStep::Nothing);
}

#[test]
fn a_resumed_live_engine_at_the_committed_offset_restores_now() {
    let mut o = offsets(Some(100), 0, 100);
    o.watermarks = marks(None, Some(30));
    let plan = plan_assignment(&Assignment {
        start: Some(100),
        held: held(false, 100, Some(20)),
        ..fresh(o)
    });
    assert_eq!(plan.engine, EngineSource::Resume);
    assert!(plan.replay.live());
    assert_eq!(plan.watermarks_now, WatermarkStep::Restore(o.watermarks));
}

#[test]
fn a_held_engine_that_cannot_go_on_is_replaced_and_the_consumer_rewound() {
    let o = offsets(Some(50), 0, 100);
    // Still owned (assigned again without a revocation), or at another position than the
    // consumer's start.
    for (start, held) in [
        (Some(80), held(true, 80, None)),
        (Some(70), held(false, 80, None)),
        (Some(80), None),
    ] {
        let plan = plan_assignment(&Assignment {
            start,
            held,
            ..fresh(o)
        });
        assert_eq!(
            plan.engine,
            EngineSource::Fresh(Fallback::NoCheckpoint),
            "{start:?} {held:?}"
        );
        assert_eq!(plan.seek, Some(Seek::Beginning));
        assert_eq!(plan.next_offset, 0);
    }
    // The consumer already starts at the beginning: no seek.
    let plan = plan_assignment(&Assignment {
        start: None,
        held: held(false, 80, None),
        ..fresh(o)
    });
    assert_eq!(plan.engine, EngineSource::Fresh(Fallback::NoCheckpoint));
    assert_eq!(plan.seek, None);
}

#[test]
fn a_usable_checkpoint_replaces_the_replay_before_it() {
    let mut o = offsets(Some(250), 0, 300);
    o.watermarks = marks(Some(40), Some(50));
    let cps = [
        CheckpointFacts {
            clock_watermark: Some(t(20)),
            ..cp(200)
        },
        cp(280),
    ];
    let plan = plan_assignment(&Assignment {
        checkpoints: &cps,
        ..fresh(o)
    });
    assert_eq!(plan.engine, EngineSource::Checkpoint(0));
    assert_eq!(plan.rejected, vec![(1, Rejection::AfterCommitted)]);
    assert_eq!(plan.seek, Some(Seek::Offset(200)));
    assert_eq!(plan.next_offset, 200);
    // Its clock is behind the committed one: restored when reaching the committed offset.
    assert_eq!(plan.watermarks_now, WatermarkStep::Nothing);
    let mut replay = plan.replay;
    assert!(!replay.before_record(200).producing);
    assert_eq!(replay.before_record(250).restore, Some(o.watermarks));
}

#[test]
fn a_checkpoint_at_the_committed_offset_restores_the_committed_watermarks_at_once() {
    let mut o = offsets(Some(200), 0, 300);
    o.watermarks = marks(Some(40), Some(50));
    let at = |clock| {
        [CheckpointFacts {
            clock_watermark: Some(t(clock)),
            ..cp(200)
        }]
    };
    let cps = at(30);
    let plan = plan_assignment(&Assignment {
        checkpoints: &cps,
        ..fresh(o)
    });
    assert_eq!(plan.engine, EngineSource::Checkpoint(0));
    assert_eq!(plan.watermarks_now, WatermarkStep::Restore(o.watermarks));
    // Its clock at the delivered watermark: usable, still behind the committed clock.
    let cps = at(40);
    let plan = plan_assignment(&Assignment {
        checkpoints: &cps,
        ..fresh(o)
    });
    assert_eq!(plan.watermarks_now, WatermarkStep::Restore(o.watermarks));
    // With the committed clock equal to the checkpoint's, nothing to restore.
    o.watermarks = marks(Some(40), Some(40));
    let plan = plan_assignment(&Assignment {
        checkpoints: &cps,
        ..fresh(o)
    });
    assert_eq!(plan.watermarks_now, WatermarkStep::Nothing);
}

#[test]
fn a_checkpoint_older_than_retention_starts_at_the_first_record_kept() {
    let cps = [cp(10)];
    let plan = plan_assignment(&Assignment {
        start: Some(60),
        held: held(false, 70, None),
        checkpoints: &cps,
        ..fresh(offsets(Some(80), 60, 100))
    });
    assert_eq!(plan.engine, EngineSource::Checkpoint(0));
    assert_eq!(plan.next_offset, 60);
    assert_eq!(plan.seek, None, "the consumer already starts there");
}

#[test]
fn without_a_usable_checkpoint_the_assignment_says_why_it_replays() {
    let cps = [CheckpointFacts {
        state_version: VERSION - 1,
        ..cp(10)
    }];
    let plan = plan_assignment(&Assignment {
        checkpoints: &cps,
        ..fresh(offsets(Some(80), 0, 100))
    });
    assert_eq!(plan.engine, EngineSource::Fresh(Fallback::NoneUsable));
    assert_eq!(
        plan.rejected,
        vec![(
            0,
            Rejection::Incompatible {
                state_version: VERSION - 1
            }
        )]
    );
    assert_eq!(plan.next_offset, 0);
}

#[test]
fn resuming_a_held_engine_ignores_checkpoints() {
    let cps = [cp(90)];
    let plan = plan_assignment(&Assignment {
        start: Some(80),
        held: held(false, 80, None),
        checkpoints: &cps,
        ..fresh(offsets(Some(95), 0, 100))
    });
    assert_eq!(plan.engine, EngineSource::Resume);
    assert!(plan.rejected.is_empty());
}

// --- revocation ---

#[test]
fn engines_of_partitions_assigned_elsewhere_are_dropped_owned_ones_kept() {
    let held = [(3, false), (1, false), (2, true), (4, false)];
    assert_eq!(stale_engines(held, &[4]), vec![1, 3]);
    assert_eq!(stale_engines(held, &[]), vec![1, 3, 4]);
    assert!(stale_engines([], &[1]).is_empty());
}

#[test]
fn a_partition_not_assigned_yet_produces_and_commits_freely() {
    let mut replay = Replay::new(7);
    assert!(!replay.live());
    assert_eq!(replay.committed(), None);
    assert!(replay.before_record(7).producing);
    assert!(replay.may_commit(0));
}

#[test]
fn a_full_replay_is_explained_by_the_newest_refused_checkpoint() {
    use FullReplayReason as R;
    assert_eq!(
        R::of(Fallback::NothingCommitted, &[]).as_str(),
        "nothing_committed"
    );
    assert_eq!(R::of(Fallback::NoCheckpoint, &[]), R::NoCheckpoint);
    let rejected = [
        (0, Rejection::Unreadable),
        (1, Rejection::Incompatible { state_version: 9 }),
    ];
    assert_eq!(R::of(Fallback::NoneUsable, &rejected), R::OtherStateVersion);
    let rejected = [(1, Rejection::Unreadable), (0, Rejection::AfterCommitted)];
    assert_eq!(R::of(Fallback::NoneUsable, &rejected), R::Unreadable);
    assert_eq!(
        R::of(Fallback::NoneUsable, &[(0, Rejection::ClockNotDelivered)]).as_str(),
        "clock_not_delivered"
    );
    assert_eq!(
        R::of(Fallback::NoneUsable, &[(0, Rejection::AfterCommitted)]).as_str(),
        "after_committed"
    );
}
