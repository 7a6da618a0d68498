//! What a notification looks like outside the browser: e-mail (plain text and HTML), Slack and
//! Teams payloads. Pure functions, no I/O.

use serde_json::{json, Value};
use vigia_schemas::{Notification, NotificationType, Priority};

/// Most `data` lines rendered; the rest are summarised as "… N más".
const MAX_LINES: usize = 200;
/// Longest rendered value (characters).
const MAX_VALUE_CHARS: usize = 500;
/// Slack: header text ≤ 150 characters, section text ≤ 3000.
const SLACK_HEADER_CHARS: usize = 150;
const SLACK_SECTION_CHARS: usize = 3000;
/// Teams: keep the card well under the ~28 KB limit of a webhook message.
const TEAMS_MAX_FACTS: usize = 60;

/// The field that carries the notification id in webhook payloads, for receivers that dedupe.
pub const WEBHOOK_ID_FIELD: &str = "vigia_notification_id";

pub(crate) fn type_label(kind: NotificationType) -> &'static str {
    match kind {
        NotificationType::UnansweredConversation => "Conversación sin responder",
        NotificationType::HotLead => "Lead caliente",
        NotificationType::FollowUpReminder => "Recordatorio de seguimiento",
        NotificationType::PerformanceAlert => "Alerta de rendimiento",
        NotificationType::SessionTimeout => "Sesión expirada",
        NotificationType::DailyReport => "Informe diario",
    }
}

pub(crate) fn priority_label(p: Priority) -> &'static str {
    match p {
        Priority::Low => "baja",
        Priority::Medium => "media",
        Priority::High => "alta",
        Priority::Urgent => "urgente",
    }
}

/// `Vigía · Alerta de rendimiento · prioridad media · 2024-05-01 12:00 UTC`
fn footer(n: &Notification) -> String {
    format!(
        "Vigía · {} · prioridad {} · {}",
        type_label(n.kind),
        priority_label(n.priority),
        n.created_at.format("%Y-%m-%d %H:%M UTC")
    )
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn render_number(n: &serde_json::Number) -> String {
    if n.is_f64() {
        let f = n.as_f64().unwrap_or_default();
        if f.fract() == 0.0 && f.abs() < 1e15 {
            return format!("{f:.0}");
        }
        let s = format!("{f:.2}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        return s.to_string();
    }
    n.to_string()
}

fn render_scalar(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::Bool(true) => "sí".into(),
        Value::Bool(false) => "no".into(),
        Value::Number(n) => render_number(n),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `data` as readable key/value lines: nested objects give dotted keys (`team.response.p50`),
/// array items are numbered from 1 (`top_performers.1.name`), arrays of plain values are joined
/// with commas, `null` is "—". At most 200 lines; a last line says how many more.
pub fn data_lines(data: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        let key = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match v {
            Value::Object(fields) if !fields.is_empty() => {
                for (k, v) in fields {
                    walk(&key(k), v, out);
                }
            }
            Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
                for (i, item) in items.iter().enumerate() {
                    walk(&key(&(i + 1).to_string()), item, out);
                }
            }
            Value::Array(items) => {
                let joined = if items.is_empty() {
                    "—".to_string()
                } else {
                    items
                        .iter()
                        .map(render_scalar)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                out.push((prefix.to_string(), truncate(&joined, MAX_VALUE_CHARS)));
            }
            Value::Object(_) => out.push((prefix.to_string(), "—".into())),
            scalar => out.push((
                prefix.to_string(),
                truncate(&render_scalar(scalar), MAX_VALUE_CHARS),
            )),
        }
    }
    let mut out = Vec::new();
    match data {
        Value::Null => {}
        Value::Object(m) if m.is_empty() => {}
        Value::Array(a) if a.is_empty() => {}
        Value::Object(_) | Value::Array(_) => walk("", data, &mut out),
        scalar => out.push(("data".into(), render_scalar(scalar))),
    }
    // A top-level array of plain values comes back with an empty key.
    for (k, _) in out.iter_mut() {
        if k.is_empty() {
            *k = "data".into();
        }
    }
    if out.len() > MAX_LINES {
        let more = out.len() - (MAX_LINES - 1);
        out.truncate(MAX_LINES - 1);
        out.push(("…".into(), format!("{more} más")));
    }
    out
}

/// The plain-text body of the e-mail.
pub fn email_text(n: &Notification) -> String {
    let mut body = String::new();
    body.push_str(&n.message);
    body.push_str("\n\n");
    let lines = data_lines(&n.data);
    if !lines.is_empty() {
        body.push_str("Detalles:\n");
        for (k, v) in &lines {
            body.push_str(&format!("  {k}: {v}\n"));
        }
        body.push('\n');
    }
    body.push_str("-- \n");
    body.push_str(&footer(n));
    body.push('\n');
    body.push_str(&format!("ID de notificación: {}\n", n.id));
    body
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML alternative of the e-mail: same content as [`email_text`].
pub fn email_html(n: &Notification) -> String {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"es\"><head><meta charset=\"utf-8\"></head>\
         <body style=\"font-family:Arial,Helvetica,sans-serif;color:#222\">\n",
    );
    html.push_str(&format!(
        "<h2 style=\"margin:0 0 12px\">{}</h2>\n",
        html_escape(&n.title)
    ));
    html.push_str(&format!(
        "<p>{}</p>\n",
        html_escape(&n.message).replace('\n', "<br>\n")
    ));
    let lines = data_lines(&n.data);
    if !lines.is_empty() {
        html.push_str("<table style=\"border-collapse:collapse;font-size:14px\">\n");
        for (k, v) in &lines {
            html.push_str(&format!(
                "<tr><td style=\"padding:2px 12px 2px 0;color:#555\">{}</td>\
                 <td style=\"padding:2px 0\">{}</td></tr>\n",
                html_escape(k),
                html_escape(v)
            ));
        }
        html.push_str("</table>\n");
    }
    html.push_str(&format!(
        "<p style=\"margin-top:24px;font-size:12px;color:#777\">{}<br>\nID de notificación: \
         {}</p>\n</body></html>\n",
        html_escape(&footer(n)),
        n.id
    ));
    html
}

/// Slack's control characters: `<` opens links (`<https://…|text>`) and mentions (`<!channel>`,
/// `<@U123>`), so `&`, `<` and `>` become entities, which Slack shows as the characters.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack text object shown as written: `plain_text` has no emphasis, links, mentions or
/// emoji codes, so CRM data (a seller named `[Reautentique](https://evil.example)` or
/// `<!channel>`) is never read as markup. mrkdwn has no escape for `*`, `_`, `~` or `` ` ``,
/// which is why no CRM text goes into one.
fn slack_plain(text: String) -> Value {
    json!({"type": "plain_text", "text": text, "emoji": false})
}

/// A Slack incoming-webhook payload: `text` (what notifications and old clients show; with
/// `"mrkdwn": false` and Slack's control characters escaped) and Block Kit `blocks` (header,
/// message, details, context with the id), every one `plain_text`, plus [`WEBHOOK_ID_FIELD`].
pub fn slack_payload(n: &Notification) -> Value {
    let text = truncate(
        &slack_escape(&format!("{}\n{}", n.title, n.message)),
        SLACK_SECTION_CHARS,
    );
    let mut blocks = vec![
        json!({"type": "header", "text": slack_plain(truncate(&n.title, SLACK_HEADER_CHARS))}),
        json!({"type": "section", "text": slack_plain(truncate(&n.message, SLACK_SECTION_CHARS))}),
    ];
    let lines = data_lines(&n.data);
    if !lines.is_empty() {
        let details = lines
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("\n");
        blocks.push(json!({
            "type": "section",
            "text": slack_plain(truncate(&details, SLACK_SECTION_CHARS))
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [slack_plain(format!("{} · ID {}", footer(n), n.id))]
    }));
    json!({
        "text": text,
        "mrkdwn": false,
        "blocks": blocks,
        WEBHOOK_ID_FIELD: n.id,
    })
}

/// Adaptive Card text shown as written: a `RichTextBlock` of `TextRun`s, which Teams does not
/// read as Markdown (a `TextBlock` or a `FactSet` would render `[text](url)` as a link and
/// `**…**`, `_…_` as emphasis, and Teams has no reliable escape).
fn teams_text(runs: Vec<Value>) -> Value {
    json!({"type": "RichTextBlock", "inlines": runs})
}

fn teams_run(text: &str) -> Value {
    json!({"type": "TextRun", "text": text})
}

/// A Teams webhook payload: a message with one Adaptive Card (accepted by Teams Workflows
/// webhooks and by legacy incoming webhooks), plus [`WEBHOOK_ID_FIELD`]. Every text from the
/// notification is a `TextRun` (see [`teams_text`]).
pub fn teams_payload(n: &Notification) -> Value {
    let mut body = vec![
        teams_text(vec![json!({
            "type": "TextRun", "text": n.title, "weight": "Bolder", "size": "Medium"
        })]),
        teams_text(vec![teams_run(&n.message)]),
    ];
    let lines = data_lines(&n.data);
    let shown = lines.len().min(TEAMS_MAX_FACTS);
    for (i, (k, v)) in lines.iter().take(TEAMS_MAX_FACTS).enumerate() {
        let mut line = teams_text(vec![
            json!({"type": "TextRun", "text": format!("{k}: "), "weight": "Bolder"}),
            teams_run(v),
        ]);
        if i > 0 {
            line["spacing"] = json!("None");
        }
        body.push(line);
    }
    if lines.len() > shown {
        body.push(teams_text(vec![teams_run(&format!(
            "… {} más",
            lines.len() - shown
        ))]));
    }
    body.push(teams_text(vec![json!({
        "type": "TextRun",
        "text": format!("{} · ID {}", footer(n), n.id),
        "isSubtle": true,
        "size": "Small"
    })]));
    json!({
        "type": "message",
        "summary": n.title,
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "msteams": {"width": "Full"}
            }
        }],
        WEBHOOK_ID_FIELD: n.id,
    })
}

/// `<{id}@{domain}>`: the same notification always gets the same Message-ID, so mail systems
/// that keep Message-IDs can recognise a copy sent again after a restart.
pub fn message_id(n: &Notification, from_domain: &str) -> String {
    let domain = if from_domain.is_empty() {
        "vigia.invalid"
    } else {
        from_domain
    };
    format!("<{}.vigia@{domain}>", n.id)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;
    use vigia_schemas::{Audience, Role};

    pub(crate) fn alert() -> Notification {
        Notification {
            id: uuid::Uuid::from_u128(0x1234),
            tenant_id: 42,
            kind: NotificationType::PerformanceAlert,
            priority: Priority::Medium,
            audience: Audience::Role { role: Role::Ceo },
            title: "Ana: tiempo de respuesta alto <hoy>".into(),
            message: "El tiempo medio de respuesta de Ana es 12 min & sube.".into(),
            data: json!({
                "seller_name": "Ana",
                "value": 723.456,
                "threshold": 300.0,
                "rate": null,
                "ok": false,
                "tags": ["a", "b"],
                "team": {"response": {"p50_seconds": 12.5}},
                "top": [{"name": "Ana"}, {"name": "Luis"}],
            }),
            actions: vec![],
            created_at: chrono::Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap(),
            withdraws: None,
        }
    }

    #[test]
    fn data_is_rendered_as_readable_lines() {
        let lines = data_lines(&alert().data);
        let get = |k: &str| {
            lines
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("seller_name"), Some("Ana"));
        assert_eq!(get("value"), Some("723.46"));
        assert_eq!(get("threshold"), Some("300"));
        assert_eq!(get("rate"), Some("—"));
        assert_eq!(get("ok"), Some("no"));
        assert_eq!(get("tags"), Some("a, b"));
        assert_eq!(get("team.response.p50_seconds"), Some("12.5"));
        assert_eq!(get("top.1.name"), Some("Ana"));
        assert_eq!(get("top.2.name"), Some("Luis"));
        assert!(data_lines(&Value::Null).is_empty());
        assert_eq!(data_lines(&json!({})), vec![]);
        assert_eq!(
            data_lines(&json!([1, 2])),
            vec![("data".into(), "1, 2".into())]
        );
    }

    #[test]
    fn long_data_is_cut_with_a_count() {
        let big: serde_json::Map<String, Value> =
            (0..500).map(|i| (format!("k{i:03}"), json!(i))).collect();
        let lines = data_lines(&Value::Object(big));
        assert_eq!(lines.len(), MAX_LINES);
        assert_eq!(
            lines.last().unwrap(),
            &("…".to_string(), "301 más".to_string())
        );
    }

    #[test]
    fn email_texts_carry_message_details_and_id() {
        let n = alert();
        let text = email_text(&n);
        assert!(text.starts_with(&n.message));
        assert!(text.contains("  seller_name: Ana\n"));
        assert!(text.contains(&n.id.to_string()));
        assert!(text.contains("Alerta de rendimiento · prioridad media"));
        let html = email_html(&n);
        assert!(html.contains("Ana: tiempo de respuesta alto &lt;hoy&gt;"));
        assert!(html.contains("12 min &amp; sube"));
        assert!(html.contains(&n.id.to_string()));
        assert!(!html.contains("<hoy>"));
        assert_eq!(
            message_id(&n, "example.com"),
            format!("<{}.vigia@example.com>", n.id)
        );
    }

    #[test]
    fn slack_payload_shape() {
        let n = alert();
        let p = slack_payload(&n);
        assert_eq!(p[WEBHOOK_ID_FIELD], json!(n.id));
        let text = p["text"].as_str().unwrap();
        assert!(
            text.starts_with("Ana: tiempo de respuesta alto &lt;hoy&gt;\n"),
            "{text}"
        );
        assert_eq!(p["mrkdwn"], json!(false));
        let blocks = p["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(blocks[0]["text"]["text"], n.title);
        assert_eq!(blocks[1]["text"]["type"], "plain_text");
        assert_eq!(blocks[1]["text"]["text"], n.message);
        assert!(blocks[2]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("seller_name: Ana\n"));
        let context = blocks.last().unwrap();
        assert_eq!(context["type"], "context");
        assert!(context["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains(&n.id.to_string()));
        // No details block without data.
        let bare = slack_payload(&Notification {
            data: Value::Null,
            ..n.clone()
        });
        assert_eq!(bare["blocks"].as_array().unwrap().len(), 3);
        // Slack's limits.
        let long = slack_payload(&Notification {
            title: "x".repeat(400),
            ..n
        });
        assert_eq!(
            long["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            150
        );
    }

    /// Seller names a hostile CRM user could type: a disguised link (Markdown and Slack forms),
    /// Slack mentions, and every emphasis and code mark of Slack mrkdwn and Teams Markdown.
    const HOSTILE_NAMES: &[&str] = &[
        "[Reautentique](https://evil.example)",
        "<https://evil.example|Reautentique>",
        "<!channel>",
        "<!here>",
        "<@U123>",
        "*urgente*",
        "**urgente**",
        "_pagar ya_",
        "~tachado~",
        "`código`",
        "# Título",
    ];

    fn hostile(name: &str) -> Notification {
        Notification {
            title: format!("{name}: tiempo de respuesta alto"),
            message: format!("El tiempo medio de respuesta de {name} es 12 min."),
            data: json!({
                "seller_name": name,
                "top_performers": [{"name": name}],
            }),
            ..alert()
        }
    }

    /// Every string of a Slack payload with whether Slack interprets markup in it: text objects
    /// of type `mrkdwn`, and the top-level `text` unless the payload says `"mrkdwn": false`
    /// (then only its `<…>` control sequences, which must be escaped). `plain_text` is literal.
    fn slack_texts(p: &Value) -> Vec<(bool, String)> {
        fn walk(v: &Value, out: &mut Vec<(bool, String)>) {
            match v {
                Value::Object(o) => {
                    if let (Some(kind), Some(Value::String(t))) = (o.get("type"), o.get("text")) {
                        out.push((kind == "mrkdwn", t.clone()));
                    }
                    for v in o.values() {
                        walk(v, out);
                    }
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        let top = p["text"].as_str().unwrap_or_default().to_string();
        out.push((p["mrkdwn"] != json!(false), top));
        walk(&p["blocks"], &mut out);
        out
    }

    #[test]
    fn slack_shows_hostile_names_as_text() {
        for name in HOSTILE_NAMES {
            let p = slack_payload(&hostile(name));
            let texts = slack_texts(&p);
            for (markup, text) in &texts {
                assert!(
                    !(*markup && text.contains(name)),
                    "{name}: Slack interprets markup in {text:?}"
                );
                assert!(
                    !(*markup && text.contains("evil.example")),
                    "{name}: Slack would link {text:?}"
                );
            }
            // `<` opens links and mentions even where emphasis is off.
            assert!(
                !p["text"].as_str().unwrap().contains('<'),
                "{name}: {}",
                p["text"]
            );
            // Shown as written: literally, in plain text, in the message and the details.
            let plain: Vec<&String> = texts.iter().filter(|(m, _)| !m).map(|(_, t)| t).collect();
            assert!(
                plain.iter().any(|t| t.contains(&hostile(name).message)),
                "{name}: message not shown as written in {plain:?}"
            );
            assert!(
                plain
                    .iter()
                    .any(|t| t.contains(&format!("top_performers.1.name: {name}"))),
                "{name}: details not shown as written in {plain:?}"
            );
        }
    }

    /// Every string of a Teams payload with whether Teams renders it as Markdown: `TextBlock`
    /// text and `Fact` titles and values do; `TextRun`s of a `RichTextBlock` and the summary
    /// do not.
    fn teams_texts(p: &Value) -> Vec<(bool, String)> {
        fn walk(v: &Value, out: &mut Vec<(bool, String)>) {
            match v {
                Value::Object(o) => {
                    let kind = o.get("type").and_then(Value::as_str);
                    match (kind, o.get("text")) {
                        (Some("TextBlock"), Some(Value::String(t))) => out.push((true, t.clone())),
                        (Some("TextRun"), Some(Value::String(t))) => out.push((false, t.clone())),
                        _ => {}
                    }
                    if let Some(Value::Array(facts)) = o.get("facts") {
                        for f in facts {
                            for k in ["title", "value"] {
                                out.push((true, f[k].as_str().unwrap_or_default().into()));
                            }
                        }
                    }
                    for v in o.values() {
                        walk(v, out);
                    }
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(&p["attachments"], &mut out);
        out
    }

    #[test]
    fn teams_shows_hostile_names_as_text() {
        for name in HOSTILE_NAMES {
            let n = hostile(name);
            let p = teams_payload(&n);
            let texts = teams_texts(&p);
            for (markdown, text) in &texts {
                assert!(
                    !(*markdown && (text.contains(name) || text.contains("evil.example"))),
                    "{name}: Teams renders Markdown in {text:?}"
                );
            }
            let plain: Vec<&String> = texts.iter().filter(|(m, _)| !m).map(|(_, t)| t).collect();
            for shown in [&n.title, &n.message, &name.to_string()] {
                assert!(
                    plain.iter().any(|t| t.contains(shown.as_str())),
                    "{name}: {shown:?} not shown as written in {plain:?}"
                );
            }
        }
    }

    #[test]
    fn teams_payload_shape() {
        let n = alert();
        let p = teams_payload(&n);
        assert_eq!(p["type"], "message");
        assert_eq!(p[WEBHOOK_ID_FIELD], json!(n.id));
        let att = &p["attachments"][0];
        assert_eq!(
            att["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = &att["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        let runs = |i: usize| -> Vec<String> {
            card["body"][i]["inlines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["text"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(runs(0), vec![n.title.clone()]);
        assert_eq!(runs(1), vec![n.message.clone()]);
        let body = card["body"].as_array().unwrap();
        assert!((2..body.len()).any(|i| runs(i) == ["seller_name: ", "Ana"]));
        assert_eq!(body.len(), 2 + data_lines(&n.data).len() + 1);
        assert!(runs(body.len() - 1)[0].contains(&n.id.to_string()));
        // Long data: at most TEAMS_MAX_FACTS lines and a count of the rest.
        let big: serde_json::Map<String, Value> =
            (0..100).map(|i| (format!("k{i:03}"), json!(i))).collect();
        let p = teams_payload(&Notification {
            data: Value::Object(big),
            ..n
        });
        let body = p["attachments"][0]["content"]["body"].as_array().unwrap();
        assert_eq!(body.len(), 2 + TEAMS_MAX_FACTS + 1 + 1);
        assert_eq!(body[2 + TEAMS_MAX_FACTS]["inlines"][0]["text"], "… 40 más");
    }
}
