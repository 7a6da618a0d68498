//! Call-center session timeout (contract §3.5).
//!
//! `session.started` and `session.heartbeat` keep a session alive until `last beat +
//! session_timeout`. When a watermark reaches that deadline the client goes back to the queue:
//! a `session_timeout` notification (high) to the role `supervisor`, id derived from the last
//! heartbeat, `created_at` = the deadline. `session.ended` (with `occurred_at` before the deadline)
//! stops the clock.
//!
//! Out of order: a heartbeat older than the newest one changes nothing. A heartbeat that arrives
//! after the timeout fired but occurred at or before its deadline proves the session was alive:
//! the notification is withdrawn (`data.state = "resumed"`) and the clock restarts from it. A
//! heartbeat after the deadline starts a new episode (the timeout stands). An end arriving after
//! the timeout fired but occurring before its deadline withdraws it too (`"ended"`). Events of a
//! session that ended are ignored unless they occurred after the end (the id was reused).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;
use vigia_schemas::rfc3339::Timestamp;
use vigia_schemas::{
    derive_id, Audience, EntityId, Event, Notification, NotificationType, Priority, Role,
    SessionEnded, SessionRef, UserId,
};

use super::entities::EntityMap;
use super::{chrono_duration, Ctx, DeadlineKey, Output};
use crate::texts;

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Sessions {
    map: EntityMap<Session>,
    /// Sessions that ended or timed out, by when ([`Session::settled_at`]), for forgetting them.
    settled: BTreeSet<(DateTime<Utc>, EntityId)>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Session {
    client_id: EntityId,
    agent_id: UserId,
    last_beat: DateTime<Utc>,
    last_beat_event: Uuid,
    deadline: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    /// The timeout notification of the current episode, once fired: (id, deadline).
    fired: Option<(Uuid, DateTime<Utc>)>,
}

impl Session {
    /// When the session ended, or timed out (its timeout fired and no later heartbeat came):
    /// the time after which no event of it can change what was sent. `None` while its clock
    /// runs.
    fn settled_at(&self) -> Option<DateTime<Utc>> {
        self.ended_at
            .or_else(|| self.fired.filter(|_| self.deadline.is_none()).map(|f| f.1))
    }
}

impl Sessions {
    pub fn contains(&self, id: &EntityId) -> bool {
        self.map.contains_key(id)
    }

    /// Keeps the index of settled sessions in step with `id`'s state, which was settled at
    /// `before` (see [`Session::settled_at`]).
    fn resettle(&mut self, id: &EntityId, before: Option<DateTime<Utc>>) {
        let after = self.map.get(id).and_then(Session::settled_at);
        if before == after {
            return;
        }
        if let Some(b) = before {
            self.settled.remove(&(b, id.clone()));
        }
        if let Some(a) = after {
            self.settled.insert((a, id.clone()));
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn on_heartbeat(&mut self, ctx: &mut Ctx<'_>, event: &Event, s: &SessionRef) {
        let before = self.map.get(&s.session_id).and_then(Session::settled_at);
        self.heartbeat(ctx, event, s);
        self.resettle(&s.session_id, before);
    }

    fn heartbeat(&mut self, ctx: &mut Ctx<'_>, event: &Event, s: &SessionRef) {
        let t = event.occurred_at;
        let key = DeadlineKey::SessionTimeout(s.session_id.clone());
        let deadline = t + chrono_duration(ctx.th.session_timeout);
        let Some(session) = self.map.get_mut(&s.session_id) else {
            self.map.insert(
                s.session_id.clone(),
                Session {
                    client_id: s.client_id.clone(),
                    agent_id: s.agent_id,
                    last_beat: t,
                    last_beat_event: event.event_id,
                    deadline: Some(deadline),
                    ended_at: None,
                    fired: None,
                },
            );
            ctx.deadlines.insert(deadline, key);
            return;
        };
        match session.ended_at {
            Some(end) if t <= end => return,
            Some(_) => {
                // The id is reused after its end: a new session.
                session.ended_at = None;
                session.fired = None;
            }
            None if t <= session.last_beat => return, // the clock already runs from later
            None => {}
        }
        if let Some(fired) = session.fired.take() {
            if t <= fired.1 {
                // Alive before the deadline after all.
                withdraw(ctx, &s.session_id, session, fired, t, "resumed");
            }
            // Either way a new episode starts from this beat.
        }
        session.last_beat = t;
        session.last_beat_event = event.event_id;
        session.client_id = s.client_id.clone();
        session.agent_id = s.agent_id;
        if let Some(old) = session.deadline.take() {
            ctx.deadlines.remove(old, &key);
        }
        session.deadline = Some(deadline);
        ctx.deadlines.insert(deadline, key);
    }

    pub fn on_ended(&mut self, ctx: &mut Ctx<'_>, event: &Event, s: &SessionEnded) {
        let before = self.map.get(&s.session_id).and_then(Session::settled_at);
        self.apply_end(ctx, event, s);
        self.resettle(&s.session_id, before);
    }

    fn apply_end(&mut self, ctx: &mut Ctx<'_>, event: &Event, s: &SessionEnded) {
        let t = event.occurred_at;
        let Some(session) = self.map.get_mut(&s.session_id) else {
            // Ended without a known start: remember the end so late beats are ignored.
            self.map.insert(
                s.session_id.clone(),
                Session {
                    client_id: s.client_id.clone(),
                    agent_id: s.agent_id,
                    last_beat: t,
                    last_beat_event: event.event_id,
                    deadline: None,
                    ended_at: Some(t),
                    fired: None,
                },
            );
            return;
        };
        if session.ended_at.is_some_and(|e| e >= t) {
            return;
        }
        if let Some(d) = session.deadline.take() {
            ctx.deadlines
                .remove(d, &DeadlineKey::SessionTimeout(s.session_id.clone()));
        }
        if let Some(fired) = session.fired.take() {
            if t <= fired.1 {
                withdraw(ctx, &s.session_id, session, fired, t, "ended");
            }
        }
        session.ended_at = Some(t);
    }

    pub fn fire(&mut self, ctx: &mut Ctx<'_>, id: &EntityId, at: DateTime<Utc>) {
        let before = self.map.get(id).and_then(Session::settled_at);
        self.time_out(ctx, id, at);
        self.resettle(id, before);
    }

    fn time_out(&mut self, ctx: &mut Ctx<'_>, id: &EntityId, at: DateTime<Utc>) {
        let Some(session) = self.map.get_mut(id) else {
            return;
        };
        if session.deadline != Some(at) || session.ended_at.is_some() {
            return;
        }
        session.deadline = None;
        let notification_id = derive_id(
            "notification/session_timeout",
            &[
                &ctx.tenant.to_string(),
                id.as_str(),
                &session.last_beat_event.to_string(),
            ],
        );
        let (title, message) = texts::session_timeout(
            ctx.th.language,
            session.client_id.as_str(),
            session.agent_id,
            ctx.th.session_timeout,
        );
        ctx.out.push(Output::Notification(Notification {
            id: notification_id,
            tenant_id: ctx.tenant,
            kind: NotificationType::SessionTimeout,
            priority: Priority::High,
            audience: Audience::Role {
                role: Role::Supervisor,
            },
            title,
            message,
            data: json!({
                "session_id": id,
                "client_id": session.client_id,
                "agent_id": session.agent_id,
                "last_heartbeat_at": Timestamp(session.last_beat),
                "deadline": Timestamp(at),
            }),
            actions: vec![],
            created_at: at,
            withdraws: None,
        }));
        session.fired = Some((notification_id, at));
    }

    /// Forgets the sessions that the rule of [`super::retention`] lets go at the tenant's event
    /// time `now`: settled (ended or timed out) more than `horizon` ago — no event that could
    /// still change what was sent for them is accepted any more. A session whose clock runs has
    /// a pending deadline and is kept.
    pub fn forget_settled(&mut self, now: DateTime<Utc>, horizon: chrono::Duration) {
        while let Some((at, id)) = self.settled.first().cloned() {
            if !super::retention::forgettable(at, false, now, horizon) {
                break;
            }
            self.settled.pop_first();
            if self.map.get(&id).and_then(Session::settled_at) == Some(at) {
                self.map.remove(&id);
            }
        }
    }
}

fn withdraw(
    ctx: &mut Ctx<'_>,
    id: &EntityId,
    session: &Session,
    (original, deadline): (Uuid, DateTime<Utc>),
    at: DateTime<Utc>,
    state: &str,
) {
    let (title, message) = texts::session_resumed(ctx.th.language, session.client_id.as_str());
    ctx.out.push(Output::Notification(Notification {
        id: derive_id(
            "notification/session_timeout/withdrawal",
            &[&original.to_string(), state],
        ),
        tenant_id: ctx.tenant,
        kind: NotificationType::SessionTimeout,
        priority: Priority::High,
        audience: Audience::Role {
            role: Role::Supervisor,
        },
        title,
        message,
        data: json!({
            "session_id": id,
            "client_id": session.client_id,
            "agent_id": session.agent_id,
            "state": state,
            "at": at,
        }),
        actions: vec![],
        created_at: at.max(deadline),
        withdraws: Some(original),
    }));
}
