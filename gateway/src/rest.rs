//! The REST inbox (contract §5.5), authenticated by `Authorization: Bearer <jwt>`.
//!
//! - `GET /v1/notifications?limit=50&before=<sequence>` → `{"notifications": [{"sequence", "read",
//!   "withdrawn", "notification"}…], "next_before": <sequence>|null}`, newest first; pass
//!   `next_before` as `before` for the next page. `limit` is 1..=200 (default 50).
//! - `GET /v1/notifications/count` → `{"count": N}` (unread).
//! - `POST /v1/notifications/{id}/read` → `{"count": N}`, or `404` if the caller has no such
//!   notification.
//! - `POST /v1/notifications/read-all` → `{"count": N}`.
//! - `DELETE /v1/notifications` (clear: hide everything so far, and mark it read) → `{"count": N}`.
//!
//! - `GET /v1/preferences` → the caller's effective preferences (their saved ones, else their
//!   role's defaults; shape in [`crate::preferences`]).
//! - `PUT /v1/preferences` with any subset of the preference fields → the new effective
//!   preferences, applied at once to the caller's open connections; or `400`
//!   `{"errors": [{"field": "quiet_hours.start", "message": "…"}…]}` naming every invalid field.
//!
//! Every change is also announced to the user's open WebSockets (`unread_count`).
//!
//! - `GET /v1/metrics/tenant` → the tenant's KPIs (CEO and managers only; [`crate::board`]).
//! - `GET /v1/metrics/sellers?window=1h|today|7d` (default `today`) → `{"window", "sellers":
//!   [<row>…]}`, the leaderboard best first, each row a seller's latest snapshot with its
//!   `position` and the window's response times as `response`. A CEO or manager gets every
//!   seller of the tenant; anyone else only their own row.
//! - `GET /v1/metrics/series` → the last 24 h of response times, per quarter hour, per seller
//!   and for the team (a seller: only their own line).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::audience::Viewer;
use crate::auth::{bearer_token, AuthError};
use crate::inbox::InboxError;
use crate::Shared;

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;

/// The caller, from a valid Bearer token.
pub(crate) struct Caller(pub(crate) Viewer);

impl FromRequestParts<Arc<Shared>> for Caller {
    type Rejection = AuthError;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers).ok_or(AuthError::MissingToken)??;
        Ok(Caller(shared.verifier.verify(token)?.viewer))
    }
}

/// An inbox failure, as the client sees it.
pub(crate) struct Unavailable(InboxError);

impl From<InboxError> for Unavailable {
    fn from(e: InboxError) -> Self {
        Unavailable(e)
    }
}

impl IntoResponse for Unavailable {
    fn into_response(self) -> Response {
        tracing::warn!(error = %self.0, "inbox request failed");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "5")],
            Json(json!({"error": "the notification inbox is unavailable; retry shortly"})),
        )
            .into_response()
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    limit: Option<u32>,
    before: Option<i64>,
}

pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Caller(viewer): Caller,
    Query(params): Query<ListParams>,
) -> Result<Response, Unavailable> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Ok((
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("limit must be between 1 and {MAX_LIMIT}")})),
        )
            .into_response());
    }
    let page = shared.inbox.list(&viewer, params.before, limit).await?;
    let next_before = (page.len() == limit as usize)
        .then(|| page.last().map(|s| s.sequence))
        .flatten();
    Ok(Json(json!({"notifications": page, "next_before": next_before})).into_response())
}

async fn count_response(shared: &Shared, viewer: &Viewer) -> Result<Response, Unavailable> {
    let count = shared.inbox.unread_count(viewer).await?;
    Ok(Json(json!({ "count": count })).into_response())
}

pub(crate) async fn count(
    State(shared): State<Arc<Shared>>,
    Caller(viewer): Caller,
) -> Result<Response, Unavailable> {
    count_response(&shared, &viewer).await
}

pub(crate) async fn read_one(
    State(shared): State<Arc<Shared>>,
    Caller(viewer): Caller,
    Path(id): Path<Uuid>,
) -> Result<Response, Unavailable> {
    if !shared.inbox.mark_read(&viewer, id).await? {
        return Ok((
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no notification {id} for you")})),
        )
            .into_response());
    }
    shared.read_state_changed(&viewer, None).await;
    count_response(&shared, &viewer).await
}

pub(crate) async fn read_all(
    State(shared): State<Arc<Shared>>,
    Caller(viewer): Caller,
) -> Result<Response, Unavailable> {
    shared.inbox.mark_all_read(&viewer).await?;
    shared.read_state_changed(&viewer, None).await;
    count_response(&shared, &viewer).await
}

pub(crate) async fn clear(
    State(shared): State<Arc<Shared>>,
    Caller(viewer): Caller,
) -> Result<Response, Unavailable> {
    shared.inbox.clear(&viewer).await?;
    shared.read_state_changed(&viewer, None).await;
    count_response(&shared, &viewer).await
}

pub(crate) async fn get_preferences(
    State(shared): State<Arc<Shared>>,
    Caller(viewer): Caller,
) -> Result<Response, Unavailable> {
    let prefs = shared.inbox.preferences(&viewer).await?;
    Ok(Json(prefs.to_json()).into_response())
}

pub(crate) async fn put_preferences(
    State(shared): State<Arc<Shared>>,
    Caller(viewer): Caller,
    body: Bytes,
) -> Result<Response, Unavailable> {
    let update: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return Ok((
                StatusCode::BAD_REQUEST,
                Json(json!({"errors": [{"field": "", "message": format!("invalid JSON: {e}")}]})),
            )
                .into_response())
        }
    };
    let current = shared.inbox.preferences(&viewer).await?;
    let prefs = match current.updated(&update) {
        Ok(prefs) => prefs,
        Err(errors) => {
            return Ok((StatusCode::BAD_REQUEST, Json(json!({ "errors": errors }))).into_response())
        }
    };
    shared.inbox.set_preferences(&viewer, &prefs).await?;
    shared.preferences_changed(&viewer, prefs.clone()).await;
    Ok(Json(prefs.to_json()).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct MetricsParams {
    window: Option<String>,
}

fn forbidden(message: &str) -> Response {
    (StatusCode::FORBIDDEN, Json(json!({ "error": message }))).into_response()
}

pub(crate) async fn metrics_tenant(
    State(shared): State<Arc<Shared>>,
    Caller(viewer): Caller,
) -> Response {
    if !crate::audience::sees_whole_tenant(viewer.role) {
        return forbidden("only a CEO or a manager sees the tenant's metrics; use /v1/metrics/sellers for your own");
    }
    let board = shared.board.lock().unwrap_or_else(|e| e.into_inner());
    Json(board.kpis(viewer.tenant_id)).into_response()
}

pub(crate) async fn metrics_sellers(
    State(shared): State<Arc<Shared>>,
    Caller(viewer): Caller,
    Query(params): Query<MetricsParams>,
) -> Response {
    use crate::board::Window;
    let window = match Window::parse(params.window.as_deref().unwrap_or("today")) {
        Ok(w) => w,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"errors": [{"field": "window", "message": e.to_string()}]})),
            )
                .into_response()
        }
    };
    let board = shared.board.lock().unwrap_or_else(|e| e.into_inner());
    let rows: Vec<serde_json::Value> = board
        .sellers(viewer.tenant_id)
        .into_iter()
        .enumerate()
        .filter(|(_, m)| {
            crate::audience::sees_whole_tenant(viewer.role) || m.seller_id == viewer.user_id
        })
        .map(|(i, m)| board.row(m, i, window))
        .collect();
    Json(json!({ "window": params.window.as_deref().unwrap_or("today"), "sellers": rows }))
        .into_response()
}

/// `GET /v1/metrics/series` → the 24 h response-time chart ([`crate::board::Series`]): the
/// tenant's for a CEO or manager, the caller's own line otherwise.
pub(crate) async fn metrics_series(
    State(shared): State<Arc<Shared>>,
    Caller(viewer): Caller,
) -> Response {
    let only = (!crate::audience::sees_whole_tenant(viewer.role)).then_some(viewer.user_id);
    let board = shared.board.lock().unwrap_or_else(|e| e.into_inner());
    Json(board.series(viewer.tenant_id, only)).into_response()
}
