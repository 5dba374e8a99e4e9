//! `GET /api/v1/events`: the list-level stream of task changes — every task's `state` events
//! (queued, running, succeeded, …) as Server-Sent Events, for a view of many tasks that stays
//! current without polling. Like a task's own stream it carries nothing between wake-ups: after
//! each bump of the event bus it reads the store after its cursor, so a reconnect with
//! `Last-Event-ID` misses nothing and a slow client holds no memory. Without a cursor it starts
//! at the newest event (what happens from now on); `?after=0` replays from the start. It never
//! ends by itself.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use conductor_types::{ApiErrorBody, EventId, TaskEvent};
use serde::Deserialize;

use crate::{AppError, AppState};

/// Events read from the store at once.
const BATCH: u32 = 500;
/// How long a caught-up stream waits for a bump before it reads again anyway.
const RECHECK: Duration = Duration::from_secs(1);

/// Query of `GET /api/v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// Only events after this id (as `Last-Event-ID`; 0: from the start). Default: the newest.
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<EventId>,
}

/// `GET /api/v1/events`: every task's `state` events as Server-Sent Events.
#[utoipa::path(get, path = "/api/v1/events", tag = "tasks",
    params(("Last-Event-ID" = Option<i64>, Header, description = "resume after this event"), FeedQuery),
    responses((status = 200, description = "Server-Sent Events, never ending: `event:` is `state`, `id:` the event id, `data:` the TaskEvent as JSON (components/schemas/TaskEvent) with its task_id", body = String, content_type = "text/event-stream"),
        (status = 400, description = "bad query or Last-Event-ID", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody)))]
pub async fn feed(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let query = params
        .map_err(|e| AppError::BadRequest {
            code: "invalid_query",
            message: e.body_text(),
        })?
        .0;
    let after = crate::api::last_event_id(&headers)?.or(query.after);
    let start = match after {
        Some(id) if id >= 0 => id,
        Some(id) => {
            return Err(AppError::BadRequest {
                code: "invalid_query",
                message: format!("after: {id} is not an event id (0 or more)"),
            })
        }
        None => state.store().last_event_id().await?,
    };
    let stream = futures_util::StreamExt::flat_map(batches(state, start), |events| {
        futures_util::stream::iter(
            events
                .into_iter()
                .map(|event| Ok::<_, Infallible>(sse(&event))),
        )
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn sse(event: &TaskEvent) -> Event {
    Event::default()
        .id(event.id.to_string())
        .event(event.kind.name())
        .json_data(event)
        .unwrap_or_else(|_| Event::default().comment("unencodable event"))
}

/// Batches of `state` events after `after`, for as long as the client reads (or the store
/// fails).
fn batches(state: AppState, after: EventId) -> impl futures_util::Stream<Item = Vec<TaskEvent>> {
    let receiver = state.events().subscribe();
    futures_util::stream::unfold(
        (state, receiver, after),
        |(state, mut receiver, after)| async move {
            loop {
                // Marked seen before the read: a bump during it wakes the next wait.
                receiver.borrow_and_update();
                let events = state.store().state_events(after, BATCH).await.ok()?;
                if let Some(last) = events.last() {
                    let next = last.id;
                    return Some((events, (state, receiver, next)));
                }
                let _ = tokio::time::timeout(RECHECK, receiver.changed()).await;
            }
        },
    )
}
