//! The plain WebSocket protocol of `GET /ws`: JSON text frames `{"type": ..., ...}`.
//!
//! Server → client:
//! - `{"type":"connection_established","user_id":123,"tenant_id":42,"role":"seller",
//!   "server_time":"<RFC 3339>","ping_interval_ms":20000,"token_expires_at":"<RFC 3339>"}` — first.
//! - `{"type":"unread_count","count":3}` — right after, after every change (new notification,
//!   mark read here or on another device/REST) and in reply to `mark_read` / `get_unread_count`.
//!   It is the inbox's count when sent, so during a burst it may already include notifications
//!   whose frames are still on their way; the last one is always right.
//! - `{"type":"notification","sequence":17,"read":false,"withdrawn":false,"notification":{…}}` —
//!   `notification` is the contract §4.1 JSON; `sequence` is the inbox's arrival order: reconnect with
//!   `/ws?since=<last sequence seen>` to receive, before live ones, what you missed.
//! - `{"type":"metrics", …}` — the fields of the tenant's live metrics of the tenant, to CEO/manager only, at
//!   most once per second per tenant (the latest values win).
//! - `{"type":"ping"}` every `ping_interval`; answer `{"type":"pong"}`.
//! - `{"type":"error","message":"…"}` — a client frame was not understood or failed.
//!
//! Client → server: `{"type":"pong"}`, `{"type":"mark_read","notification_id":"<uuid>"}`,
//! `{"type":"get_unread_count"}`. Unknown fields are ignored.
//!
//! The server closes with [`CloseReason`]: 4001 "token expired", 4002 "too slow" (the client did
//! not read fast enough; reconnect with `?since=`), 4003 "ping timeout" (no pong for two ping
//! intervals; a WebSocket-level pong counts too), 1001 "server shutting down", 1011 "inbox
//! unavailable".

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;
use vigia_schemas::{Notification, Role, TenantId, UserId};

/// A frame the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    ConnectionEstablished {
        user_id: UserId,
        tenant_id: TenantId,
        role: Role,
        server_time: DateTime<Utc>,
        ping_interval_ms: u64,
        token_expires_at: DateTime<Utc>,
    },
    UnreadCount {
        count: u64,
    },
    Notification {
        sequence: i64,
        /// Read by this user, or resolved (withdrawn, or itself a withdrawal).
        read: bool,
        /// Withdrawn by a later notification.
        withdrawn: bool,
        notification: &'a Notification,
    },
    /// Live metrics of the tenant (CEO/manager only), at most one per second.
    Metrics {
        #[serde(flatten)]
        metrics: &'a serde_json::Map<String, serde_json::Value>,
    },
    Ping,
    Error {
        message: String,
    },
}

impl ServerFrame<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

/// A frame the client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Pong,
    MarkRead { notification_id: Uuid },
    GetUnreadCount,
}

/// Why a client frame was not understood; its `Display` is the message of the `error` frame
/// answered.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("invalid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("every message needs a string \"type\": pong, mark_read or get_unread_count")]
    MissingType,
    #[error("unknown message type {0:?}: expected pong, mark_read or get_unread_count")]
    UnknownType(String),
    #[error("mark_read needs \"notification_id\": the notification's uuid")]
    MissingNotificationId,
    #[error("mark_read: notification_id {0:?} is not a uuid")]
    NotAUuid(String),
}

/// Parses a client text frame.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    let Some(kind) = value.get("type").and_then(|t| t.as_str()) else {
        return Err(FrameError::MissingType);
    };
    match kind {
        "pong" => Ok(ClientFrame::Pong),
        "get_unread_count" => Ok(ClientFrame::GetUnreadCount),
        "mark_read" => {
            let id = value
                .get("notification_id")
                .and_then(|v| v.as_str())
                .ok_or(FrameError::MissingNotificationId)?;
            let notification_id =
                Uuid::parse_str(id).map_err(|_| FrameError::NotAUuid(id.to_string()))?;
            Ok(ClientFrame::MarkRead { notification_id })
        }
        other => Err(FrameError::UnknownType(other.to_string())),
    }
}

/// Why the server closes a connection, with the close code and reason it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    TokenExpired,
    TooSlow,
    PingTimeout,
    ShuttingDown,
    InboxUnavailable,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::TokenExpired => 4001,
            CloseReason::TooSlow => 4002,
            CloseReason::PingTimeout => 4003,
            CloseReason::ShuttingDown => 1001,
            CloseReason::InboxUnavailable => 1011,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            CloseReason::TokenExpired => "token expired",
            CloseReason::TooSlow => "too slow",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ShuttingDown => "server shutting down",
            CloseReason::InboxUnavailable => "inbox unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_frames_parse() {
        assert_eq!(
            parse_client_frame(r#"{"type":"pong"}"#).unwrap(),
            ClientFrame::Pong
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"get_unread_count","extra":1}"#).unwrap(),
            ClientFrame::GetUnreadCount
        );
        let id = Uuid::new_v4();
        assert_eq!(
            parse_client_frame(&json!({"type": "mark_read", "notification_id": id}).to_string())
                .unwrap(),
            ClientFrame::MarkRead {
                notification_id: id
            }
        );
    }

    #[test]
    fn bad_client_frames_get_a_helpful_message() {
        let err = |text: &str| parse_client_frame(text).unwrap_err().to_string();
        assert!(err("nope").starts_with("invalid JSON"));
        assert!(err(r#"{"kind":"pong"}"#).contains("\"type\""));
        assert!(err(r#"{"type":"subscribe"}"#).contains("unknown message type \"subscribe\""));
        assert!(err(r#"{"type":"mark_read"}"#).contains("notification_id"));
        assert!(err(r#"{"type":"mark_read","notification_id":"x"}"#).contains("not a uuid"));
        assert!(err(r#"{"type":7}"#).contains("\"type\""));
    }

    #[test]
    fn server_frames_have_the_documented_shape() {
        assert_eq!(ServerFrame::Ping.to_json(), r#"{"type":"ping"}"#);
        assert_eq!(
            ServerFrame::UnreadCount { count: 3 }.to_json(),
            r#"{"type":"unread_count","count":3}"#
        );
        let n: Notification = serde_json::from_value(json!({
            "id": Uuid::nil(), "tenant_id": 42, "type": "hot_lead", "priority": "urgent",
            "audience": {"user_id": 7}, "title": "t", "message": "m",
            "created_at": "2026-02-27T15:00:00Z"
        }))
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(
            &ServerFrame::Notification {
                sequence: 9,
                read: false,
                withdrawn: false,
                notification: &n,
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(v["type"], "notification");
        assert_eq!(v["sequence"], 9);
        assert_eq!(v["notification"]["type"], "hot_lead");
        assert_eq!(v["notification"]["audience"], json!({"user_id": 7}));
        let v: serde_json::Value = serde_json::from_str(
            &ServerFrame::ConnectionEstablished {
                user_id: 7,
                tenant_id: 42,
                role: Role::Seller,
                server_time: Utc::now(),
                ping_interval_ms: 20_000,
                token_expires_at: Utc::now(),
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(v["type"], "connection_established");
        assert_eq!(v["role"], "seller");
        assert_eq!(v["user_id"], 7);
    }

    #[test]
    fn close_codes_are_distinct_and_in_the_allowed_ranges() {
        let all = [
            CloseReason::TokenExpired,
            CloseReason::TooSlow,
            CloseReason::PingTimeout,
            CloseReason::ShuttingDown,
            CloseReason::InboxUnavailable,
        ];
        let codes: std::collections::HashSet<u16> = all.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), all.len());
        for r in all {
            assert!((1000..=1011).contains(&r.code()) || (4000..=4999).contains(&r.code()));
            assert!(
                r.reason().len() <= 123,
                "close reasons must fit a control frame"
            );
        }
        assert_eq!(CloseReason::TokenExpired.reason(), "token expired");
        assert_eq!(CloseReason::TooSlow.reason(), "too slow");
    }
}
