//! Workspaces and their snapshots over HTTP: the handlers. What a named workspace is (record,
//! directory, quota) lives in [`domain`] and [`quota`], which the scheduler and `serve` use too;
//! the streaming bodies in `crate::stream`.
//! Workspaces are records in the store with a
//! directory `<workspace_root>/named/<name>`; snapshots are the `conductor-workspace` store at
//! `snapshot_root`, one call per endpoint, run on the blocking pool. Restore and delete hold the
//! workspace ([`crate::Scheduler::reserve_workspace`]) so no task starts in it meanwhile, and
//! are refused (409) while a task runs in it.
//!
//! A snapshot belongs to the workspace it was taken of. One whose workspace does not exist here
//! (imported from another machine, or its workspace deleted) may be used under any workspace,
//! so it can be restored into one.
//!
//! Every workspace records its owner: the id of the token that created it, by
//! `POST /api/v1/workspaces` or by submitting the first task that named it.
//!
//! A workspace created with a `disk` quota is a filesystem of its own: an ext4 image
//! `<workspace_root>/named-quota/<name>.img` loop-mounted on its directory
//! (`conductor_workspace::QuotaFs`). It is mounted when created, again at server start and
//! before any use (mounting is idempotent), unmounted at a graceful stop, and destroyed with
//! the workspace. A task in it may ask for `resources.disk` up to that quota; what is enforced
//! is the workspace's quota, which all its tasks share.

pub(crate) mod domain;
pub(crate) mod quota;

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};

use crate::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use conductor_core::validate_workspace_name;
use conductor_types::{ApiErrorBody, Timestamp, Workspace, WorkspaceId, WorkspaceRequest};
use conductor_workspace::{
    self as cw, ChangeKind, CleanupPolicy, DiffAgainst, EntryType, RelPath, SnapshotId,
    SnapshotInfo, SnapshotOptions,
};
use serde::{Deserialize, Serialize};

use self::domain::new_workspace;
use crate::auth::Caller;
use crate::body::{decode_json, read_json};
use crate::stream::{blocking, stream_body, with_body_reader};
use crate::{AppError, AppState};

/// A snapshot as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SnapshotView {
    /// Its id (a UUID).
    pub id: String,
    /// The name given at creation.
    pub name: String,
    /// The id of the workspace it was taken of.
    pub workspace: String,
    /// When it was taken.
    pub created_at: Timestamp,
    /// Regular files.
    pub files: u64,
    /// Directories (the root not included).
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Sum of the files' sizes.
    pub bytes: u64,
}

impl From<&SnapshotInfo> for SnapshotView {
    fn from(info: &SnapshotInfo) -> Self {
        Self {
            id: info.id.to_string(),
            name: info.name.clone(),
            workspace: info.workspace.as_str().to_owned(),
            created_at: info.created_at,
            files: info.summary.files,
            dirs: info.summary.dirs,
            symlinks: info.summary.symlinks,
            bytes: info.summary.bytes,
        }
    }
}

/// `POST /api/v1/workspaces/{id}/snapshots` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// 1 to 256 bytes without control characters (`before-deployment`).
    pub name: String,
}

/// `POST …/snapshots/{sid}/restore` body (may be empty).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// The workspace (id or name) to restore into; the snapshot's own workspace when absent.
    #[serde(default)]
    pub target: Option<String>,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RestoreView {
    /// The snapshot restored.
    pub snapshot: String,
    /// The workspace restored into.
    pub workspace: WorkspaceId,
    /// Regular files written.
    pub files: u64,
    /// Symlinks written.
    pub symlinks: u64,
    /// Directories created.
    pub dirs_created: u64,
    /// Entries removed because the snapshot does not have them.
    pub removed: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
}

/// One side of a changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EntryView {
    /// `file`, `dir` or `symlink`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub entry_type: EntryType,
    /// Permission bits.
    pub mode: u32,
    /// Length, for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChangeView {
    /// The path in the workspace (a path that is not UTF-8 is `{"hex": "…"}`).
    #[schema(value_type = String)]
    pub path: RelPath,
    /// `added`, `removed`, `modified`, `mode_changed` or `type_changed`.
    #[schema(value_type = String)]
    pub kind: ChangeKind,
    /// The older side, unless added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<EntryView>,
    /// The newer side, unless removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<EntryView>,
}

/// `GET …/snapshots/{sid}/diff` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiffView {
    /// The older side: the snapshot.
    pub snapshot: String,
    /// The newer side: another snapshot's id, or `current` (the workspace now).
    pub against: String,
    /// Changes from `snapshot` to `against`, sorted by path.
    pub changes: Vec<ChangeView>,
}

fn entry_view(meta: cw::EntryMeta) -> EntryView {
    EntryView {
        entry_type: meta.entry_type,
        mode: meta.mode,
        size: meta.size,
    }
}

/// Query of `GET …/snapshots/{sid}/diff`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// Another snapshot's id, or `current` (the default): the workspace as it is now.
    against: Option<String>,
}

/// Which operation a snapshot-store error came from (some errors mean different things).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Snapshot,
    Import,
    Other,
}

fn store_error(op: Op, error: cw::Error) -> AppError {
    use cw::Error as E;
    match error {
        E::InvalidName(_) => AppError::InvalidField {
            field: "name".to_owned(),
            message: error.to_string(),
        },
        E::SnapshotNotFound(_) => AppError::NotFound(error.to_string()),
        E::SnapshotExists(_)
        | E::SpecialFile { .. }
        | E::Unstable { .. }
        | E::Changed { .. }
        | E::TooDeep { .. } => AppError::Conflict(error.to_string()),
        E::UnsafeArchivePath(_)
        | E::Archive(_)
        | E::CorruptManifest { .. }
        | E::CorruptBlob { .. }
        | E::BlobSize { .. }
        | E::MissingBlob(_)
        | E::ImportTooLarge { .. }
            if op == Op::Import =>
        {
            AppError::InvalidField {
                field: "body".to_owned(),
                message: error.to_string(),
            }
        }
        E::NotADirectory(_) if op == Op::Snapshot => AppError::Conflict(error.to_string()),
        other => AppError::Internal(other.to_string()),
    }
}

async fn snapshots(state: &AppState) -> Result<Arc<cw::SnapshotStore>, AppError> {
    let root = state.scheduler().config().snapshot_root.clone();
    state
        .snapshot_store()
        .get_or_try_init(|| async move {
            blocking(move || cw::SnapshotStore::open(&root))
                .await?
                .map(Arc::new)
                .map_err(|e| AppError::Internal(format!("opening the snapshot store: {e}")))
        })
        .await
        .cloned()
}

/// The workspace with this id or name (404 when none).
async fn workspace(state: &AppState, id_or_name: &str) -> Result<Workspace, AppError> {
    state
        .store()
        .find_workspace(id_or_name)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("workspace {id_or_name} not found")))
}

fn snapshot_workspace(workspace: &Workspace) -> Result<cw::WorkspaceId, AppError> {
    cw::WorkspaceId::new(workspace.id.as_str()).map_err(|e| AppError::Internal(e.to_string()))
}

fn parse_snapshot_id(text: &str) -> Result<SnapshotId, AppError> {
    text.parse()
        .map_err(|e: cw::ParseIdError| AppError::BadRequest {
            code: "invalid_id",
            message: e.to_string(),
        })
}

/// Snapshot `sid` as seen under `workspace`: 404 when it belongs to another workspace here.
async fn snapshot_under(
    state: &AppState,
    workspace: &Workspace,
    sid: &str,
) -> Result<(Arc<cw::SnapshotStore>, SnapshotInfo), AppError> {
    let sid = parse_snapshot_id(sid)?;
    let store = snapshots(state).await?;
    let reader = Arc::clone(&store);
    let manifest = blocking(move || reader.manifest(sid))
        .await?
        .map_err(|e| store_error(Op::Other, e))?;
    let info = SnapshotInfo::from(&manifest);
    if info.workspace.as_str() != workspace.id.as_str() {
        if let Some(owner) = state
            .store()
            .find_workspace(info.workspace.as_str())
            .await?
        {
            return Err(AppError::NotFound(format!(
                "snapshot {sid} not found in workspace {}: it belongs to workspace {} ({})",
                workspace.name, owner.name, owner.id
            )));
        }
    }
    Ok((store, info))
}

fn dir_of(state: &AppState, workspace: &Workspace) -> PathBuf {
    state.scheduler().named_workspace_dir(&workspace.name)
}

/// The workspace's directory, made ready for use (created, its quota mounted).
async fn ready_dir(state: &AppState, workspace: &Workspace) -> Result<PathBuf, AppError> {
    state
        .scheduler()
        .workspaces()
        .prepare_dir(workspace)
        .await
        .map_err(|e| AppError::Internal(format!("preparing workspace {}: {e}", workspace.name)))?;
    Ok(dir_of(state, workspace))
}

/// The directory of the workspace with this id or name (404 when none), created if missing.
pub(crate) async fn workspace_dir(state: &AppState, id_or_name: &str) -> Result<PathBuf, AppError> {
    let found = workspace(state, id_or_name).await?;
    ready_dir(state, &found).await
}

fn in_use(workspace: &Workspace, task: Option<conductor_types::TaskId>) -> AppError {
    match task {
        Some(task) => AppError::Conflict(format!(
            "task {task} is running in workspace {}: wait for it to finish or cancel it",
            workspace.name
        )),
        None => AppError::Conflict(format!(
            "workspace {} is being restored or deleted: try again when that is done",
            workspace.name
        )),
    }
}

/// `POST /api/v1/workspaces`: 201 with the workspace.
#[utoipa::path(post, path = "/api/v1/workspaces", tag = "workspaces", request_body = WorkspaceRequest,
    responses((status = 201, description = "created (with its empty directory, a filesystem of its own with a disk quota), owned by the calling token", body = Workspace), (status = 400, description = "malformed JSON", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody),
        (status = 409, description = "the name is taken", body = ApiErrorBody),
        (status = 422, description = "bad name, cleanup policy or disk quota, or a disk quota on a server not running as root (the message names the field)", body = ApiErrorBody)))]
pub async fn create_workspace(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Result<Response, AppError> {
    let request: WorkspaceRequest = read_json(body, state.body_limit()).await?;
    validate_workspace_name(&request.name).map_err(|e| AppError::InvalidField {
        field: "name".to_owned(),
        message: e.reason,
    })?;
    if request.name.parse::<WorkspaceId>().is_ok() {
        return Err(AppError::InvalidField {
            field: "name".to_owned(),
            message: format!(
                "{:?} has the form of a workspace id: choose another name",
                request.name
            ),
        });
    }
    let cleanup = match &request.cleanup {
        Some(text) => text
            .parse::<CleanupPolicy>()
            .map_err(|e| AppError::InvalidField {
                field: "cleanup".to_owned(),
                message: e.to_string(),
            })?,
        None => CleanupPolicy::Keep,
    };
    let new = new_workspace(request.name, cleanup, &caller.0.id, request.disk);
    let created = state.scheduler().workspaces().create(new).await?;
    let location = format!("/api/v1/workspaces/{}", created.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(created),
    )
        .into_response())
}

/// `GET /api/v1/workspaces`: every workspace, by name.
#[utoipa::path(get, path = "/api/v1/workspaces", tag = "workspaces",
    responses((status = 200, body = [Workspace]), (status = 401, description = "missing or invalid token", body = ApiErrorBody)))]
pub async fn list_workspaces(
    State(state): State<AppState>,
) -> Result<Json<Vec<Workspace>>, AppError> {
    Ok(Json(state.store().list_workspaces().await?))
}

/// `GET /api/v1/workspaces/{id}` (id or name).
#[utoipa::path(get, path = "/api/v1/workspaces/{id}", tag = "workspaces", params(("id" = String, Path, description = "workspace id (ws_…) or name")),
    responses((status = 200, body = Workspace), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn get_workspace(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Workspace>, AppError> {
    Ok(Json(workspace(&state, &id).await?))
}

/// `DELETE /api/v1/workspaces/{id}`: 204, the directory removed (its snapshots are kept).
#[utoipa::path(delete, path = "/api/v1/workspaces/{id}", tag = "workspaces", params(("id" = String, Path, description = "workspace id (ws_…) or name")),
    responses((status = 204, description = "deleted with its directory; its snapshots stay"), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 404, body = ApiErrorBody),
        (status = 409, description = "a queued or running task names it", body = ApiErrorBody)))]
pub async fn delete_workspace(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let found = workspace(&state, &id).await?;
    let _held = state
        .scheduler()
        .reserve_workspace(&found.name)
        .map_err(|task| in_use(&found, task))?;
    let deleted = state.store().delete_workspace(&found.id).await?;
    state
        .scheduler()
        .workspaces()
        .remove_dir(&deleted.name)
        .await
        .map_err(|e| AppError::Internal(format!("removing workspace {}: {e}", deleted.name)))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/workspaces/{id}/snapshots`: 201 with the snapshot. A task may be running in
/// the workspace: files that keep changing while copied make it 409.
#[utoipa::path(post, path = "/api/v1/workspaces/{id}/snapshots", tag = "snapshots", request_body = SnapshotRequest, params(("id" = String, Path, description = "workspace id (ws_…) or name")),
    responses((status = 201, body = SnapshotView), (status = 400, description = "malformed JSON", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 404, body = ApiErrorBody),
        (status = 409, description = "the workspace holds a special file, or files kept changing", body = ApiErrorBody),
        (status = 422, description = "bad name", body = ApiErrorBody)))]
pub async fn create_snapshot(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, AppError> {
    let request: SnapshotRequest = read_json(body, state.body_limit()).await?;
    let found = workspace(&state, &id).await?;
    let key = snapshot_workspace(&found)?;
    let dir = ready_dir(&state, &found).await?;
    let store = snapshots(&state).await?;
    let snapshot = blocking(move || {
        store.create_snapshot(&key, &dir, &request.name, &SnapshotOptions::default())
    })
    .await?
    .map_err(|e| store_error(Op::Snapshot, e))?;
    let view = SnapshotView::from(&SnapshotInfo::from(&snapshot.manifest));
    state
        .store()
        .set_workspace_size(&found.id, view.bytes)
        .await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `GET /api/v1/workspaces/{id}/snapshots`: the workspace's snapshots, oldest first.
#[utoipa::path(get, path = "/api/v1/workspaces/{id}/snapshots", tag = "snapshots", params(("id" = String, Path, description = "workspace id (ws_…) or name")),
    responses((status = 200, body = [SnapshotView]), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn list_snapshots(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<SnapshotView>>, AppError> {
    let found = workspace(&state, &id).await?;
    let key = snapshot_workspace(&found)?;
    let store = snapshots(&state).await?;
    let infos = blocking(move || store.list_snapshots(Some(&key)))
        .await?
        .map_err(|e| store_error(Op::Other, e))?;
    Ok(Json(infos.iter().map(SnapshotView::from).collect()))
}

/// `POST /api/v1/workspaces/{id}/snapshots/{sid}/restore`: restores exactly (files added since
/// are removed) into the workspace or `target`; 409 while a task runs there.
#[utoipa::path(post, path = "/api/v1/workspaces/{id}/snapshots/{sid}/restore", tag = "snapshots", request_body(content = RestoreRequest, description = "optional: an empty body restores into the workspace itself"),
    params(("id" = String, Path, description = "workspace id (ws_…) or name"), ("sid" = String, Path, description = "snapshot id (UUID)")),
    responses((status = 200, body = RestoreView), (status = 400, description = "malformed JSON or id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 404, body = ApiErrorBody),
        (status = 409, description = "a task runs in the target workspace", body = ApiErrorBody),
        (status = 422, description = "unknown target", body = ApiErrorBody)))]
pub async fn restore_snapshot(
    State(state): State<AppState>,
    Path((id, sid)): Path<(String, String)>,
    body: Body,
) -> Result<Json<RestoreView>, AppError> {
    let bytes = axum::body::to_bytes(body, state.body_limit())
        .await
        .map_err(|_| AppError::PayloadTooLarge {
            limit: state.body_limit(),
        })?;
    let request: RestoreRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        RestoreRequest::default()
    } else {
        decode_json(&bytes)?
    };
    let found = workspace(&state, &id).await?;
    let (store, info) = snapshot_under(&state, &found, &sid).await?;
    let target =
        match &request.target {
            Some(target) => state.store().find_workspace(target).await?.ok_or_else(|| {
                AppError::InvalidField {
                    field: "target".to_owned(),
                    message: format!("no workspace has the id or name {target:?}"),
                }
            })?,
            None => found,
        };
    let _held = state
        .scheduler()
        .reserve_workspace(&target.name)
        .map_err(|task| in_use(&target, task))?;
    let dir = ready_dir(&state, &target).await?;
    let snapshot = info.id;
    let stats = blocking(move || store.restore(snapshot, &dir))
        .await?
        .map_err(|e| store_error(Op::Other, e))?;
    state
        .store()
        .set_workspace_size(&target.id, info.summary.bytes)
        .await?;
    Ok(Json(RestoreView {
        snapshot: snapshot.to_string(),
        workspace: target.id,
        files: stats.files,
        symlinks: stats.symlinks,
        dirs_created: stats.dirs_created,
        removed: stats.removed,
        bytes: stats.bytes,
    }))
}

/// `GET /api/v1/workspaces/{id}/snapshots/{sid}/diff?against=<sid|current>`.
#[utoipa::path(get, path = "/api/v1/workspaces/{id}/snapshots/{sid}/diff", tag = "snapshots",
    params(("id" = String, Path, description = "workspace id (ws_…) or name"), ("sid" = String, Path, description = "snapshot id (UUID)"), DiffQuery),
    responses((status = 200, body = DiffView), (status = 400, description = "bad id or query", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn diff_snapshot(
    State(state): State<AppState>,
    Path((id, sid)): Path<(String, String)>,
    params: Result<Query<DiffQuery>, QueryRejection>,
) -> Result<Json<DiffView>, AppError> {
    let params = params
        .map(|Query(q)| q)
        .map_err(|rejection| AppError::BadRequest {
            code: "invalid_query",
            message: rejection.body_text(),
        })?;
    let found = workspace(&state, &id).await?;
    let (store, info) = snapshot_under(&state, &found, &sid).await?;
    let against = params.against.unwrap_or_else(|| "current".to_owned());
    let other = if against == "current" {
        None
    } else {
        let other = parse_snapshot_id(&against).map_err(|_| AppError::BadRequest {
            code: "invalid_query",
            message: format!("against: {against:?} is neither a snapshot id nor `current`"),
        })?;
        Some(
            snapshot_under(&state, &found, &other.to_string())
                .await?
                .1
                .id,
        )
    };
    let dir = match other {
        Some(_) => dir_of(&state, &found),
        None => ready_dir(&state, &found).await?,
    };
    let from = info.id;
    let changes = blocking(move || match other {
        Some(other) => store.diff(from, DiffAgainst::Snapshot(other)),
        None => store.diff(from, DiffAgainst::Directory(&dir)),
    })
    .await?
    .map_err(|e| store_error(Op::Other, e))?;
    Ok(Json(DiffView {
        snapshot: from.to_string(),
        against,
        changes: changes
            .into_iter()
            .map(|change| ChangeView {
                path: change.path,
                kind: change.kind,
                before: change.before.map(entry_view),
                after: change.after.map(entry_view),
            })
            .collect(),
    }))
}

/// `DELETE /api/v1/workspaces/{id}/snapshots/{sid}`: 204; blobs no other snapshot uses are
/// then garbage-collected.
#[utoipa::path(delete, path = "/api/v1/workspaces/{id}/snapshots/{sid}", tag = "snapshots",
    params(("id" = String, Path, description = "workspace id (ws_…) or name"), ("sid" = String, Path, description = "snapshot id (UUID)")),
    responses((status = 204, description = "deleted, then unreferenced blobs collected"), (status = 400, description = "bad id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn delete_snapshot(
    State(state): State<AppState>,
    Path((id, sid)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    let found = workspace(&state, &id).await?;
    let (store, info) = snapshot_under(&state, &found, &sid).await?;
    let snapshot = info.id;
    blocking(move || {
        store.delete_snapshot(snapshot)?;
        // The delete is durable already; a failed collection only leaves blobs for the next.
        if let Err(error) = store.gc() {
            tracing::warn!(%error, "garbage collection after a snapshot delete failed");
        }
        Ok(())
    })
    .await?
    .map_err(|e| store_error(Op::Other, e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/workspaces/{id}/snapshots/{sid}/export`: the snapshot as one `.tar.zst`
/// (manifest and blobs), streamed.
#[utoipa::path(get, path = "/api/v1/workspaces/{id}/snapshots/{sid}/export", tag = "snapshots",
    params(("id" = String, Path, description = "workspace id (ws_…) or name"), ("sid" = String, Path, description = "snapshot id (UUID)")),
    responses((status = 200, description = "the snapshot as tar.zst", body = Vec<u8>, content_type = "application/zstd"), (status = 400, description = "bad id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn export_snapshot(
    State(state): State<AppState>,
    Path((id, sid)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let found = workspace(&state, &id).await?;
    let (store, info) = snapshot_under(&state, &found, &sid).await?;
    let snapshot = info.id;
    let body = stream_body(move |out| {
        store
            .export(snapshot, out)
            .map(|_| ())
            .map_err(|e| format!("exporting snapshot {snapshot}: {e}"))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/zstd".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{snapshot}.tar.zst\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// `POST /api/v1/snapshots/import`: a `.tar.zst` from `export` as the body; 201 with the
/// snapshot (same id as where it was exported). Importing it again is a no-op.
#[utoipa::path(post, path = "/api/v1/snapshots/import", tag = "snapshots", request_body(content = Vec<u8>, content_type = "application/zstd", description = "a snapshot exported by GET …/export"),
    responses((status = 201, body = SnapshotView), (status = 401, description = "missing or invalid token", body = ApiErrorBody),
        (status = 409, description = "a snapshot with this id and other contents exists", body = ApiErrorBody),
        (status = 422, description = "not a snapshot export, damaged, or declaring more bytes of files than `[workspaces] import_max`", body = ApiErrorBody)))]
pub async fn import_snapshot(
    State(state): State<AppState>,
    body: Body,
) -> Result<Response, AppError> {
    let store = snapshots(&state).await?;
    let options = cw::ImportOptions {
        max_bytes: state.scheduler().config().import_max.get(),
    };
    let imported =
        with_body_reader(body, move |reader| store.import_with(reader, &options)).await?;
    let manifest = imported.map_err(|e| store_error(Op::Import, e))?;
    let view = SnapshotView::from(&SnapshotInfo::from(&manifest));
    Ok((StatusCode::CREATED, Json(view)).into_response())
}
