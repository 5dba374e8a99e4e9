//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations and the
//! schemas of the types they accept and return (`conductor-types` with its `openapi` feature).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{api, files, gitdiff, workspaces};

/// The whole API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Conductor",
        description = "Runs shell commands in sandboxes as durable tasks. Every endpoint except /health, /ready and /live needs `Authorization: Bearer <token>`. Errors are `{ \"error\": { \"code\", \"message\" } }`."
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
        gitdiff::task_diff,
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
