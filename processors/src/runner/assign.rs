//! Partition assignment: the rebalance callback, and carrying out [`crate::recovery`]'s plan for
//! each assigned partition with Kafka calls (committed offsets, watermarks, seeks).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::{checkpoint_io, PartitionRun, Runner, KAFKA_TIMEOUT};
use crate::checkpoint;
use crate::engine::snapshot::{SnapshotError, STATE_VERSION};
use crate::engine::PartitionEngine;
use crate::metrics::{PartitionLabel, ReasonLabel};
use crate::recovery::{
    self, Assignment, CheckpointFacts, CommittedAnomaly, EngineSource, Fallback, FullReplayReason,
    HeldEngine, PartitionOffsets, Plan, Rejection, Seek, WatermarkStep, Watermarks,
};
use crate::{Config, ProcessorError};

/// What the rebalance callback tells the main loop.
pub(super) enum Rebalanced {
    /// Partitions assigned, each with the offset consumption starts from (`None`: beginning).
    Assigned(Vec<(i32, Option<i64>)>),
    Revoked(Vec<i32>),
}

/// Consumer context: on assignment, starts each partition from the beginning (replay) or, if
/// this instance kept its engine, from where that engine stopped.
pub(super) struct RunnerContext {
    pub(super) topic: String,
    /// Next offset of every engine this instance holds, owned or kept after revocation.
    pub(super) positions: Arc<Mutex<HashMap<i32, i64>>>,
    pub(super) tx: mpsc::UnboundedSender<Rebalanced>,
}

impl ClientContext for RunnerContext {}

impl ConsumerContext for RunnerContext {
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(base.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let positions = self
                    .positions
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let mut assigned = Vec::new();
                let partitions: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                for (topic, p) in partitions {
                    let start = (topic == self.topic)
                        .then(|| positions.get(&p).copied())
                        .flatten();
                    let offset = start.map_or(Offset::Beginning, Offset::Offset);
                    if let Err(e) = tpl.set_partition_offset(&topic, p, offset) {
                        tracing::error!("cannot set the start offset of {topic}/{p}: {e}");
                    }
                    assigned.push((p, start));
                }
                drop(positions);
                let result = if cooperative {
                    base.incremental_assign(tpl)
                } else {
                    base.assign(tpl)
                };
                if let Err(e) = result {
                    tracing::error!("cannot take the assigned partitions: {e}");
                }
                let _ = self.tx.send(Rebalanced::Assigned(assigned));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked = tpl.elements().iter().map(|e| e.partition()).collect();
                let _ = self.tx.send(Rebalanced::Revoked(revoked));
                let result = if cooperative {
                    base.incremental_unassign(tpl)
                } else {
                    base.unassign()
                };
                if let Err(e) = result {
                    tracing::error!("cannot release the revoked partitions: {e}");
                }
            }
            other => {
                tracing::error!("rebalance error: {}", RDKafkaErrorCode::from(other));
                let revoked = tpl.elements().iter().map(|e| e.partition()).collect();
                let _ = self.tx.send(Rebalanced::Revoked(revoked));
                let _ = base.unassign();
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!("offset commit failed ({e}); the next commit carries it again");
        }
    }
}

impl Runner {
    pub(super) async fn on_rebalance(&mut self, r: Rebalanced) -> Result<(), ProcessorError> {
        match r {
            Rebalanced::Revoked(partitions) => {
                for p in partitions {
                    if let Some(run) = self.runs.get_mut(&p) {
                        run.owned = false;
                        tracing::info!(partition = p, "partition revoked; keeping its engine");
                    }
                    self.metrics.live.remove(&PartitionLabel { partition: p });
                    self.metrics
                        .watermark
                        .remove(&PartitionLabel { partition: p });
                }
                Ok(())
            }
            Rebalanced::Assigned(assigned) => self.on_assigned(assigned).await,
        }
    }

    pub(super) async fn on_assigned(
        &mut self,
        assigned: Vec<(i32, Option<i64>)>,
    ) -> Result<(), ProcessorError> {
        // Engines kept for partitions that went elsewhere are no longer useful.
        let wanted: Vec<i32> = assigned.iter().map(|(p, _)| *p).collect();
        let held = self.runs.iter().map(|(p, run)| (*p, run.owned));
        for p in recovery::stale_engines(held, &wanted) {
            self.runs.remove(&p);
            self.set_position(p, None);
        }
        if assigned.is_empty() {
            return Ok(());
        }
        let offsets = fetch_offsets(
            self.offsets_reader.clone(),
            self.topics.events.clone(),
            wanted,
        )
        .await?;
        for (p, start) in assigned {
            let offsets = offsets[&p];
            let held = self.runs.get(&p).map(|run| HeldEngine {
                owned: run.owned,
                next_offset: run.next_offset,
                clock_watermark: run.engine.clock_watermark(),
            });
            let assignment = Assignment {
                start,
                held,
                offsets,
                checkpoints: &[],
                state_version: STATE_VERSION,
            };
            let mut plan = recovery::plan_assignment(&assignment);
            let mut restored = None;
            let mut why_replay = None;
            if plan.engine != EngineSource::Resume && self.config.checkpoints {
                let chosen = self.recover_from_checkpoint(p, assignment).await;
                (plan, restored, why_replay) = chosen;
            }
            match plan.anomaly {
                Some(CommittedAnomaly::BeyondEnd { committed, high }) => tracing::warn!(
                    partition = p,
                    "committed offset {committed} is beyond the end of the partition ({high}): \
                     was the topic recreated? Ignoring it"
                ),
                Some(CommittedAnomaly::Deleted { committed, low }) => tracing::warn!(
                    partition = p,
                    "records {committed}..{low} were deleted by retention before being processed"
                ),
                None => {}
            }
            if let Some(to) = plan.seek {
                seek(self.consumer.clone(), self.topics.events.clone(), p, to).await?;
            }
            let (resumed, loaded_slot) = match (plan.engine, restored) {
                (EngineSource::Resume, _) => (true, None),
                (EngineSource::Checkpoint(_), Some((engine, slot))) => {
                    self.next_generation += 1;
                    self.runs.insert(
                        p,
                        PartitionRun::new(self.next_generation, engine, plan.next_offset),
                    );
                    self.metrics.checkpoint_restores.inc();
                    (false, Some(slot))
                }
                (EngineSource::Fresh(_), _) | (EngineSource::Checkpoint(_), None) => {
                    if self.config.checkpoints {
                        let reason = match (plan.engine, why_replay) {
                            (_, Some(reason)) => reason,
                            (EngineSource::Fresh(fallback), None) => {
                                FullReplayReason::of(fallback, &plan.rejected)
                            }
                            _ => FullReplayReason::Unreadable,
                        };
                        self.metrics
                            .full_replays
                            .get_or_create(&ReasonLabel {
                                reason: reason.as_str(),
                            })
                            .inc();
                        tracing::info!(
                            partition = p,
                            reason = reason.as_str(),
                            rejected = ?plan.rejected,
                            "no usable checkpoint: replaying the partition from its beginning"
                        );
                    }
                    self.next_generation += 1;
                    let engine = PartitionEngine::new(self.config.clone());
                    self.runs.insert(
                        p,
                        PartitionRun::new(self.next_generation, engine, plan.next_offset),
                    );
                    (false, None)
                }
            };
            let run = self.runs.get_mut(&p).expect("inserted or kept above");
            if self.config.checkpoints && (!resumed || run.schedule.is_none()) {
                run.schedule = Some(checkpoint::Schedule::new(
                    self.config.checkpoint_interval,
                    self.config.checkpoint_max_records,
                    run.next_offset,
                    std::time::Instant::now(),
                    loaded_slot,
                ));
            }
            run.owned = true;
            run.replay = plan.replay;
            run.last_commit = plan.committed.map(|c| (c, offsets.watermarks));
            let produce_now = match plan.watermarks_now {
                WatermarkStep::Nothing => Vec::new(),
                WatermarkStep::Restore(w) => w.restore(&mut run.engine),
                WatermarkStep::Advance(c) => run.engine.advance_watermark(c),
            };
            tracing::info!(
                partition = p,
                from = run.next_offset,
                committed = ?plan.committed,
                committed_watermarks = ?offsets.watermarks,
                high_water = offsets.high,
                resumed,
                from_checkpoint = loaded_slot.is_some(),
                "partition assigned"
            );
            let generation = run.generation;
            let next = run.next_offset;
            let live = run.replay.live();
            self.metrics
                .live
                .get_or_create(&PartitionLabel { partition: p })
                .set(i64::from(live));
            self.set_position(p, Some(next));
            let outgoing = self.outgoing(produce_now, None, p);
            self.send(p, generation, next, outgoing).await?;
        }
        Ok(())
    }

    /// The plan for a partition no held engine can go on with, now knowing its checkpoints: the
    /// engine restored from the one [`recovery::choose_checkpoint`] picks (with its slot), or
    /// why the partition replays from its beginning. A chosen checkpoint that does not restore
    /// (corrupt, another state version or configuration) is marked unreadable and the decision
    /// made again. Checkpoints refused as after the committed offset or as holding undelivered
    /// clock outputs are deleted: they are of a run whose outputs were not all delivered, and
    /// must not be loaded once a later commit passes them.
    async fn recover_from_checkpoint(
        &mut self,
        p: i32,
        assignment: Assignment<'_>,
    ) -> (
        Plan,
        Option<(PartitionEngine, u8)>,
        Option<FullReplayReason>,
    ) {
        let replan = |facts: &[CheckpointFacts]| {
            recovery::plan_assignment(&Assignment {
                checkpoints: facts,
                ..assignment
            })
        };
        let Some(checkpoint_partitions) = self.checkpoint_partitions().await else {
            return (replan(&[]), None, None);
        };
        let reader = self.checkpoint_reader.clone();
        let topic = self.topics.checkpoints.clone();
        let reading = std::time::Instant::now();
        let read = tokio::task::spawn_blocking(move || {
            checkpoint_io::read(&reader, &topic, checkpoint_partitions, p)
        })
        .await
        .expect("reading checkpoints does not panic");
        let found = match read {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(partition = p, "cannot read checkpoints ({e})");
                return (replan(&[]), None, Some(FullReplayReason::Unreadable));
            }
        };
        let mut facts: Vec<CheckpointFacts> = found.iter().map(|f| f.facts).collect();
        let mut failed: Vec<Option<FullReplayReason>> = vec![None; found.len()];
        let (plan, restored) = loop {
            let plan = replan(&facts);
            let EngineSource::Checkpoint(i) = plan.engine else {
                break (plan, None);
            };
            let config = self.config.clone();
            let pieces = found[i].pieces.clone();
            let read_took = reading.elapsed();
            let restoring = std::time::Instant::now();
            let loaded = tokio::task::spawn_blocking(move || load(config, p, &pieces))
                .await
                .expect("restoring a checkpoint does not panic");
            match loaded {
                Ok(engine) => {
                    tracing::info!(
                        partition = p,
                        offset = facts[i].offset,
                        pieces = found[i].pieces.len(),
                        read_ms = read_took.as_millis() as u64,
                        restore_ms = restoring.elapsed().as_millis() as u64,
                        "checkpoint restored"
                    );
                    break (plan, Some((engine, found[i].slot)));
                }
                Err((reason, error)) => {
                    tracing::warn!(
                        partition = p,
                        offset = facts[i].offset,
                        reason = reason.as_str(),
                        "checkpoint not usable: {error}"
                    );
                    facts[i].unreadable = true;
                    failed[i] = Some(reason);
                }
            }
        };
        let nothing_committed = plan.engine == EngineSource::Fresh(Fallback::NothingCommitted);
        let mut doomed = Vec::new();
        for (i, f) in found.iter().enumerate() {
            let rejection = plan.rejected.iter().find(|(r, _)| *r == i).map(|(_, r)| *r);
            let of_another_run = matches!(
                rejection,
                Some(Rejection::AfterCommitted | Rejection::ClockNotDelivered)
            ) || (nothing_committed && !f.facts.unreadable);
            if of_another_run {
                tracing::info!(
                    partition = p,
                    offset = f.facts.offset,
                    slot = f.slot,
                    ?rejection,
                    "deleting a checkpoint of a run whose outputs were not all delivered"
                );
                doomed.extend(f.keys.iter().cloned());
            }
        }
        if !doomed.is_empty() {
            checkpoint_io::spawn_delete(
                self.producer.clone(),
                self.topics.checkpoints.clone(),
                checkpoint_io::home(p, checkpoint_partitions),
                doomed,
            );
        }
        let newest_failed = plan
            .rejected
            .iter()
            .map(|(i, _)| *i)
            .max()
            .and_then(|i| failed[i]);
        (plan, restored, newest_failed)
    }

    /// The partition count of the checkpoints topic (read once); `None`: no checkpoints.
    async fn checkpoint_partitions(&mut self) -> Option<i32> {
        if let Some(known) = self.checkpoint_partitions {
            return known;
        }
        let reader = self.checkpoint_reader.clone();
        let topic = self.topics.checkpoints.clone();
        let count =
            tokio::task::spawn_blocking(move || checkpoint_io::partition_count(&reader, &topic))
                .await
                .expect("reading metadata does not panic");
        match count {
            Ok(Some(n)) => self.checkpoint_partitions = Some(Some(n)),
            Ok(None) => {
                tracing::warn!(
                    topic = %self.topics.checkpoints,
                    "the checkpoints topic does not exist: no checkpoints (every assignment \
                     replays its partition); `vigia process` creates it"
                );
                self.checkpoint_partitions = Some(None);
            }
            // Asked again at the next assignment.
            Err(e) => tracing::warn!("cannot read the checkpoints topic's metadata ({e})"),
        }
        self.checkpoint_partitions.flatten()
    }
}

/// Joins a checkpoint's pieces and restores the engine, or says why it cannot be used.
fn load(
    config: Arc<Config>,
    partition: i32,
    pieces: &[Vec<u8>],
) -> Result<PartitionEngine, (FullReplayReason, String)> {
    let (meta, state) =
        checkpoint::join(pieces).map_err(|e| (FullReplayReason::Unreadable, e.to_string()))?;
    if meta.partition != partition {
        return Err((
            FullReplayReason::Unreadable,
            format!("pieces of partition {} under its keys", meta.partition),
        ));
    }
    PartitionEngine::restore(config, &state).map_err(|e| {
        let reason = match e {
            SnapshotError::Version { .. } => FullReplayReason::OtherStateVersion,
            SnapshotError::Config => FullReplayReason::OtherConfig,
            SnapshotError::Decode(_) => FullReplayReason::Unreadable,
        };
        (reason, e.to_string())
    })
}

/// The group's committed offsets (with their watermarks) and the low/high watermarks.
pub(super) async fn fetch_offsets(
    consumer: Arc<BaseConsumer>,
    topic: String,
    partitions: Vec<i32>,
) -> Result<HashMap<i32, PartitionOffsets>, ProcessorError> {
    tokio::task::spawn_blocking(move || -> KafkaResult<HashMap<i32, PartitionOffsets>> {
        // A busy broker (or one failing over its group coordinator) can time out one of these
        // reads: try again a few times before stopping the processors over it.
        let mut attempt = 1;
        loop {
            match read_offsets(&consumer, &topic, &partitions) {
                Err(e) if attempt < FETCH_OFFSETS_ATTEMPTS => {
                    tracing::warn!(attempt, error = %e, "reading committed offsets failed; retrying");
                    std::thread::sleep(Duration::from_secs(attempt as u64));
                    attempt += 1;
                }
                result => return result,
            }
        }
    })
    .await
    .expect("offset fetch does not panic")
    .map_err(|source| ProcessorError::Kafka {
        context: "cannot read committed offsets and watermarks of the events topic".into(),
        source,
    })
}

/// Attempts of [`fetch_offsets`] (1 s, 2 s, 3 s … apart) before giving up.
pub(super) const FETCH_OFFSETS_ATTEMPTS: u32 = 5;

pub(super) fn read_offsets(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
) -> KafkaResult<HashMap<i32, PartitionOffsets>> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, KAFKA_TIMEOUT)?;
    let mut out = HashMap::new();
    for &p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, KAFKA_TIMEOUT)?;
        let (c, watermarks) = match committed.find_partition(topic, p) {
            Some(e) => match e.offset() {
                Offset::Offset(o) => (Some(o), Watermarks::from_metadata(e.metadata())),
                _ => (None, Watermarks::default()),
            },
            None => (None, Watermarks::default()),
        };
        out.insert(
            p,
            PartitionOffsets {
                committed: c,
                watermarks,
                low,
                high,
            },
        );
    }
    Ok(out)
}

/// Repositions a partition where its new engine starts (the rebalance callback started it at a
/// kept engine's position, which is gone).
pub(super) async fn seek(
    consumer: Arc<StreamConsumer<RunnerContext>>,
    topic: String,
    partition: i32,
    to: Seek,
) -> Result<(), ProcessorError> {
    let offset = match to {
        Seek::Beginning => Offset::Beginning,
        Seek::Offset(o) => Offset::Offset(o),
    };
    tokio::task::spawn_blocking(move || consumer.seek(&topic, partition, offset, KAFKA_TIMEOUT))
        .await
        .expect("seek does not panic")
        .map_err(|source| ProcessorError::Kafka {
            context: format!("cannot rewind partition {partition} for replay"),
            source,
        })
}
