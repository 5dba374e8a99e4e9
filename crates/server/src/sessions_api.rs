//! The agent endpoints (issue 12): a message to a session's latest turn becomes the next turn,
//! a session lists its turns, and a task's raw agent stream. Each handler parses, makes one
//! scheduler or store call, and maps the result.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use conductor_types::{ApiErrorBody, Session, SessionId, Task};
use serde::Deserialize;

use crate::api::parse_id;
use crate::body::read_json;
use crate::extract::Path;
use crate::{AppError, AppState};

/// Body of `POST /api/v1/tasks/{id}/messages`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// The user's next message to the agent (1 byte to 256 KiB, checked: 422 beyond).
    #[schema(min_length = 1)]
    pub content: String,
}

/// `POST /api/v1/tasks/{id}/messages`: the next turn of the task's session, as a new task.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/messages", tag = "agents", request_body = Message,
    params(("id" = String, Path, description = "the session's latest turn (a task id)")),
    responses((status = 201, description = "the next turn, queued: it resumes the agent's session in the same workspace", body = Task),
        (status = 400, description = "malformed JSON, bad query or id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 404, body = ApiErrorBody),
        (status = 409, description = "`turn_in_progress`: the turn has not finished; `not_latest_turn`: a later turn exists (the message names it)", body = ApiErrorBody),
        (status = 413, description = "body over the limit", body = ApiErrorBody),
        (status = 422, description = "`not_an_agent_task`, or `content` empty or too long", body = ApiErrorBody)))]
pub async fn send_message(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, AppError> {
    let id = parse_id(&id)?;
    let message: Message = read_json(body, state.body_limit()).await?;
    let task = state
        .scheduler()
        .continue_session(id, &message.content)
        .await?;
    let location = format!("/api/v1/tasks/{}", task.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(task),
    )
        .into_response())
}

/// `GET /api/v1/sessions/{id}`: an agent session, its turns (oldest first) and their usage.
#[utoipa::path(get, path = "/api/v1/sessions/{id}", tag = "agents",
    params(("id" = String, Path, description = "session id (ses_…)")),
    responses((status = 200, body = Session), (status = 400, description = "malformed JSON, bad query or id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn get_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Session>, AppError> {
    let id: SessionId =
        id.parse().map_err(
            |e: conductor_types::ParseSessionIdError| AppError::BadRequest {
                code: "invalid_id",
                message: e.to_string(),
            },
        )?;
    Ok(Json(state.scheduler().session(&id).await?))
}

/// `GET /api/v1/tasks/{id}/agent-stream`: the agent CLI's own stream of an agent task, one JSON
/// object a line, as it ran so far (secrets and the task's token redacted).
#[utoipa::path(get, path = "/api/v1/tasks/{id}/agent-stream", tag = "agents",
    params(("id" = String, Path, description = "task id (UUID)")),
    responses((status = 200, description = "JSON lines", content_type = "application/x-ndjson", body = String),
        (status = 400, description = "malformed JSON, bad query or id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 404, description = "no such task, or not an agent task", body = ApiErrorBody)))]
pub async fn agent_stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let id = parse_id(&id)?;
    let task = state.store().get_task(id).await?;
    let runtime = state.scheduler().config().agents.clone();
    let (Some(_), Some(runtime)) = (&task.spec.agent, runtime) else {
        return Err(AppError::NotFound(format!(
            "task {id} has no agent stream: it is not an agent task"
        )));
    };
    let text = match tokio::fs::read(runtime.stream_file(id)).await {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => {
            return Err(AppError::Internal(format!(
                "reading an agent stream: {error}"
            )))
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response())
}
