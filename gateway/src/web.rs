//! The CEO dashboard and the daily report pages, served by the gateway.
//!
//! - `GET /` — the dashboard (one page; its script and styles under `/assets/`, built into the
//!   binary with `include_str!`: no CDN and no Node step at run time; the chart library, uPlot,
//!   is vendored from npm in `gateway/assets/vendor/`). Sign-in is a JWT, pasted or in a link's
//!   fragment (`/#token=<jwt>`: a fragment is never sent to a server, so it reaches no log and no
//!   `Referer`; the page removes it from the address bar), kept in the browser's local storage.
//!   A token in the query (`/?token=`) is not used. The page reads the REST API
//!   (`/v1/metrics/*`, `/v1/notifications*`) and stays live over `/ws`.
//! - `GET /v1/reports/{date}` — the daily report about local day `date` (`YYYY-MM-DD`) as JSON:
//!   the `daily_report` notification the processors sent at 08:00 the next day.
//! - `GET /reports/{date}` — the same report as an HTML page (`?lang=en` for English), for the
//!   dashboard's links. With `Authorization: Bearer`, the report; without, a loader page
//!   (`/assets/report.js`) that takes the token from the link's fragment (`#token=<jwt>`) or the
//!   dashboard's sign-in and fetches the report with the header. A link to a report carries no
//!   token, so it can be shared; `?token=` is refused (`400`). Reports are served with
//!   `Cache-Control: no-store` and `Referrer-Policy: no-referrer`.
//!
//! Reports are read from the inbox, so a user sees the reports addressed to them (CEO and
//! managers), and a report is found by its deterministic id (tenant, day).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use vigia_schemas::UserId;

use crate::audience::Viewer;
use crate::auth::{bearer_token, AuthError};
use crate::Shared;

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const UPLOT_JS: &str = include_str!("../assets/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/vendor/uPlot.min.css");
const REPORT_JS: &str = include_str!("../assets/report.js");
const REPORT_LOADER: &str = include_str!("../assets/report.html");

/// A report is the tenant's figures: not kept in caches, and its address not passed on.
const PRIVATE: [(header::HeaderName, &str); 2] = [
    (header::CACHE_CONTROL, "no-store"),
    (header::REFERRER_POLICY, "no-referrer"),
];

pub(crate) async fn index() -> Html<&'static str> {
    Html(INDEX)
}

pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "uPlot.iife.min.js" => (UPLOT_JS, "text/javascript; charset=utf-8"),
        "uPlot.min.css" => (UPLOT_CSS, "text/css; charset=utf-8"),
        "report.js" => (REPORT_JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReportParams {
    /// Only to refuse it: see `report_html`.
    token: Option<String>,
    lang: Option<String>,
}

/// The caller, from `Authorization: Bearer`.
fn viewer(shared: &Shared, headers: &HeaderMap) -> Result<Viewer, AuthError> {
    let token = bearer_token(headers).ok_or(AuthError::MissingToken)??;
    Ok(shared.verifier.verify(token)?.viewer)
}

/// The report about `date` that `v` may see, as (data, title, message).
async fn find_report(shared: &Shared, v: &Viewer, date: &str) -> Result<Option<Value>, Response> {
    let Ok(day) = date.parse::<chrono::NaiveDate>() else {
        return Err((
            StatusCode::BAD_REQUEST,
            Json(json!({"errors": [{"field": "date", "message": format!("{date:?} is not a date: use YYYY-MM-DD")}]})),
        )
            .into_response());
    };
    let id = vigia_schemas::derive_id(
        "notification/daily_report",
        &[&v.tenant_id.to_string(), &day.to_string()],
    );
    match shared.inbox.get(v, id).await {
        Ok(found) => Ok(found.map(|s| {
            json!({
                "day": day.to_string(),
                "title": s.notification.title,
                "message": s.notification.message,
                "created_at": s.notification.created_at,
                "report": s.notification.data,
            })
        })),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a report from the inbox");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "5")],
                Json(json!({"error": "the notification inbox is unavailable; retry shortly"})),
            )
                .into_response())
        }
    }
}

fn not_found(date: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no daily report about {date} for you (reports come at 08:00 the next day, to CEOs and managers)")})),
    )
        .into_response()
}

pub(crate) async fn report_json(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(date): Path<String>,
) -> Response {
    let v = match viewer(&shared, &headers) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    match find_report(&shared, &v, &date).await {
        Ok(Some(r)) => Json(r).into_response(),
        Ok(None) => not_found(&date),
        Err(response) => response,
    }
}

pub(crate) async fn report_html(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(date): Path<String>,
    Query(params): Query<ReportParams>,
) -> Response {
    if params.token.is_some() {
        return (
            StatusCode::BAD_REQUEST,
            PRIVATE,
            Json(json!({"error": format!(
                "a token in the URL's query is refused: URLs end up in logs, history and \
                 Referer headers. Send `Authorization: Bearer <jwt>`, or put the token in the \
                 link's fragment: /reports/{date}#token=<jwt>"
            )})),
        )
            .into_response();
    }
    if bearer_token(&headers).is_none() {
        return (PRIVATE, Html(REPORT_LOADER)).into_response();
    }
    let v = match viewer(&shared, &headers) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let english = params.lang.as_deref() == Some("en");
    match find_report(&shared, &v, &date).await {
        Ok(Some(r)) => {
            let names = names_for(&shared, &v).await;
            (PRIVATE, Html(render_report(&r, english, &names))).into_response()
        }
        Ok(None) => not_found(&date),
        Err(response) => response,
    }
}

/// The names `v` may see (see [`crate::people`]); none if the directory cannot be read (the
/// report then names people as it was written).
async fn names_for(shared: &Shared, v: &Viewer) -> HashMap<UserId, String> {
    match crate::people::visible_people(&shared.inbox, v).await {
        Ok(people) => people.into_iter().map(|p| (p.user_id, p.name)).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the people directory for a report");
            HashMap::new()
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
        None => "—".into(),
    }
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("—".into(), |x| format!("{:.0} %", x * 100.0))
}

/// The report page: team totals, top performers, alerts. A top performer is named by the
/// directory (`names`: their current name), else by the name the report was written with, else
/// by id.
pub(crate) fn render_report(r: &Value, english: bool, names: &HashMap<UserId, String>) -> String {
    let t = |es: &'static str, en: &'static str| if english { en } else { es };
    let rep = &r["report"];
    let team = &rep["team"];
    let rows = [
        (
            t("Conversaciones", "Conversations"),
            num(&team["conversations"]),
        ),
        (
            t("Mensajes recibidos", "Messages received"),
            num(&team["messages_in"]),
        ),
        (
            t("Mensajes enviados", "Messages sent"),
            num(&team["messages_out"]),
        ),
        (
            t("Esperas terminadas", "Waits ended"),
            num(&team["waits_received"]),
        ),
        (
            t("Esperas respondidas", "Waits answered"),
            num(&team["waits_answered"]),
        ),
        (
            t("Tasa de respuesta", "Engagement rate"),
            pct(&team["engagement_rate"]),
        ),
        (
            t("Tiempo de respuesta medio (s)", "Mean response time (s)"),
            num(&team["response"]["mean_seconds"]),
        ),
        (
            t("Tiempo de respuesta p90 (s)", "Response time p90 (s)"),
            num(&team["response"]["p90_seconds"]),
        ),
        (
            t("Leads creados", "Leads created"),
            num(&team["leads_generated"]),
        ),
        (
            t("Leads convertidos", "Leads converted"),
            num(&team["leads_converted"]),
        ),
        (
            t("Tasa de conversión", "Conversion rate"),
            pct(&team["conversion_rate"]),
        ),
    ];
    let team_rows: String = rows
        .iter()
        .map(|(k, v)| format!("<tr><th>{k}</th><td>{v}</td></tr>"))
        .collect();
    let top: String = rep["top_performers"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let current = p["seller_id"].as_u64().and_then(|id| names.get(&id));
            let name = current
                .map(String::as_str)
                .or_else(|| p["name"].as_str())
                .map(escape)
                .unwrap_or_else(|| format!("#{}", p["seller_id"]));
            format!(
                "<tr><td>{}</td><td>{name}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                i + 1,
                num(&p["productivity_score"]),
                num(&p["waits_answered"]),
                num(&p["response"]["mean_seconds"]),
            )
        })
        .collect();
    let alerts: String = rep["alerts"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("<tr><th>{}</th><td>{}</td></tr>", escape(k), num(v)))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/assets/app.css\"></head>\
         <body class=\"report\"><main><h1>{title}</h1><p class=\"muted\">{message}</p>\
         <section><h2>{h_team}</h2><table id=\"team\">{team_rows}</table></section>\
         <section><h2>{h_top}</h2><table id=\"top\"><tr><th>#</th><th>{h_seller}</th>\
         <th>{h_score}</th><th>{h_answered}</th><th>{h_mean}</th></tr>{top}</table></section>\
         <section><h2>{h_alerts}</h2><table id=\"alerts\">{alerts}</table>\
         <p class=\"muted\">{h_withdrawn}: {withdrawn}</p></section>\
         <p class=\"muted\">{h_zone}: {zone}</p></main></body></html>",
        lang = if english { "en" } else { "es" },
        title = escape(r["title"].as_str().unwrap_or_default()),
        message = escape(r["message"].as_str().unwrap_or_default()),
        h_team = t("Totales del equipo", "Team totals"),
        h_top = t("Mejores vendedores", "Top performers"),
        h_seller = t("Vendedor", "Seller"),
        h_score = t("Productividad", "Productivity"),
        h_answered = t("Respondidas", "Answered"),
        h_mean = t("Respuesta media (s)", "Mean response (s)"),
        h_alerts = t("Alertas", "Alerts"),
        h_withdrawn = t("Alertas resueltas después", "Alerts resolved later"),
        withdrawn = num(&rep["alerts_withdrawn"]),
        h_zone = t("Zona horaria", "Time zone"),
        zone = escape(rep["time_zone"].as_str().unwrap_or_default()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_page_shows_totals_top_performers_and_alerts_escaped() {
        let r = json!({"title": "Informe diario del 2026-03-02", "message": "Ayer: <b>",
            "report": {"time_zone": "America/Bogota", "alerts_withdrawn": 2,
              "team": {"conversations": 3, "engagement_rate": 0.5, "response": {"mean_seconds": 120.0}},
              "top_performers": [{"seller_id": 7, "name": "Ana <3", "productivity_score": 8.25,
                                  "waits_answered": 2, "response": {"mean_seconds": 120.0}}],
              "alerts": {"unanswered_conversation": 1}}});
        let es = render_report(&r, false, &HashMap::new());
        assert!(es.contains("<h1>Informe diario del 2026-03-02</h1>"));
        assert!(es.contains("Ayer: &lt;b&gt;"), "escaped");
        assert!(es.contains("<tr><th>Conversaciones</th><td>3</td></tr>"));
        assert!(es.contains("<tr><th>Tasa de respuesta</th><td>50 %</td></tr>"));
        assert!(
            es.contains("<td>Ana &lt;3</td><td>8.2</td>")
                || es.contains("<td>Ana &lt;3</td><td>8.3</td>")
        );
        assert!(es.contains("<tr><th>unanswered_conversation</th><td>1</td></tr>"));
        let en = render_report(&r, true, &HashMap::new());
        assert!(en.contains("Team totals") && en.contains("lang=\"en\""));
    }

    #[test]
    fn top_performers_are_named_by_the_directory_first_escaped_and_by_id_last() {
        let r = json!({"title": "t", "message": "m", "report": {"top_performers": [
            {"seller_id": 7, "name": "Ana", "productivity_score": 9.0},
            {"seller_id": 8, "productivity_score": 8.0},
            {"seller_id": 9, "productivity_score": 7.0}]}});
        let names = HashMap::from([
            (7, "Ana María".to_string()),
            (8, "<script>alert(1)</script>".to_string()),
        ]);
        let page = render_report(&r, false, &names);
        assert!(page.contains("<td>1</td><td>Ana María</td>"), "{page}");
        assert!(
            page.contains("<td>2</td><td>&lt;script&gt;alert(1)&lt;/script&gt;</td>"),
            "{page}"
        );
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("<td>3</td><td>#9</td>"), "{page}");
    }
}
