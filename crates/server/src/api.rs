//! HTTP handlers. They only parse and translate: a request becomes a call on core, the store or
//! the scheduler, and every failure becomes an [`AppError`].

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};

use crate::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use conductor_core::{can_retry, ExecutorError, TaskQuery};
use conductor_types::{
    ApiErrorBody, CreatedToken, EventId, Slot, Task, TaskEvent, TaskEventKind, TaskId, TaskPage,
    TaskRequest, TaskStatus, Timestamp, TokenInfo,
};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{self, Caller};
use crate::body::read_json;
use crate::{AppError, AppState};

/// Events read from the store per query while streaming.
const EVENT_BATCH: u32 = 500;
/// How long a follower waits for a wake-up before checking the task again.
const FOLLOW_RECHECK: Duration = Duration::from_secs(1);

pub(crate) fn parse_id(text: &str) -> Result<TaskId, AppError> {
    text.parse()
        .map_err(|e: conductor_types::ParseIdError| AppError::BadRequest {
            code: "invalid_id",
            message: e.to_string(),
        })
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, AppError> {
    query
        .map(|Query(q)| q)
        .map_err(|rejection| AppError::BadRequest {
            code: "invalid_query",
            message: rejection.body_text(),
        })
}

/// `POST /api/v1/tasks`: validates, commits, then answers 201 with the task.
#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks", request_body = TaskRequest,
    responses((status = 201, description = "accepted: committed before this answer", body = Task), (status = 400, description = "malformed JSON, bad query or id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody),
        (status = 403, description = "`environments` given with a token that is not an admin's (their builds run as root)", body = ApiErrorBody),
        (status = 409, description = "`environment_conflict`: an environment defined in `environments` has the name of an existing one with other content", body = ApiErrorBody),
        (status = 413, description = "body over the limit", body = ApiErrorBody),
        (status = 422, description = "a field is invalid, unknown or not supported yet (the message names it); `invalid_dockerfile`: a Dockerfile in `environments` outside the supported subset (the message names the line); `repository_not_allowed`: `git.repository` uses a transport other than https, http, git or ssh, or is a local path outside `[git] allow_local`", body = ApiErrorBody)))]
pub async fn create_task(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Result<Response, AppError> {
    let request: TaskRequest = read_json(body, state.body_limit()).await?;
    let task = state.scheduler().submit(request, &caller.0).await?;
    let location = format!("/api/v1/tasks/{}", task.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(task),
    )
        .into_response())
}

/// `POST /tasks`: the same as `POST /api/v1/tasks`, where seed 001's curl examples send it.
#[utoipa::path(post, path = "/tasks", tag = "tasks", request_body = TaskRequest,
    responses((status = 201, description = "as POST /api/v1/tasks", body = Task), (status = 400, description = "as POST /api/v1/tasks", body = ApiErrorBody), (status = 401, description = "as POST /api/v1/tasks", body = ApiErrorBody),
        (status = 403, description = "as POST /api/v1/tasks", body = ApiErrorBody), (status = 409, description = "as POST /api/v1/tasks", body = ApiErrorBody),
        (status = 413, description = "as POST /api/v1/tasks", body = ApiErrorBody), (status = 422, description = "as POST /api/v1/tasks", body = ApiErrorBody)))]
pub async fn create_task_alias(
    state: State<AppState>,
    caller: Extension<Caller>,
    body: Body,
) -> Result<Response, AppError> {
    create_task(state, caller, body).await
}

/// Query of `GET /api/v1/tasks`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only tasks with this status.
    #[param(value_type = Option<TaskStatus>)]
    status: Option<String>,
    /// Only tasks with this label: `key` or `key=value`.
    label: Option<String>,
    /// Page size (1–500, default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    cursor: Option<String>,
}

/// `GET /api/v1/tasks?status=&label=key[=value]&limit=&cursor=`.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", params(ListQuery),
    responses((status = 200, description = "newest first", body = TaskPage), (status = 400, description = "malformed JSON, bad query or id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody)))]
pub async fn list_tasks(
    State(state): State<AppState>,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<TaskPage>, AppError> {
    let params = query(params)?;
    let status = params
        .status
        .as_deref()
        .map(str::parse::<TaskStatus>)
        .transpose()
        .map_err(|e| AppError::BadRequest {
            code: "invalid_query",
            message: format!("status: {e}"),
        })?;
    if let Some(limit) = params.limit.filter(|l| !(1..=500).contains(l)) {
        return Err(AppError::BadRequest {
            code: "invalid_query",
            message: format!("limit: {limit} is not between 1 and 500"),
        });
    }
    if let Some(cursor) = params.cursor.as_deref().filter(|c| !is_cursor(c)) {
        return Err(AppError::BadRequest {
            code: "invalid_cursor",
            message: format!("cursor {cursor:?} is not a next_cursor of a previous page"),
        });
    }
    let label = params.label.map(|label| match label.split_once('=') {
        Some((key, value)) => (key.to_owned(), Some(value.to_owned())),
        None => (label, None),
    });
    let query = TaskQuery {
        status,
        label,
        limit: params.limit.unwrap_or(50),
        cursor: params.cursor,
    };
    Ok(Json(state.store().list_tasks(&query).await?))
}

/// A cursor as `next_cursor` writes it: a positive number of at most 18 digits.
fn is_cursor(text: &str) -> bool {
    (1..=18).contains(&text.len())
        && !text.starts_with('0')
        && text.bytes().all(|b| b.is_ascii_digit())
}

/// `GET /api/v1/tasks/{id}`.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path, description = "task id (UUID)")),
    responses((status = 200, body = Task), (status = 400, description = "malformed JSON, bad query or id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn get_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Task>, AppError> {
    Ok(Json(state.store().get_task(parse_id(&id)?).await?))
}

/// `POST /api/v1/tasks/{id}/cancel`: 409 when the task already finished.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/cancel", tag = "tasks", params(("id" = String, Path, description = "task id (UUID)")),
    responses((status = 200, description = "cancelled", body = Task), (status = 400, description = "malformed JSON, bad query or id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 404, body = ApiErrorBody),
        (status = 409, description = "the task already finished", body = ApiErrorBody)))]
pub async fn cancel_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Task>, AppError> {
    let id = parse_id(&id)?;
    Ok(Json(state.scheduler().cancel_task(id).await?))
}

/// `DELETE /api/v1/tasks/{id}`: 204; 409 while the task is queued or running.
#[utoipa::path(delete, path = "/api/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path, description = "task id (UUID)")),
    responses((status = 204, description = "deleted with its results and events"), (status = 400, description = "malformed JSON, bad query or id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 404, body = ApiErrorBody),
        (status = 409, description = "the task is queued or running", body = ApiErrorBody)))]
pub async fn delete_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let id = parse_id(&id)?;
    state.scheduler().delete_task(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /api/v1/tasks/{id}/logs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Keep streaming until the task is over.
    follow: Option<bool>,
}

/// Whether a task will produce no more events: finished, and no retry will requeue it.
fn is_over(task: &Task) -> bool {
    task.state.status.is_finished() && !can_retry(&task.state, task.spec.retries)
}

fn output_text(events: &[TaskEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match &event.kind {
            TaskEventKind::Output { text, .. } | TaskEventKind::EnvironmentBuild { text } => {
                Some(text.as_str())
            }
            _ => None,
        })
        .collect()
}

/// `GET /api/v1/tasks/{id}/logs[?follow=true]`: the output as text; with `follow`, streamed until
/// the task is over.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/logs", tag = "tasks", params(("id" = String, Path, description = "task id (UUID)"), LogsQuery),
    responses((status = 200, description = "the output (secrets redacted)", body = String, content_type = "text/plain"), (status = 400, description = "malformed JSON, bad query or id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let id = parse_id(&id)?;
    let follow = query(params)?.follow.unwrap_or(false);
    state.store().get_task(id).await?;
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !follow {
        let mut text = String::new();
        let mut after = None;
        loop {
            let events = state.store().events(id, after, EVENT_BATCH).await?;
            let Some(last) = events.last() else { break };
            after = Some(last.id);
            text.push_str(&output_text(&events));
        }
        return Ok((text_plain, text).into_response());
    }
    let stream = follow_events(state, id, None);
    let chunks = futures_util::StreamExt::filter_map(stream, |events| async move {
        let text = output_text(&events);
        (!text.is_empty()).then_some(Ok::<_, Infallible>(text))
    });
    Ok((text_plain, Body::from_stream(chunks)).into_response())
}

/// Batches of a task's events after `after`, until the task is over (or the store fails).
fn follow_events(
    state: AppState,
    id: TaskId,
    after: Option<EventId>,
) -> impl futures_util::Stream<Item = Vec<TaskEvent>> {
    let receiver = state.events().subscribe();
    futures_util::stream::unfold(
        (state, receiver, after, false, false),
        move |(state, mut receiver, after, over, caught_up)| async move {
            if over {
                return None;
            }
            if caught_up {
                // The last read took everything stored before it (the receiver was marked
                // before it): nothing new can be read until the next bump. Reading again at
                // once cost three queries per bump, on the CPU the task's start needs.
                let _ = tokio::time::timeout(FOLLOW_RECHECK, receiver.changed()).await;
            }
            loop {
                receiver.mark_unchanged();
                let events = match state.store().events(id, after, EVENT_BATCH).await {
                    Ok(events) => events,
                    Err(error) => {
                        tracing::warn!(task = %id, %error, "following events failed");
                        return None;
                    }
                };
                if let Some(last) = events.last() {
                    let next = Some(last.id);
                    // Unless the page was full or the task may be over (then look at once).
                    let caught_up = events.len() < EVENT_BATCH as usize
                        && !events.iter().any(|event| {
                            matches!(&event.kind, TaskEventKind::State { status, .. }
                                if status.is_finished())
                        });
                    return Some((events, (state, receiver, next, false, caught_up)));
                }
                match state.store().get_task(id).await {
                    Ok(task) if is_over(&task) => {
                        // One last read: events stored between the two queries.
                        let rest = state.store().events(id, after, EVENT_BATCH).await.ok()?;
                        return (!rest.is_empty())
                            .then_some((rest, (state, receiver, after, true, false)));
                    }
                    Ok(_) => {}
                    Err(_) => return None,
                }
                let _ = tokio::time::timeout(FOLLOW_RECHECK, receiver.changed()).await;
            }
        },
    )
}

/// The `Last-Event-ID` a reconnecting stream sends (it wins over `?after=`); 400 when it is
/// not an event id.
pub(crate) fn last_event_id(headers: &HeaderMap) -> Result<Option<EventId>, AppError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    text.trim()
        .parse()
        .map(Some)
        .map_err(|_| AppError::BadRequest {
            code: "invalid_header",
            message: format!("Last-Event-ID {text:?} is not an event id"),
        })
}

/// Query of `GET /api/v1/tasks/{id}/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this id (as `Last-Event-ID`).
    #[param(value_type = Option<i64>)]
    after: Option<EventId>,
}

/// `GET /api/v1/tasks/{id}/events`: Server-Sent Events (`id:` is the event id; resume with
/// `Last-Event-ID` or `?after=`), ending when the task is over.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/events", tag = "tasks",
    params(("id" = String, Path, description = "task id (UUID)"), ("Last-Event-ID" = Option<i64>, Header, description = "resume after this event"), EventsQuery),
    responses((status = 200, description = "Server-Sent Events: `event:` is the TaskEvent's type, `id:` its id, `data:` the TaskEvent as JSON (components/schemas/TaskEvent)", body = String, content_type = "text/event-stream"), (status = 400, description = "malformed JSON, bad query or id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let id = parse_id(&id)?;
    let after = query(params)?.after;
    let after = last_event_id(&headers)?.or(after);
    state.store().get_task(id).await?;
    let batches = follow_events(state, id, after);
    let stream = futures_util::StreamExt::flat_map(batches, |events| {
        futures_util::stream::iter(events.into_iter().map(|event| {
            let name = event.kind.name();
            let sse = Event::default()
                .id(event.id.to_string())
                .event(name)
                .json_data(&event)
                .unwrap_or_else(|_| Event::default().comment("unencodable event"));
            Ok::<_, Infallible>(sse)
        }))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `GET /api/v1/slots`: the execution slots and what each is doing.
#[utoipa::path(get, path = "/api/v1/slots", tag = "slots", responses((status = 200, body = Vec<Slot>), (status = 400, description = "malformed JSON, bad query or id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody)))]
pub async fn slots(State(state): State<AppState>) -> Result<Json<Vec<Slot>>, AppError> {
    Ok(Json(state.scheduler().slots()))
}

/// `GET /api/v1/agents`: the old path of [`slots`], kept one release (deprecated in the
/// OpenAPI document too; "agent" now means an AI coding agent).
#[deprecated(note = "GET /api/v1/slots")]
#[utoipa::path(get, path = "/api/v1/agents", tag = "slots", responses((status = 200, body = Vec<Slot>), (status = 400, description = "malformed JSON, bad query or id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody)))]
pub async fn agents(state: State<AppState>) -> Result<Json<Vec<Slot>>, AppError> {
    slots(state).await
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What the token is for (1–64 characters).
    name: String,
    /// May manage tokens.
    #[serde(default)]
    admin: bool,
}

/// `POST /api/v1/tokens` (admin): 201 with the secret, shown this once.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewToken,
    responses((status = 201, description = "the secret, shown this once", body = CreatedToken), (status = 400, description = "malformed JSON, bad query or id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody),
        (status = 403, description = "needs an admin token", body = ApiErrorBody), (status = 422, body = ApiErrorBody)))]
pub async fn create_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Result<(StatusCode, Json<CreatedToken>), AppError> {
    caller.require_admin()?;
    let new: NewToken = read_json(body, state.body_limit()).await?;
    let name = new.name.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(AppError::InvalidField {
            field: "name".to_owned(),
            message: "must be 1 to 64 characters without control characters".to_owned(),
        });
    }
    let created = auth::create_token(state.store().as_ref(), name, new.admin).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /api/v1/tokens` (admin).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = Vec<TokenInfo>), (status = 400, description = "malformed JSON, bad query or id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 403, body = ApiErrorBody)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<TokenInfo>>, AppError> {
    caller.require_admin()?;
    Ok(Json(state.store().tokens().await?))
}

/// `DELETE /api/v1/tokens/{id}` (admin): 204.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path, description = "token id (tok_…)")),
    responses((status = 204, description = "revoked"), (status = 400, description = "malformed JSON, bad query or id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    caller.require_admin()?;
    if state.store().revoke_token(&id, Timestamp::now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound(format!("token {id} not found")))
    }
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"), (status = 400, description = "malformed JSON, bad query or id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody)))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, AppError> {
    let counts = state.store().count_by_status().await?;
    let scheduler = state.scheduler();
    let mut text = scheduler.metrics().render(&counts, scheduler.running());
    if let Some(agents) = &scheduler.config().agents {
        // `conductor_llm_*`: the gateway's tokens, requests and latency.
        agents.gateway.render_metrics(&mut text);
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `GET /health`: the database and every environment's executor. 200 `ok`; 200 `degraded`
/// when some environments cannot run (or run on their fallback); 503 `unhealthy` when the
/// database fails or no environment can run.
#[utoipa::path(get, path = "/health", tag = "operations", security(()),
    responses((status = 200, description = "`ok`, or `degraded`: some environment's executor is down (each check says why)"), (status = 503, description = "the database fails or no executor can run")))]
pub async fn health(State(state): State<AppState>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut healthy = true;
    let database = match state.store().ping().await {
        Ok(()) => "ok".to_owned(),
        Err(error) => {
            healthy = false;
            error.to_string()
        }
    };
    checks.insert("database".into(), database.into());
    // An executor that is down (a daemon stopped) makes only its environment's tasks fail:
    // the server is degraded, not down, unless no environment can run anything.
    let scheduler = state.scheduler();
    let (mut running, mut down) = (0, 0);
    for environment in scheduler.environments() {
        if let Some(executor) = scheduler.executor(environment) {
            let status = match executor.health_check().await {
                Ok(()) => {
                    running += 1;
                    "ok".to_owned()
                }
                Err(error @ ExecutorError::Degraded { .. }) => {
                    running += 1;
                    down += 1;
                    error.to_string()
                }
                Err(error) => {
                    down += 1;
                    error.to_string()
                }
            };
            checks.insert(format!("executor:{environment}"), status.into());
        }
    }
    let (code, status) = if !healthy || running == 0 {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
    } else if down > 0 {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ok")
    };
    (code, Json(json!({ "status": status, "checks": checks }))).into_response()
}

/// `GET /ready`: the database answers and the server is not shutting down.
#[utoipa::path(get, path = "/ready", tag = "operations", security(()),
    responses((status = 200, description = "ready for traffic"), (status = 503, body = ApiErrorBody)))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    if state.scheduler().stopping() {
        return Err(AppError::Unavailable(
            "the server is shutting down".to_owned(),
        ));
    }
    state
        .store()
        .ping()
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?;
    Ok(Json(json!({ "status": "ready" })))
}

/// `GET /live`: the process answers.
#[utoipa::path(get, path = "/live", tag = "operations", security(()), responses((status = 200, description = "the process answers")))]
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

/// `GET /api/v1/openapi.json`: the OpenAPI 3.1 document, generated from these handlers and the
/// types they accept and return.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", responses((status = 200, description = "this document")))]
pub async fn openapi() -> Json<&'static serde_json::Value> {
    Json(crate::openapi::document())
}

/// A known path with a method it does not take.
pub async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed("this endpoint does not take that method".to_owned())
}

/// Any other path.
pub async fn not_found() -> AppError {
    AppError::NotFound("no such endpoint: the API is under /api/v1".to_owned())
}
