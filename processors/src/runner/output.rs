//! Outputs on their way to Kafka: producing, delivery reports, the per-position accounting
//! that decides what may be committed, and dead letters of what Kafka refuses for good.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::StreamExt;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;
use vigia_schemas::{dead_letter_key, DeadLetter, DeadLetterReason, Origin};

use super::{Record, Runner};
use crate::engine::Output;
use crate::metrics::{KindLabel, ReasonLabel};
use crate::ProcessorError;

/// What [`Runner::enqueue`] did with a record.
pub(super) enum Enqueued {
    Sent,
    /// The producer's queue is full: wait for deliveries, then try again.
    QueueFull,
    /// Kafka will never take this record (too large, invalid).
    Refused(DeadLetterReason, KafkaError),
    Failed(KafkaError),
}

/// An output's delivery report.
pub(super) struct Ack {
    partition: i32,
    generation: u64,
    /// The position the output was caused at: the record's offset, or for a watermark advance
    /// between records, the next record's.
    offset: i64,
    kind: &'static str,
    topic: String,
    /// The output's event time (a dead letter of it keeps it).
    time: Option<DateTime<Utc>>,
    result: Result<(), Undelivered>,
}

/// An output Kafka did not acknowledge, returned with the error.
pub(super) struct Undelivered {
    error: KafkaError,
    key: Vec<u8>,
    payload: Vec<u8>,
}

/// `Outgoing::kind` of a dead letter.
pub(super) const DEAD_LETTER: &str = "dead_letter";

/// A record to produce.
pub(super) struct Outgoing {
    topic: String,
    key: Vec<u8>,
    payload: Vec<u8>,
    kind: &'static str,
    /// The output's event time, for its dead letter if Kafka refuses it.
    time: Option<DateTime<Utc>>,
}

impl Runner {
    pub(super) fn on_ack(&mut self, ack: Ack) -> Result<(), ProcessorError> {
        match ack.result {
            Ok(()) => {
                self.metrics
                    .outputs
                    .get_or_create(&KindLabel { kind: ack.kind })
                    .inc();
            }
            Err(undelivered) => {
                let Some(reason) = refused_for_good(&undelivered.error) else {
                    return Err(ProcessorError::Delivery {
                        topic: ack.topic,
                        reason: undelivered.error.to_string(),
                    });
                };
                let refused = Outgoing {
                    topic: ack.topic,
                    key: undelivered.key,
                    payload: undelivered.payload,
                    kind: ack.kind,
                    time: ack.time,
                };
                // The dead letter takes the output's place: its offset stays pending until the
                // dead letter is acknowledged.
                if let Some(letter) = self.refused(
                    refused,
                    ack.partition,
                    ack.offset,
                    reason,
                    &undelivered.error,
                ) {
                    self.redo
                        .push_back((ack.partition, ack.generation, ack.offset, letter));
                    return self.resend();
                }
            }
        }
        self.settle(ack.partition, ack.generation, ack.offset);
        Ok(())
    }

    /// One output of position `offset` is done with (acknowledged, or given up for good).
    pub(super) fn settle(&mut self, partition: i32, generation: u64, offset: i64) {
        let Some(run) = self.runs.get_mut(&partition) else {
            return;
        };
        if run.generation != generation {
            return;
        }
        if let Some(entry) = run.pending.iter_mut().find(|(o, _)| *o == offset) {
            entry.1 = entry.1.saturating_sub(1);
        }
        while run.pending.front().is_some_and(|(_, left)| *left == 0) {
            run.pending.pop_front();
        }
    }

    /// What replaces an output Kafka refused for good: its dead letter, or nothing when the
    /// refused record was already a dead letter (counted as lost: bounded dead letters fit any
    /// broker with a sane `max.message.bytes`).
    pub(super) fn refused(
        &self,
        o: Outgoing,
        partition: i32,
        offset: i64,
        reason: DeadLetterReason,
        error: &KafkaError,
    ) -> Option<Outgoing> {
        if o.kind == DEAD_LETTER {
            self.metrics
                .dead_letters_lost
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .inc();
            tracing::error!(
                partition,
                offset,
                bytes = o.payload.len(),
                %error,
                "Kafka refused a dead letter for good; skipping it (check the dead_letters \
                 topic's max.message.bytes)"
            );
            return None;
        }
        tracing::warn!(
            partition,
            offset,
            topic = %o.topic,
            kind = o.kind,
            bytes = o.payload.len(),
            %error,
            "Kafka refused an output for good; dead-lettering it"
        );
        let letter = DeadLetter::of_output(
            "processors",
            &o.topic,
            (partition, offset),
            o.time,
            reason,
            &format_args!("Kafka refused this {} ({error})", o.kind),
            &o.payload,
        );
        Some(self.letter_outgoing(letter, reason, Some(&o.key)))
    }

    /// Enqueues the dead letters of refused outputs (their offsets are already counted pending).
    pub(super) fn resend(&mut self) -> Result<(), ProcessorError> {
        while let Some((partition, generation, offset, o)) = self.redo.pop_front() {
            match self.enqueue(partition, generation, offset, &o) {
                Enqueued::Sent => {}
                Enqueued::QueueFull => {
                    self.redo.push_front((partition, generation, offset, o));
                    return Ok(());
                }
                Enqueued::Refused(reason, e) => {
                    if let Some(letter) = self.refused(o, partition, offset, reason, &e) {
                        self.redo
                            .push_front((partition, generation, offset, letter));
                    } else {
                        self.settle(partition, generation, offset);
                    }
                }
                Enqueued::Failed(e) => {
                    return Err(ProcessorError::Delivery {
                        topic: o.topic,
                        reason: e.to_string(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Waits for every in-flight output, up to `limit`.
    pub(super) async fn drain(&mut self, limit: Duration) -> Result<(), ProcessorError> {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.inflight.is_empty() {
            match tokio::time::timeout_at(deadline, self.inflight.next()).await {
                Ok(Some(ack)) => self.on_ack(ack)?,
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        "{} outputs still unacknowledged after {limit:?}; they are not committed \
                         and will be re-sent after restart",
                        self.inflight.len()
                    );
                    break;
                }
            }
        }
        Ok(())
    }

    pub(super) fn outgoing(
        &self,
        outputs: Vec<Output>,
        rec: Option<&Record>,
        partition: i32,
    ) -> Vec<Outgoing> {
        let mut out = Vec::with_capacity(outputs.len());
        for o in outputs {
            let key = o.tenant_id().to_string().into_bytes();
            let (topic, time) = match &o {
                Output::Notification(n) => (&self.topics.notifications, n.created_at),
                Output::ResponseTime(r) => (&self.topics.response_times, r.replied_at),
                Output::LeadScore(l) => (&self.topics.lead_scores, l.computed_at),
                Output::SellerMetrics(m) => (&self.topics.seller_metrics, m.snapshot_at),
                Output::TooLate(t) => {
                    match rec {
                        Some(rec) => out.push(self.dead_letter(rec, DeadLetterReason::TooLate, t)),
                        None => {
                            tracing::error!(partition, "too-late output without its record: {t}")
                        }
                    }
                    continue;
                }
                Output::OverLimit(refused) => {
                    match rec {
                        Some(rec) => out.push(self.dead_letter(
                            rec,
                            DeadLetterReason::OverTenantLimit,
                            refused,
                        )),
                        None => tracing::error!(
                            partition,
                            "over-limit output without its record: {refused}"
                        ),
                    }
                    continue;
                }
            };
            out.push(Outgoing {
                topic: topic.clone(),
                key,
                payload: o.to_json().expect("an output with a topic has a record"),
                kind: o.kind(),
                time: Some(time),
            });
        }
        out
    }

    /// The dead letter of a consumed record.
    pub(super) fn dead_letter(
        &self,
        rec: &Record,
        reason: DeadLetterReason,
        error: &dyn std::fmt::Display,
    ) -> Outgoing {
        let origin = Origin {
            topic: &self.topics.events,
            partition: rec.partition,
            offset: rec.offset,
            timestamp: rec.timestamp,
            key: rec.key.as_deref(),
        };
        let payload = rec.payload.as_deref().unwrap_or_default();
        let letter = DeadLetter::of_record("processors", &origin, reason, error, payload);
        self.letter_outgoing(letter, reason, rec.key.as_deref())
    }

    pub(super) fn letter_outgoing(
        &self,
        letter: DeadLetter,
        reason: DeadLetterReason,
        key: Option<&[u8]>,
    ) -> Outgoing {
        self.metrics
            .dead_letters
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
        Outgoing {
            topic: self.topics.dead_letters.clone(),
            key: dead_letter_key(key),
            payload: letter.to_json().into_bytes(),
            kind: DEAD_LETTER,
            time: letter.origin_timestamp,
        }
    }

    /// Enqueues `outgoing`, caused at position `offset`, for delivery; the offset stays
    /// uncommittable until all are acknowledged.
    pub(super) async fn send(
        &mut self,
        partition: i32,
        generation: u64,
        offset: i64,
        outgoing: Vec<Outgoing>,
    ) -> Result<(), ProcessorError> {
        if outgoing.is_empty() {
            return Ok(());
        }
        if let Some(run) = self.runs.get_mut(&partition) {
            match run.pending.back_mut() {
                Some((o, left)) if *o == offset => *left += outgoing.len(),
                _ => run.pending.push_back((offset, outgoing.len())),
            }
        }
        for mut o in outgoing {
            loop {
                match self.enqueue(partition, generation, offset, &o) {
                    Enqueued::Sent => break,
                    Enqueued::QueueFull => {
                        // Let deliveries make room.
                        match self.inflight.next().await {
                            Some(ack) => self.on_ack(ack)?,
                            None => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                        self.resend()?;
                    }
                    Enqueued::Refused(reason, e) => {
                        match self.refused(o, partition, offset, reason, &e) {
                            Some(letter) => o = letter,
                            None => {
                                self.settle(partition, generation, offset);
                                break;
                            }
                        }
                    }
                    Enqueued::Failed(e) => {
                        return Err(ProcessorError::Delivery {
                            topic: o.topic.clone(),
                            reason: e.to_string(),
                        })
                    }
                }
            }
        }
        Ok(())
    }

    /// Hands one record to the producer; its delivery report comes back through `inflight`.
    pub(super) fn enqueue(
        &mut self,
        partition: i32,
        generation: u64,
        offset: i64,
        o: &Outgoing,
    ) -> Enqueued {
        let record = FutureRecord::to(&o.topic).key(&o.key).payload(&o.payload);
        match self.producer.send_result(record) {
            Ok(delivery) => {
                let topic = o.topic.clone();
                let kind = o.kind;
                let time = o.time;
                self.inflight.push(Box::pin(async move {
                    let result = match delivery.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((error, message))) => Err(Undelivered {
                            error,
                            key: message.key().map(<[u8]>::to_vec).unwrap_or_default(),
                            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                        }),
                        Err(_) => Err(Undelivered {
                            error: KafkaError::Canceled,
                            key: Vec::new(),
                            payload: Vec::new(),
                        }),
                    };
                    Ack {
                        partition,
                        generation,
                        offset,
                        kind,
                        topic,
                        time,
                        result,
                    }
                }));
                Enqueued::Sent
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Enqueued::QueueFull
            }
            Err((e, _)) => match refused_for_good(&e) {
                Some(reason) => Enqueued::Refused(reason, e),
                None => Enqueued::Failed(e),
            },
        }
    }
}

/// Why Kafka will never take a record, if that is why it refused it: too large, or invalid.
/// Anything else (broker away, timeout) is transient.
pub(super) fn refused_for_good(e: &KafkaError) -> Option<DeadLetterReason> {
    use RDKafkaErrorCode as Code;
    match e.rdkafka_error_code()? {
        Code::MessageSizeTooLarge | Code::InvalidMessageSize | Code::MessageBatchTooLarge => {
            Some(DeadLetterReason::OutputTooLarge)
        }
        Code::InvalidMessage
        | Code::InvalidRecord
        | Code::InvalidTimestamp
        | Code::PolicyViolation
        | Code::BadMessage => Some(DeadLetterReason::OutputRefused),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn only_refusals_of_the_record_itself_are_for_good() {
        let produce = |code| KafkaError::MessageProduction(code);
        assert_eq!(
            refused_for_good(&produce(RDKafkaErrorCode::MessageSizeTooLarge)),
            Some(DeadLetterReason::OutputTooLarge)
        );
        assert_eq!(
            refused_for_good(&produce(RDKafkaErrorCode::InvalidRecord)),
            Some(DeadLetterReason::OutputRefused)
        );
        for transient in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::TopicAuthorizationFailed,
        ] {
            assert_eq!(refused_for_good(&produce(transient)), None, "{transient:?}");
        }
        assert_eq!(refused_for_good(&KafkaError::Canceled), None);
    }
}
