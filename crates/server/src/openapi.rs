//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations and the
//! schemas of the types they accept and return (`conductor-types` with its `openapi` feature).

use std::sync::OnceLock;

use serde_json::{json, Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{api, feed, files, gitdiff, sessions_api, workspaces};

/// The whole API.
#[allow(deprecated)] // lists GET /api/v1/agents, marked deprecated
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Conductor",
        description = "Runs shell commands and AI coding agents in sandboxes as durable tasks. Every endpoint except /health, /ready and /live needs `Authorization: Bearer <token>`. Errors are `{ \"error\": { \"code\", \"message\" } }`."
    ),
    paths(
        api::create_task,
        api::create_task_alias,
        api::list_tasks,
        api::get_task,
        api::cancel_task,
        api::delete_task,
        api::logs,
        api::events,
        feed::feed,
        gitdiff::task_diff,
        sessions_api::send_message,
        sessions_api::get_session,
        sessions_api::agent_stream,
        api::slots,
        api::agents,
        api::create_token,
        api::list_tokens,
        api::revoke_token,
        workspaces::create_workspace,
        workspaces::list_workspaces,
        workspaces::get_workspace,
        workspaces::delete_workspace,
        workspaces::create_snapshot,
        workspaces::list_snapshots,
        workspaces::restore_snapshot,
        workspaces::diff_snapshot,
        workspaces::delete_snapshot,
        workspaces::export_snapshot,
        workspaces::import_snapshot,
        files::get_file,
        files::put_file,
        files::delete_file,
        api::metrics,
        api::health,
        api::ready,
        api::live,
        api::openapi,
    ),
    // The events stream's `data:` lines: documented here, since an SSE body is text.
    components(schemas(conductor_types::TaskEvent)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Declares the bearer scheme the `security` requirement names.
#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// A task id (any spelling `uuid` parses with hyphens).
/// A session id: `ses_` and 32 hex digits.
const SESSION_ID: &str = "^ses_[0-9a-f]{32}$";
const TASK_ID: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
/// A snapshot id: lowercase hyphenated, as it is a file name.
const SNAPSHOT_ID: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
/// A workspace's id (`ws_` and 32 hex digits) or name.
const WORKSPACE: &str = "^(ws_[0-9a-f]{32}|[A-Za-z0-9_-][A-Za-z0-9._-]{0,63})$";
/// A token's id.
const TOKEN_ID: &str = "^tok_[0-9a-f]{12}$";

/// The document served at `/api/v1/openapi.json`: [`ApiDoc`] completed with what every route
/// shares (see [`complete`]).
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        complete(&mut document);
        document
    })
}

/// Adds to every operation the answers the layers around the handlers give — 400 (a path
/// parameter, query or body that does not parse), 401 (no or a bad token), 404 (no such id),
/// 413 (a body over the limit), 431 (headers over hyper's limit; no body) — and the patterns of
/// the ids in paths, so that the document is exactly what the server accepts and answers.
fn complete(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            complete_operation(path, operation);
        }
        // An empty body writes an empty file: the file upload's body may be left out. Its bytes
        // are any bytes (a file, or a tar): a binary string, not a JSON array of numbers.
        if path == "/api/v1/workspaces/{id}/files/{path}" {
            if let Some(body) = item
                .get_mut("put")
                .and_then(|put| put.get_mut("requestBody"))
            {
                body["required"] = json!(false);
                if let Some(content) = body.get_mut("content").and_then(Value::as_object_mut) {
                    for media in content.values_mut() {
                        media["schema"] = json!({ "type": "string", "format": "binary" });
                    }
                }
            }
        }
    }
}

/// One event of a `text/event-stream` answer, as OpenAPI 3.1 tools read `schema` there (one
/// parsed event: `data`, `event`, `id`, `retry`); `data` is a TaskEvent as JSON.
fn sse_event_schema() -> Value {
    json!({
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": { "$ref": "#/components/schemas/TaskEvent" }
            },
            "event": { "type": "string" },
            "id": { "type": "string" },
            "retry": { "type": "integer" }
        }
    })
}

/// Every `text/event-stream` answer of `responses` described per event.
fn describe_streams(responses: &mut serde_json::Map<String, Value>) {
    for response in responses.values_mut() {
        if let Some(stream) = response.pointer_mut("/content/text~1event-stream") {
            stream["schema"] = sse_event_schema();
        }
    }
}

fn complete_operation(path: &str, operation: &mut Value) {
    let public = operation.get("security") == Some(&json!([{}]));
    let has_body = operation.get("requestBody").is_some();
    if let Some(parameters) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    {
        for parameter in parameters.iter_mut() {
            constrain_parameter(path, parameter);
            not_null(parameter);
        }
    }
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    describe_streams(responses);
    if !public {
        add_error(
            responses,
            "400",
            "a path parameter, query or body that does not parse",
        );
        add_error(responses, "401", "missing or invalid token");
    }
    if path.contains('{') {
        add_error(responses, "404", "no such resource");
    }
    if has_body {
        add_error(responses, "413", "body over the limit");
    }
    responses.entry("431").or_insert_with(|| {
        json!({ "description": "request headers too large (answered before routing, without a body)" })
    });
}

fn add_error(responses: &mut Map<String, Value>, status: &str, description: &str) {
    responses.entry(status).or_insert_with(|| {
        json!({
            "description": description,
            "content": { "application/json": {
                "schema": { "$ref": "#/components/schemas/ApiErrorBody" }
            } }
        })
    });
}

/// The pattern of an id in a path, by route and parameter name.
/// `If-Match` / `If-None-Match`: empty (read as absent), `*`, or entity tags (`"…"` or `W/"…"`,
/// visible ASCII without quotes or commas inside) separated by commas, spaces and tabs around —
/// exactly what `precondition.rs` reads; anything else is a 400.
const ENTITY_TAGS: &str = r#"^[ \t]*(\*|(W/)?"[\x21\x23-\x2b\x2d-\x7e]*"([ \t]*,[ \t]*(W/)?"[\x21\x23-\x2b\x2d-\x7e]*")*)?[ \t]*$"#;

fn constrain_parameter(path: &str, parameter: &mut Value) {
    if parameter.get("in") == Some(&json!("header")) {
        let name = parameter.get("name").and_then(Value::as_str);
        if matches!(name, Some("If-Match" | "If-None-Match")) {
            if let Some(schema) = parameter.get_mut("schema").and_then(Value::as_object_mut) {
                schema.insert("pattern".to_owned(), json!(ENTITY_TAGS));
            }
        }
        return;
    }
    if parameter.get("in") != Some(&json!("path")) {
        return;
    }
    let pattern = match parameter.get("name").and_then(Value::as_str) {
        Some("id") if path.starts_with("/api/v1/tasks/") => TASK_ID,
        Some("id") if path.starts_with("/api/v1/workspaces/") => WORKSPACE,
        Some("id") if path.starts_with("/api/v1/tokens/") => TOKEN_ID,
        Some("id") if path.starts_with("/api/v1/sessions/") => SESSION_ID,
        Some("sid") => SNAPSHOT_ID,
        _ => return,
    };
    if let Some(schema) = parameter.get_mut("schema").and_then(Value::as_object_mut) {
        schema.insert("pattern".to_owned(), json!(pattern));
    }
}

/// A parameter is present or absent, never JSON `null`: utoipa writes `Option<T>` as
/// `[T, "null"]`, which would invite the text `null`.
fn not_null(parameter: &mut Value) {
    let Some(schema) = parameter.get_mut("schema").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(types) = schema.get("type").and_then(Value::as_array) {
        let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        let kept = match kept.as_slice() {
            [one] => one.clone(),
            _ => Value::Array(kept),
        };
        schema.insert("type".to_owned(), kept);
    }
}
