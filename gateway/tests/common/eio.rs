//! A minimal Socket.IO client over Engine.IO v4 HTTP long-polling, spoken by hand with reqwest,
//! for the tests that need what the official client hides: a handshake that never
//! authenticates, a flood of events, the exact packets the server sends.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

/// Engine.IO's packet separator in a polling payload.
const SEPARATOR: char = '\u{1e}';

/// One Engine.IO session (polling).
pub struct Eio {
    http: reqwest::Client,
    base: String,
    pub sid: String,
}

/// What a poll brought.
#[derive(Debug)]
pub enum Poll {
    /// Engine.IO packets (`2` ping, `40{…}` connected, `42[…]` an event, `44{…}` connect_error,
    /// `1` close…); pings are answered already.
    Packets(Vec<String>),
    /// The server refused the poll (e.g. 400 "Session ID unknown": the session is gone).
    Refused(StatusCode, String),
    /// Nothing within the wait: the session is open and quiet.
    Quiet,
}

impl Eio {
    /// The Engine.IO handshake at `http://{addr}/socket.io/` (`extra`: more query, e.g.
    /// `&token=…`). `Err` with the status and body if the server refuses it.
    pub async fn handshake(
        addr: std::net::SocketAddr,
        extra: &str,
    ) -> Result<Eio, (StatusCode, String)> {
        let http = reqwest::Client::new();
        let base = format!("http://{addr}/socket.io/?EIO=4&transport=polling");
        let r = http
            .get(format!("{base}{extra}"))
            .send()
            .await
            .expect("the handshake request reaches the server");
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        if status != StatusCode::OK {
            return Err((status, body));
        }
        let open: Value = serde_json::from_str(
            body.strip_prefix('0')
                .unwrap_or_else(|| panic!("not an open packet: {body}")),
        )
        .unwrap();
        Ok(Eio {
            http,
            base,
            sid: open["sid"].as_str().unwrap().to_string(),
        })
    }

    /// Sends `packets` in one POST; the response's status.
    pub async fn send(&self, packets: &[String]) -> StatusCode {
        let body = packets.join(&SEPARATOR.to_string());
        self.http
            .post(format!("{}&sid={}", self.base, self.sid))
            .body(body)
            .send()
            .await
            .map(|r| r.status())
            .unwrap_or(StatusCode::BAD_GATEWAY)
    }

    /// Connects to the namespace `/` with `auth: {token}`.
    pub async fn connect_namespace(&self, token: &str) -> StatusCode {
        self.send(&[format!("40{}", serde_json::json!({ "token": token }))])
            .await
    }

    /// Emits `event` with `data`.
    pub async fn emit(&self, event: &str, data: Value) -> StatusCode {
        self.send(&[format!("42{}", serde_json::json!([event, data]))])
            .await
    }

    /// One long poll, waiting up to `wait`; answers pings.
    pub async fn poll(&self, wait: Duration) -> Poll {
        let request = self
            .http
            .get(format!("{}&sid={}", self.base, self.sid))
            .send();
        let r = match tokio::time::timeout(wait, request).await {
            Err(_) => return Poll::Quiet,
            Ok(r) => r.expect("the poll reaches the server"),
        };
        let status = r.status();
        let body = match tokio::time::timeout(wait, r.text()).await {
            Err(_) => return Poll::Quiet,
            Ok(body) => body.unwrap_or_default(),
        };
        if status != StatusCode::OK {
            return Poll::Refused(status, body);
        }
        let packets: Vec<String> = body.split(SEPARATOR).map(str::to_string).collect();
        if packets.iter().any(|p| p == "2") {
            self.send(&["3".to_string()]).await;
        }
        Poll::Packets(packets)
    }

    /// Polls until `done` says so about everything received, or `within` is over; everything
    /// received. Stops early if the session is refused or closed (packet `1`).
    pub async fn collect_until(
        &self,
        within: Duration,
        mut done: impl FnMut(&[String]) -> bool,
    ) -> (Vec<String>, Option<Poll>) {
        let deadline = tokio::time::Instant::now() + within;
        let mut all = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || done(&all) {
                return (all, None);
            }
            match self.poll(left.min(Duration::from_secs(2))).await {
                Poll::Packets(packets) => {
                    let closed = packets.iter().any(|p| p == "1");
                    all.extend(packets.into_iter().filter(|p| p != "2" && p != "6"));
                    if closed {
                        return (all, Some(Poll::Packets(vec!["1".into()])));
                    }
                }
                Poll::Quiet => {}
                refused @ Poll::Refused(..) => return (all, Some(refused)),
            }
        }
    }
}

/// The events (`42[name, data]`) among `packets`, as (name, data).
pub fn events(packets: &[String]) -> Vec<(String, Value)> {
    packets
        .iter()
        .filter_map(|p| p.strip_prefix("42"))
        .filter_map(|json| serde_json::from_str::<Value>(json).ok())
        .map(|v| (v[0].as_str().unwrap_or_default().to_string(), v[1].clone()))
        .collect()
}
