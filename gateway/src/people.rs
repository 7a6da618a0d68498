//! Names for the people the dashboard shows (sellers on the leaderboard and the chart, the
//! person a notification is about, the signed-in user in the header, top performers in a daily
//! report), instead of bare user ids.
//!
//! **Where names come from.** The CRM's `user.upserted` events (contract §2) carry each user's
//! name and role. The gateway reads them from the `events` topic itself, with a consumer group
//! of its own (`<group_id>-people`) shared by every gateway instance: each record is stored
//! once, by whichever instance holds its partition, into the `people` table of the inbox
//! database ([`crate::Inbox::upsert_person`]), which every instance reads. Offsets are
//! committed only once the row is stored; a database failure is retried, never skipped.
//! Records that are not `user.upserted` are passed over by their `event_type` header (set by
//! ingest) without being decoded, so reading the busy `events` topic costs little.
//!
//! Why not through the processors: they keep users only while they matter to the rules (a
//! user idle for a week is forgotten), and a new output kind would need a topic, a sink table
//! and a change of the processors' outputs, for a fact the gateway can take as it is. The
//! directory keeps a name for good once seen, and follows the same "latest by event time"
//! rule as the processors ([`crate::inbox`]'s `people` module): a rename shows the new name,
//! a late or replayed older event changes nothing.
//!
//! **Who sees which names** (`GET /v1/people` → `{"people": [{"user_id", "name", "role"}…]}`):
//! never another tenant's. CEOs, managers and supervisors — who see notifications about
//! anyone of the tenant — get the tenant's whole directory; anyone else only their own entry.
//! A user without a `user.upserted` is absent: clients show their id (`#1014`).
//!
//! Not here: pushing renames live. The dashboard re-reads the directory every 15 s, and soon
//! (at most every 5 s) when a metrics frame or notification names someone it does not know yet.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::ClientConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vigia_schemas::{decode_event, Event, EventKind, Payload, Role};

use crate::inbox::{Inbox, Person, PersonUpsert};
use crate::rest::{Caller, Unavailable};
use crate::Shared;

const COMMIT_EVERY: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The Kafka header in which ingest names each event's type.
const EVENT_TYPE_HEADER: &str = "event_type";

/// Whether `role` sees the whole directory of its tenant (else only its own entry).
pub fn sees_directory(role: Role) -> bool {
    matches!(role, Role::Ceo | Role::Manager | Role::Supervisor)
}

/// What the directory stores of `event`, if it is a `user.upserted`.
pub fn person_of(event: &Event) -> Option<PersonUpsert> {
    let Payload::UserUpserted(u) = &event.payload else {
        return None;
    };
    Some(PersonUpsert {
        tenant_id: event.tenant_id,
        user_id: u.user_id,
        name: u.name.clone(),
        role: u.role,
        at: event.occurred_at,
        event_id: event.event_id,
    })
}

/// Whether a record whose `event_type` header says `header` may be a `user.upserted` (a record
/// without the header is decoded to find out).
fn may_be_user_upserted(header: Option<&[u8]>) -> bool {
    header.is_none_or(|h| h == EventKind::UserUpserted.as_str().as_bytes())
}

fn event_type_header<'a>(message: &'a BorrowedMessage<'_>) -> Option<&'a [u8]> {
    message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == EVENT_TYPE_HEADER)
            .and_then(|h| h.value)
    })
}

#[derive(Clone)]
struct PeopleMetrics {
    stored: Counter,
    undecodable: Counter,
}

impl PeopleMetrics {
    fn register(registry: &mut Registry) -> PeopleMetrics {
        let m = PeopleMetrics {
            stored: Counter::default(),
            undecodable: Counter::default(),
        };
        registry.register(
            "vigia_gateway_people_stored",
            "user.upserted events that changed the people directory (new user, or a later name)",
            m.stored.clone(),
        );
        registry.register(
            "vigia_gateway_people_undecodable",
            "Records of the events topic that claimed to be, or could be, a user.upserted and \
             did not decode (skipped; the processors dead-letter them)",
            m.undecodable.clone(),
        );
        m
    }
}

/// Spawns the consumer of `events_topic` that fills the people directory (module docs).
pub(crate) fn spawn(
    inbox: Inbox,
    base: &ClientConfig,
    events_topic: &str,
    group_id: &str,
    registry: &mut Registry,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, rdkafka::error::KafkaError> {
    let group_id = format!("{group_id}-people");
    let mut config = crate::consumer::consumer_config(base, &group_id, 500);
    config.set("enable.auto.offset.store", "false");
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[events_topic])?;
    let metrics = PeopleMetrics::register(registry);
    tracing::info!(topic = events_topic, group_id, "gateway reading user names");
    Ok(tokio::spawn(run(inbox, consumer, metrics, shutdown)))
}

async fn run(
    inbox: Inbox,
    consumer: StreamConsumer,
    metrics: PeopleMetrics,
    shutdown: CancellationToken,
) {
    let mut commit = tokio::time::interval(COMMIT_EVERY);
    commit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut uncommitted = false;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = commit.tick() => {
                if uncommitted {
                    match consumer.commit_consumer_state(CommitMode::Async) {
                        Ok(()) => uncommitted = false,
                        Err(e) => tracing::warn!(error = %e, "cannot commit the people consumer's offsets; will retry"),
                    }
                }
            }
            received = consumer.recv() => match received {
                Err(e) => {
                    tracing::warn!(error = %e, "people consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(message) => {
                    if !handle(&inbox, &message, &metrics, &shutdown).await {
                        break;
                    }
                    match consumer.store_offset(message.topic(), message.partition(), message.offset()) {
                        Ok(()) => uncommitted = true,
                        // E.g. the partition was revoked meanwhile; its new owner re-reads it.
                        Err(e) => tracing::debug!(error = %e, "cannot store a people offset"),
                    }
                }
            },
        }
    }
    if uncommitted {
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::warn!(error = %e, "cannot commit the people consumer's offsets at shutdown; they will be re-read (and recognised)");
        }
    }
    tracing::info!("gateway people consumer stopped");
}

/// Takes one record of the events topic; false if shutdown interrupted it (its offset must not
/// be stored).
async fn handle(
    inbox: &Inbox,
    message: &BorrowedMessage<'_>,
    metrics: &PeopleMetrics,
    shutdown: &CancellationToken,
) -> bool {
    if !may_be_user_upserted(event_type_header(message)) {
        return true;
    }
    let person = match decode_event(message.payload()) {
        Ok(event) => match person_of(&event) {
            Some(p) => p,
            None => return true,
        },
        Err(error) => {
            metrics.undecodable.inc();
            tracing::warn!(
                partition = message.partition(),
                offset = message.offset(),
                reason = %error.reason(),
                %error,
                "skipping a record of the events topic that is not a valid event (no name taken from it)"
            );
            return true;
        }
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        match inbox.upsert_person(&person).await {
            Ok(changed) => {
                if changed {
                    metrics.stored.inc();
                }
                return true;
            }
            Err(e) if e.is_permanent() => {
                tracing::warn!(error = %e, tenant_id = person.tenant_id, user_id = person.user_id, "skipping a user the people directory cannot hold");
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot store a user's name; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The directory `viewer` may see (module docs).
pub(crate) async fn visible_people(
    inbox: &Inbox,
    viewer: &crate::Viewer,
) -> Result<Vec<Person>, crate::InboxError> {
    if sees_directory(viewer.role) {
        inbox.people(viewer.tenant_id).await
    } else {
        Ok(inbox
            .person(viewer.tenant_id, viewer.user_id)
            .await?
            .into_iter()
            .collect())
    }
}

/// `GET /v1/people`.
pub(crate) async fn list(State(shared): State<Arc<Shared>>, Caller(v): Caller) -> Response {
    match visible_people(&shared.inbox, &v).await {
        Ok(people) => Json(serde_json::json!({ "people": people })).into_response(),
        Err(e) => Unavailable::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, payload: serde_json::Value) -> Event {
        let mut v = json!({
            "event_id": "6f1b3c52-8a4e-5d1f-9b27-3e440c81a95d",
            "tenant_id": 7,
            "occurred_at": "2026-03-02T10:00:00Z",
            "type": kind,
        });
        v.as_object_mut()
            .unwrap()
            .extend(payload.as_object().unwrap().clone());
        Event::from_json(&v.to_string()).unwrap()
    }

    #[test]
    fn a_user_upserted_becomes_a_directory_entry_and_nothing_else_does() {
        let e = event(
            "user.upserted",
            json!({"user_id": 1014, "name": "Vendedor 1-0", "role": "seller"}),
        );
        let p = person_of(&e).unwrap();
        assert_eq!((p.tenant_id, p.user_id), (7, 1014));
        assert_eq!(p.name, "Vendedor 1-0");
        assert_eq!(p.role, Role::Seller);
        assert_eq!(p.at, e.occurred_at);
        assert_eq!(p.event_id, e.event_id);
        let other = event(
            "message.sent",
            json!({"conversation_id": "c1", "seller_id": 1014}),
        );
        assert_eq!(person_of(&other), None);
    }

    #[test]
    fn the_header_lets_other_events_pass_undecoded() {
        assert!(may_be_user_upserted(Some(b"user.upserted")));
        assert!(!may_be_user_upserted(Some(b"message.received")));
        // No header (a producer other than ingest): decode to find out.
        assert!(may_be_user_upserted(None));
    }

    #[test]
    fn only_those_who_see_about_anyone_get_the_whole_directory() {
        assert!(sees_directory(Role::Ceo));
        assert!(sees_directory(Role::Manager));
        assert!(sees_directory(Role::Supervisor));
        assert!(!sees_directory(Role::Seller));
        assert!(!sees_directory(Role::Secretary));
    }
}
