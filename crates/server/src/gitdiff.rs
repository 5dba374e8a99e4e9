//! What a task changed in the repository it cloned: the scheduler clones `git.repository` into
//! the task's fresh workspace before the commands (`conductor_workspace::clone_at`, every git
//! command in [`GitConfig::sandbox`], never on the host; a local path only under
//! [`GitConfig::allow_local`], checked at submission too) and, when
//! the commands are over and before the workspace is removed, records the workspace's diff
//! against the checked-out commit (`diff_against`, which never runs anything from the
//! workspace's `.git`) in `<workspace_root>/diffs/<task>.json`; `GET /api/v1/tasks/{id}/diff`
//! returns it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;

use crate::extract::Path as UrlPath;
use axum::Json;
use conductor_types::{ApiErrorBody, TaskId};
use conductor_workspace::{
    ChangedFile, Checkout, FileChange, GitDiff, GitOptions, GitSandbox, RefKind,
};
use serde::{Deserialize, Serialize};

use crate::stream::blocking;
use crate::{AppError, AppState};

/// `[git]`: what tasks may clone, and where the clones run.
#[derive(Debug, Clone, Default)]
pub struct GitConfig {
    /// Directories local repositories may be cloned from (`[git] allow_local`; none by
    /// default).
    pub allow_local: Vec<PathBuf>,
    /// The sandbox every git command of a clone runs in; `None` (no sandbox here) fails
    /// tasks that name a repository rather than clone on the host.
    pub sandbox: Option<Arc<dyn GitSandbox>>,
}

impl GitConfig {
    /// The options of a clone, or why none can run here.
    pub(crate) fn clone_options(&self) -> Result<GitOptions, String> {
        let sandbox = self.sandbox.clone().ok_or_else(|| {
            "git clones run in a namespace sandbox, and none is available on this server (see its log at start)".to_owned()
        })?;
        Ok(GitOptions {
            allow_local: self.allow_local.clone(),
            sandbox: Some(sandbox),
            ..GitOptions::default()
        })
    }
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitFileView {
    /// `added` (new files included), `modified`, `deleted`, `renamed`, `copied` or
    /// `type_changed`.
    pub change: String,
    /// The path (the new one for renames and copies).
    pub path: String,
    /// The old path of a rename or copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// `GET /api/v1/tasks/{id}/diff` answer: the task's checkout and what changed since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskDiffView {
    /// The repository cloned.
    pub repository: String,
    /// The branch, tag or commit checked out (the default branch's name when none was given).
    pub reference: String,
    /// `branch`, `tag` or `commit`.
    pub kind: String,
    /// The full id of the commit checked out: the base of the diff.
    pub commit: String,
    /// Every changed path, in git's order.
    pub files: Vec<GitFileView>,
    /// The unified diff (binary files as git binary patches).
    pub patch: String,
    /// Whether `patch` was cut at its size limit (16 MiB).
    pub truncated: bool,
}

impl TaskDiffView {
    /// The view of a checkout of `repository` and its diff.
    pub fn new(repository: &str, checkout: &Checkout, diff: GitDiff) -> Self {
        let kind = match checkout.kind {
            RefKind::Branch => "branch",
            RefKind::Tag => "tag",
            RefKind::Commit => "commit",
        };
        Self {
            repository: repository.to_owned(),
            reference: checkout.reference.clone(),
            kind: kind.to_owned(),
            commit: checkout.commit.clone(),
            files: diff.files.into_iter().map(file_view).collect(),
            patch: diff.patch,
            truncated: diff.truncated,
        }
    }
}

fn file_view(file: ChangedFile) -> GitFileView {
    let change = match file.change {
        FileChange::Added => "added",
        FileChange::Modified => "modified",
        FileChange::Deleted => "deleted",
        FileChange::Renamed => "renamed",
        FileChange::Copied => "copied",
        FileChange::TypeChanged => "type_changed",
    };
    GitFileView {
        change: change.to_owned(),
        path: file.path,
        from: file.from,
    }
}

/// Where task `id`'s diff is recorded.
pub(crate) fn diff_path(workspace_root: &Path, id: TaskId) -> PathBuf {
    workspace_root.join("diffs").join(format!("{id}.json"))
}

/// Writes `view` to `path` atomically (a temporary file renamed into place).
pub(crate) fn write_diff(path: &Path, view: &TaskDiffView) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("a diff path has no directory"))?;
    std::fs::create_dir_all(dir)?;
    let bytes = serde_json::to_vec(view).map_err(std::io::Error::other)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("a diff path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// `GET /api/v1/tasks/{id}/diff`: what the task changed in the repository it cloned.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/diff", tag = "tasks", params(("id" = String, Path, description = "task id (UUID)")),
    responses((status = 200, body = TaskDiffView), (status = 400, description = "bad id", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody),
        (status = 404, description = "no such task, it names no repository, or no diff was recorded (the clone failed)", body = ApiErrorBody),
        (status = 409, description = "the task has not finished", body = ApiErrorBody)))]
pub async fn task_diff(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<TaskDiffView>, AppError> {
    let id: TaskId =
        id.parse()
            .map_err(|e: conductor_types::ParseIdError| AppError::BadRequest {
                code: "invalid_id",
                message: e.to_string(),
            })?;
    let task = state.store().get_task(id).await?;
    if task.spec.git.is_none() {
        return Err(AppError::NotFound(format!(
            "task {id} names no git repository"
        )));
    }
    let path = diff_path(&state.scheduler().config().workspace_root, id);
    let read = blocking(move || std::fs::read(&path)).await?;
    match read {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Json)
            .map_err(|e| AppError::Internal(format!("a recorded diff does not decode: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if task.state.status.is_finished() {
                Err(AppError::NotFound(format!(
                    "no diff was recorded for task {id}: {}",
                    task.state
                        .status_reason
                        .as_deref()
                        .unwrap_or("its commands did not run")
                )))
            } else {
                Err(AppError::Conflict(format!(
                    "task {id} is {}: its diff is recorded when it finishes",
                    task.state.status
                )))
            }
        }
        Err(e) => Err(AppError::Internal(format!("reading a recorded diff: {e}"))),
    }
}
