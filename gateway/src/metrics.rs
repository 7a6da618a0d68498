//! The gateway's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// How a client is connected. Socket.IO clients are counted under the transport they
/// connected with (a polling client that upgrades to WebSocket stays `socketio_polling`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum TransportKind {
    WebSocket,
    SocketIoWebSocket,
    SocketIoPolling,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TransportLabel {
    transport: &'static str,
}

impl From<TransportKind> for TransportLabel {
    fn from(t: TransportKind) -> Self {
        TransportLabel {
            transport: match t {
                TransportKind::WebSocket => "ws",
                TransportKind::SocketIoWebSocket => "socketio_websocket",
                TransportKind::SocketIoPolling => "socketio_polling",
            },
        }
    }
}

#[derive(Clone)]
pub(crate) struct Metrics {
    pub(crate) connections: Family<TransportLabel, Gauge>,
    pub(crate) pushed: Family<TransportLabel, Counter>,
    pub(crate) dropped_clients: Counter,
    pub(crate) push_age_seconds: Histogram,
    pub(crate) stored: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) undecodable: Counter,
    pub(crate) muted: Counter,
}

impl Metrics {
    pub(crate) fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            connections: Family::default(),
            pushed: Family::default(),
            dropped_clients: Counter::default(),
            push_age_seconds: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            stored: Counter::default(),
            duplicates: Counter::default(),
            undecodable: Counter::default(),
            muted: Counter::default(),
        };
        registry.register(
            "vigia_gateway_connections",
            "Open live connections, by transport (ws, socketio_websocket, socketio_polling)",
            m.connections.clone(),
        );
        registry.register(
            "vigia_gateway_pushed",
            "Notifications queued to a live connection (one per connection reached), by transport",
            m.pushed.clone(),
        );
        registry.register(
            "vigia_gateway_dropped_clients",
            "Connections closed because their queue was full (\"too slow\")",
            m.dropped_clients.clone(),
        );
        registry.register(
            "vigia_gateway_push_age_seconds",
            "Age of a notification (now - created_at) when it is pushed",
            m.push_age_seconds.clone(),
        );
        registry.register(
            "vigia_gateway_notifications_stored",
            "Notifications newly stored in the inbox",
            m.stored.clone(),
        );
        registry.register(
            "vigia_gateway_notifications_duplicate",
            "Notifications received again (already in the inbox; not pushed again)",
            m.duplicates.clone(),
        );
        registry.register(
            "vigia_gateway_notifications_undecodable",
            "Records of the notifications topic that are not a notification (skipped)",
            m.undecodable.clone(),
        );
        registry.register(
            "vigia_gateway_notifications_muted",
            "Live pushes skipped because of the user's preferences (one per connection; the \
             notification stays in the inbox)",
            m.muted.clone(),
        );
        m
    }
}
