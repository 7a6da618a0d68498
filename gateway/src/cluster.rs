//! Several gateway instances on one PostgreSQL inbox: what they tell each other, and in which
//! order an instance pushes notifications to its own clients.
//!
//! Every instance reads every notification from Kafka and stores it (the first to store it
//! wins, [`crate::Inbox::store`]); none relies on another to push for it. An instance pushes the
//! inbox **in sequence order**, whoever stored each notification: after a store it pushes
//! everything up to the newest sequence committed ([`Pushed::plan`]), reading from the inbox
//! what it does not hold itself (stored by another instance, which it may read from Kafka only
//! later: it will then be a duplicate at or below what was pushed, and is not pushed again). So
//! each client sees increasing sequences, each once, and the highest it saw is a correct
//! `since` on any instance.
//!
//! Signals (PostgreSQL `NOTIFY` on channel `vigia_gateway`, one `LISTEN` connection per
//! instance; [`Signal`]): `stored` (new notifications: push them now rather than when Kafka
//! brings them here), `read` (a user's read state changed: their sockets on every instance
//! recount) and `prefs` (a user's preferences changed: every instance reloads them). An
//! instance ignores what it signalled itself. A lost signal (the listener reconnecting) costs
//! latency, not correctness: pushes catch up every second, and after a reconnect every
//! connection recounts.

use vigia_schemas::{Role, TenantId, UserId};

/// What one instance tells the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Notifications were stored.
    Stored,
    /// The read state of a user changed (by instance `origin`).
    Read {
        tenant_id: TenantId,
        user_id: UserId,
        origin: String,
    },
    /// The preferences of a user (of `role`) changed (on instance `origin`).
    Preferences {
        tenant_id: TenantId,
        user_id: UserId,
        role: Role,
        origin: String,
    },
}

impl Signal {
    /// The `NOTIFY` payload: space-separated words.
    pub(crate) fn to_payload(&self) -> String {
        match self {
            Signal::Stored => "stored".to_string(),
            Signal::Read {
                tenant_id,
                user_id,
                origin,
            } => format!("read {tenant_id} {user_id} {origin}"),
            Signal::Preferences {
                tenant_id,
                user_id,
                role,
                origin,
            } => format!(
                "prefs {tenant_id} {user_id} {} {origin}",
                crate::audience::role_name(*role)
            ),
        }
    }

    /// The signal of a payload; `None` if it is not one (another version's, or garbage).
    pub(crate) fn parse(payload: &str) -> Option<Signal> {
        let words: Vec<&str> = payload.split(' ').collect();
        match words.as_slice() {
            ["stored"] => Some(Signal::Stored),
            ["read", tenant, user, origin] => Some(Signal::Read {
                tenant_id: tenant.parse().ok()?,
                user_id: user.parse().ok()?,
                origin: (*origin).to_string(),
            }),
            ["prefs", tenant, user, role, origin] => Some(Signal::Preferences {
                tenant_id: tenant.parse().ok()?,
                user_id: user.parse().ok()?,
                role: serde_json::from_value(serde_json::Value::String((*role).to_string()))
                    .ok()?,
                origin: (*origin).to_string(),
            }),
            _ => None,
        }
    }
}

/// What an instance has pushed: every sequence up to `through`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pushed {
    pub(crate) through: i64,
}

/// How to push up to a new sequence.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Pushed already.
    Nothing,
    /// Everything in `(pushed, through]` that exists is in hand.
    InHand,
    /// Some of `(pushed, through]` must be read from the inbox.
    Read,
}

impl Pushed {
    /// How to push every sequence up to `through`, holding the notifications of `in_hand`
    /// (sequences, any order). Sequences lost to rolled-back transactions make gaps that are
    /// never filled: a read finds nothing there, and the next push moves past them.
    pub(crate) fn plan(&self, through: i64, in_hand: &[i64]) -> Plan {
        if through <= self.through {
            return Plan::Nothing;
        }
        let wanted = (through - self.through) as usize;
        let held = in_hand
            .iter()
            .filter(|&&s| s > self.through && s <= through)
            .count();
        if held >= wanted {
            Plan::InHand
        } else {
            Plan::Read
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_round_trip_and_garbage_is_none() {
        for s in [
            Signal::Stored,
            Signal::Read {
                tenant_id: 1,
                user_id: 10,
                origin: "gw-a.5f3c".into(),
            },
            Signal::Preferences {
                tenant_id: 2,
                user_id: 20,
                role: Role::Secretary,
                origin: "x".into(),
            },
        ] {
            assert_eq!(Signal::parse(&s.to_payload()), Some(s));
        }
        for bad in [
            "",
            "read 1 x o",
            "prefs 1 2 king o",
            "stored now",
            "read 1 2",
        ] {
            assert_eq!(Signal::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_what_is_not_in_hand_is_read() {
        let pushed = Pushed { through: 10 };
        assert_eq!(pushed.plan(10, &[]), Plan::Nothing);
        assert_eq!(pushed.plan(9, &[9]), Plan::Nothing);
        assert_eq!(pushed.plan(12, &[11, 12]), Plan::InHand);
        assert_eq!(pushed.plan(12, &[12, 11, 5]), Plan::InHand);
        // 11 was stored by another instance (or rolled back): look.
        assert_eq!(pushed.plan(12, &[12]), Plan::Read);
        assert_eq!(pushed.plan(12, &[]), Plan::Read);
        assert_eq!(pushed.plan(12, &[10, 12]), Plan::Read);
    }
}
