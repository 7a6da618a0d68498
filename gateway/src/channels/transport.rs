//! The I/O: e-mail over SMTP (lettre) and Slack / Teams webhooks (reqwest).

use std::time::Duration;

use futures::future::BoxFuture;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use vigia_schemas::{Notification, TenantId};

use super::config::{EmailChannel, SmtpTls};
use super::delivery::{Deliver, DeliveryError};
use super::{render, ChannelKind, ChannelsError};

/// Longest part of an error response body kept for the log.
const MAX_REASON_CHARS: usize = 300;

/// `X-Vigia-Notification-Id: <uuid>`: lets receivers (filters, ticketing systems) dedupe.
#[derive(Clone)]
struct NotificationIdHeader(String);

impl Header for NotificationIdHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Vigia-Notification-Id")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(NotificationIdHeader(s.to_string()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `X-Vigia-Notification-Type: performance_alert`: for mail filters.
#[derive(Clone)]
struct NotificationTypeHeader(String);

impl Header for NotificationTypeHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Vigia-Notification-Type")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(NotificationTypeHeader(s.to_string()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834): out-of-office responders do not answer it.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_string())
    }
}

/// The e-mail of a notification: subject = title; a plain-text part (message, details, id) and
/// an HTML alternative; `Message-ID` derived from the notification id.
pub(crate) fn email_message(
    n: &Notification,
    from: &Mailbox,
    to: &[Mailbox],
) -> Result<Message, lettre::error::Error> {
    let mut builder = Message::builder()
        .from(from.clone())
        .subject(n.title.clone())
        .message_id(Some(render::message_id(n, from.email.domain())))
        .date_now()
        .header(NotificationIdHeader(n.id.to_string()))
        .header(NotificationTypeHeader(n.kind.as_str().to_string()))
        .header(AutoSubmitted);
    for mailbox in to {
        builder = builder.to(mailbox.clone());
    }
    builder.multipart(MultiPart::alternative_plain_html(
        render::email_text(n),
        render::email_html(n),
    ))
}

/// One tenant's e-mail channel: one message per notification and recipient, on a new SMTP
/// connection each time.
pub(crate) struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpSender {
    pub(crate) fn new(
        tenant: TenantId,
        cfg: &EmailChannel,
        timeout: Duration,
    ) -> Result<SmtpSender, ChannelsError> {
        let at = format!("gateway.channels.tenants.{tenant}.email");
        let bad = |field: &str, e: &dyn std::fmt::Display| {
            ChannelsError::Config(format!("{at}.{field}: {e}"))
        };
        let from: Mailbox = cfg.from.parse().map_err(|e| bad("from", &e))?;
        let params = || TlsParameters::new(cfg.host.clone()).map_err(|e| bad("tls", &e));
        let tls = match cfg.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Opportunistic => Tls::Opportunistic(params()?),
            SmtpTls::Starttls => Tls::Required(params()?),
            SmtpTls::Implicit => Tls::Wrapper(params()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.trim())
            .port(cfg.port())
            .tls(tls)
            .timeout(Some(timeout));
        if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ));
        }
        Ok(SmtpSender {
            transport: builder.build(),
            from,
        })
    }
}

impl Deliver for SmtpSender {
    fn deliver<'a>(
        &'a self,
        n: &'a Notification,
        recipient: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let to: Mailbox = recipient.parse().map_err(|e| {
                DeliveryError::permanent(format!("{recipient:?} is not an e-mail address: {e}"))
            })?;
            let message = email_message(n, &self.from, &[to])
                .map_err(|e| DeliveryError::permanent(format!("cannot build the e-mail: {e}")))?;
            match self.transport.send(message).await {
                Ok(_) => Ok(()),
                // 5xx: the server refuses for good (unknown recipient, relay denied, …).
                Err(e) if e.is_permanent() => Err(DeliveryError::permanent(format!("SMTP: {e}"))),
                Err(e) => Err(DeliveryError::transient(format!("SMTP: {e}"))),
            }
        })
    }
}

/// One Slack or Teams webhook URL.
pub(crate) struct WebhookSender {
    kind: ChannelKind,
    client: reqwest::Client,
    url: reqwest::Url,
}

impl WebhookSender {
    pub(crate) fn new(kind: ChannelKind, client: reqwest::Client, url: reqwest::Url) -> Self {
        WebhookSender { kind, client, url }
    }
}

/// The HTTP client of all webhooks: whole-request timeout, TLS by rustls.
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, ChannelsError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("vigia-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ChannelsError::Http(e.to_string()))
}

/// What to do after an HTTP status that is not a success.
pub(crate) fn classify_status(
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
) -> DeliveryError {
    let reason = format!("HTTP {status}: {}", truncate_reason(body));
    match status {
        408 | 425 | 429 | 500..=599 => DeliveryError {
            permanent: false,
            retry_after,
            reason,
        },
        _ => DeliveryError::permanent(reason),
    }
}

fn truncate_reason(body: &str) -> String {
    let body = body.trim();
    if body.chars().count() <= MAX_REASON_CHARS {
        body.to_string()
    } else {
        let mut s: String = body.chars().take(MAX_REASON_CHARS).collect();
        s.push('…');
        s
    }
}

/// `Retry-After` in seconds (the HTTP-date form is ignored: the backoff applies).
pub(crate) fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl Deliver for WebhookSender {
    fn deliver<'a>(
        &'a self,
        n: &'a Notification,
        _recipient: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let payload = match self.kind {
                ChannelKind::Teams => render::teams_payload(n),
                _ => render::slack_payload(n),
            };
            let response = self
                .client
                .post(self.url.clone())
                .json(&payload)
                .send()
                .await
                // The URL is a credential: keep it out of the logs.
                .map_err(|e| {
                    let permanent = e.is_builder();
                    let reason = format!("HTTP: {}", e.without_url());
                    if permanent {
                        DeliveryError::permanent(reason)
                    } else {
                        DeliveryError::transient(reason)
                    }
                })?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let retry_after = parse_retry_after(
                response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()),
            );
            let body = response.text().await.unwrap_or_default();
            Err(classify_status(status.as_u16(), retry_after, &body))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_are_classified() {
        assert!(!classify_status(500, None, "rollup_error").permanent);
        assert!(!classify_status(503, None, "").permanent);
        assert!(!classify_status(408, None, "").permanent);
        let limited = classify_status(429, Some(Duration::from_secs(30)), "slow down");
        assert!(!limited.permanent);
        assert_eq!(limited.retry_after, Some(Duration::from_secs(30)));
        assert!(classify_status(400, None, "invalid_payload").permanent);
        assert!(classify_status(404, None, "no_service").permanent);
        assert!(classify_status(410, None, "channel_is_archived").permanent);
        assert_eq!(
            classify_status(404, None, "no_service").reason,
            "HTTP 404: no_service"
        );
        let long = classify_status(500, None, &"x".repeat(1000)).reason;
        assert!(long.chars().count() < 320);
        assert_eq!(
            parse_retry_after(Some(" 12 ")),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }

    #[test]
    fn email_has_subject_ids_and_both_parts() {
        let n = super::super::render::tests::alert();
        let from: Mailbox = "Vigía <alertas@example.com>".parse().unwrap();
        let to: Vec<Mailbox> = vec![
            "ceo@example.com".parse().unwrap(),
            "Gerente <gerente@example.com>".parse().unwrap(),
        ];
        let message = email_message(&n, &from, &to).unwrap();
        let envelope = message.envelope();
        assert_eq!(envelope.to().len(), 2);
        assert_eq!(envelope.from().unwrap().to_string(), "alertas@example.com");
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(
            raw.contains(&format!("Message-ID: <{}.vigia@example.com>", n.id)),
            "{raw}"
        );
        assert!(raw.contains(&format!("X-Vigia-Notification-Id: {}", n.id)));
        assert!(raw.contains("X-Vigia-Notification-Type: performance_alert"));
        assert!(raw.contains("Auto-Submitted: auto-generated"));
        assert!(raw.contains("multipart/alternative"));
        assert!(raw.contains("text/plain"));
        assert!(raw.contains("text/html"));
    }
}
