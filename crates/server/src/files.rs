//! The file API of a workspace, over `conductor_workspace::files` and `confine`: every path is
//! resolved by the kernel beneath the workspace root, so `..`, absolute paths and symlinks
//! leading out are refused (400 `invalid_path`). Downloads and uploads stream through the
//! blocking pool; a file upload is written to a temporary file and renamed into place, so a
//! reader sees the old file or the whole new one; uploads past the limit are 413.

use std::io::{Read, Write};
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};

use crate::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use conductor_types::{ApiErrorBody, Timestamp};
use conductor_workspace::{
    self as cw, AtomicWriter, ConfineError, FileEntry, FileError, FileKind, TarUploadOptions,
    UploadOptions,
};
use serde::{Deserialize, Serialize};

use crate::precondition::Precondition;
use crate::stream::{blocking, stream_body, with_body_reader};
use crate::workspaces::workspace_dir;
use crate::{AppError, AppState};

/// Largest file or tar upload by default: 1 GiB.
pub const DEFAULT_UPLOAD_LIMIT: u64 = 1024 * 1024 * 1024;

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileEntryView {
    /// The name (bytes that are not UTF-8 replaced by U+FFFD).
    pub name: String,
    /// `file`, `dir`, `symlink`, `fifo`, `socket` or `device` (a symlink is not followed).
    pub kind: String,
    /// Size in bytes (for a symlink, the length of its target).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Last modification.
    pub mtime: Timestamp,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl From<FileEntry> for FileEntryView {
    fn from(entry: FileEntry) -> Self {
        Self {
            name: entry.name,
            kind: kind_name(entry.kind).to_owned(),
            size: entry.size,
            mode: entry.mode,
            mtime: entry.mtime,
            target: entry.target,
        }
    }
}

/// A directory's listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ListingView {
    /// The directory, relative to the workspace root (empty for the root).
    pub path: String,
    /// Its entries, sorted by name.
    pub entries: Vec<FileEntryView>,
}

/// What an upload wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadView {
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// File content bytes written.
    pub bytes: u64,
}

/// Query of `GET …/files/{path}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    /// For a directory: `json` (the listing, the default) or `tar` (the whole tree).
    #[param(pattern = "^(json|tar)$")]
    format: Option<String>,
}

/// Query of `PUT …/files/{path}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// A file's permission bits in octal (default `644`); set-uid, set-gid, sticky and
    /// write-for-others bits are dropped (`6755` gives `755`).
    #[param(pattern = "^[0-7]{1,4}$")]
    mode: Option<String>,
}

/// Query of `DELETE …/files/{path}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete a directory with everything in it.
    recursive: Option<bool>,
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, AppError> {
    query
        .map(|Query(q)| q)
        .map_err(|rejection| AppError::BadRequest {
            code: "invalid_query",
            message: rejection.body_text(),
        })
}

fn confine_error(error: ConfineError, limit: u64) -> AppError {
    match error {
        ConfineError::Absolute(_)
        | ConfineError::ParentComponent(_)
        | ConfineError::Nul(_)
        | ConfineError::Escapes(_)
        | ConfineError::Root(_) => AppError::BadRequest {
            code: "invalid_path",
            message: error.to_string(),
        },
        ConfineError::NotFound(_) => AppError::NotFound(error.to_string()),
        ConfineError::IsDirectory(_) => AppError::Conflict(error.to_string()),
        ConfineError::TooLarge { .. } => too_large(limit),
        ConfineError::Io { ref source, .. } => io_error(source, error.to_string()),
    }
}

/// Longest name of one path component (`NAME_MAX`).
const NAME_MAX: usize = 255;
/// Longest path (`PATH_MAX` less its NUL).
const PATH_MAX: usize = 4095;

/// Refuses a path the kernel would refuse as too long, before it reaches a system call.
fn check_path(path: &str) -> Result<(), AppError> {
    let invalid = |message: String| AppError::BadRequest {
        code: "invalid_path",
        message,
    };
    if path.len() > PATH_MAX {
        return Err(invalid(format!(
            "the path is {} bytes long: at most {PATH_MAX} bytes",
            path.len()
        )));
    }
    match path.split('/').find(|name| name.len() > NAME_MAX) {
        Some(name) => Err(invalid(format!(
            "the name {:?}… is {} bytes long: names are at most {NAME_MAX} bytes",
            name.chars().take(16).collect::<String>(),
            name.len()
        ))),
        None => Ok(()),
    }
}

/// A failed system call on a user path: the client's mistake where the kernel says so (a name
/// too long, a file where a directory should be), else internal.
fn io_error(source: &std::io::Error, message: String) -> AppError {
    use std::io::ErrorKind;
    match source.kind() {
        ErrorKind::InvalidFilename => AppError::BadRequest {
            code: "invalid_path",
            message,
        },
        ErrorKind::NotADirectory | ErrorKind::IsADirectory | ErrorKind::DirectoryNotEmpty => {
            AppError::Conflict(message)
        }
        _ => AppError::Internal(message),
    }
}

fn too_large(limit: u64) -> AppError {
    AppError::PayloadTooLarge {
        limit: usize::try_from(limit).unwrap_or(usize::MAX),
    }
}

fn file_error(error: FileError, limit: u64) -> AppError {
    match error {
        FileError::Confine(inner) => confine_error(inner, limit),
        FileError::NotADirectory(_) | FileError::NotEmpty(_) | FileError::TooDeep { .. } => {
            AppError::Conflict(error.to_string())
        }
        FileError::TooLarge { .. } | FileError::TooManyEntries { .. } => too_large(limit),
        FileError::UnsafeEntry { .. } | FileError::Archive(_) => AppError::InvalidField {
            field: "body".to_owned(),
            message: error.to_string(),
        },
        FileError::Io { ref source, .. } => io_error(source, error.to_string()),
    }
}

/// An I/O error from writing an upload: the limit (413) when the writer refused more bytes.
fn write_error(error: std::io::Error, path: &str, limit: u64) -> AppError {
    if error.kind() == std::io::ErrorKind::FileTooLarge {
        return too_large(limit);
    }
    io_error(&error, format!("writing {path:?}: {error}"))
}

/// `GET /api/v1/workspaces/{id}/files`: the root's listing (or tar).
pub async fn get_root(
    state: State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<DownloadQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    get_file(state, Path((id, String::new())), params).await
}

/// `GET /api/v1/workspaces/{id}/files/{path}`: a file's contents; a directory's listing as
/// JSON, or with `?format=tar` the directory as a tar stream.
#[utoipa::path(get, path = "/api/v1/workspaces/{id}/files/{path}", tag = "files",
    params(("id" = String, Path, description = "workspace id (ws_…) or name"), ("path" = String, Path, description = "path in the workspace (empty: the root)"), DownloadQuery),
    responses((status = 200, description = "a file's bytes (application/octet-stream, with its version in `ETag`), a directory's listing (JSON, ListingView) or tar (application/x-tar)", content((ListingView = "application/json"), (Vec<u8> = "application/octet-stream"), (Vec<u8> = "application/x-tar")), headers(("ETag" = String, description = "a file's version, for If-Match on PUT and DELETE"))), (status = 400, description = "the path leads out of the workspace, or a bad query", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody),
        (status = 404, body = ApiErrorBody), (status = 409, description = "neither a file nor a directory", body = ApiErrorBody)))]
pub async fn get_file(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    params: Result<Query<DownloadQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    check_path(&path)?;
    let params = query(params)?;
    if let Some(format) = params
        .format
        .as_deref()
        .filter(|f| !matches!(*f, "json" | "tar"))
    {
        return Err(AppError::BadRequest {
            code: "invalid_query",
            message: format!("format: {format:?} is not json or tar"),
        });
    }
    let root = workspace_dir(&state, &id).await?;
    let limit = state.upload_limit();
    let user = PathBuf::from(&path);
    let probe = (root.clone(), user.clone());
    let entry = blocking(move || cw::stat(&probe.0, &probe.1))
        .await?
        .map_err(|e| file_error(e, limit))?;
    match (entry.kind, params.format.as_deref()) {
        (FileKind::Dir, None | Some("json")) => {
            let entries = blocking(move || cw::list_dir(&root, &user))
                .await?
                .map_err(|e| file_error(e, limit))?;
            Ok(Json(ListingView {
                path,
                entries: entries.into_iter().map(FileEntryView::from).collect(),
            })
            .into_response())
        }
        (FileKind::Dir, Some("tar")) => {
            let body = stream_body(move |out| {
                cw::download_tar(&root, &user, out)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
            Ok(([(header::CONTENT_TYPE, "application/x-tar")], body).into_response())
        }
        (FileKind::File, None) => {
            // One open file: its version, its length and the bytes sent all come from it.
            let shown = path.clone();
            let (file, version, size) = blocking(move || {
                let file = cw::open_in_workspace(&root, &user)?;
                let metadata = file.metadata().map_err(|e| ConfineError::Io {
                    op: "stat",
                    path: shown,
                    source: e,
                })?;
                Ok::<_, ConfineError>((file, cw::version::of_metadata(&metadata), metadata.len()))
            })
            .await?
            .map_err(|e| confine_error(e, limit))?;
            let body = stream_body(move |out| {
                let mut file = file;
                std::io::copy(&mut file, out)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
            Ok((
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (header::CONTENT_LENGTH, size.to_string()),
                    (header::ETAG, version),
                ],
                body,
            )
                .into_response())
        }
        (FileKind::File, Some(format)) => Err(AppError::Conflict(format!(
            "format {format:?} applies to directories: {path:?} is a file, downloaded as it is"
        ))),
        (FileKind::Dir, Some(format)) => Err(AppError::BadRequest {
            code: "invalid_query",
            message: format!("format: {format:?} is not json or tar"),
        }),
        (kind, _) => Err(AppError::Conflict(format!(
            "path {path:?} is a {}, not a file or directory",
            kind_name(kind)
        ))),
    }
}

/// `PUT /api/v1/workspaces/{id}/files`: a tar into the root.
pub async fn put_root(
    state: State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    put_file(state, Path((id, String::new())), params, headers, body).await
}

/// `PUT /api/v1/workspaces/{id}/files/{path}`: with `Content-Type: application/x-tar`, the tar
/// is extracted into the directory `path` (created if missing); otherwise the body becomes the
/// file `path` (parents created), atomically.
#[utoipa::path(put, path = "/api/v1/workspaces/{id}/files/{path}", tag = "files",
    params(("id" = String, Path, description = "workspace id (ws_…) or name"), ("path" = String, Path, description = "path in the workspace"), UploadQuery,
        ("If-Match" = Option<String>, Header, description = "write only if the file is at this version (its ETag) or, with *, exists"),
        ("If-None-Match" = Option<String>, Header, description = "with *, write only if nothing is at the path")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the file's contents, or a tar (application/x-tar) to extract into the directory"),
    responses((status = 201, description = "written", body = UploadView, headers(("ETag" = String, description = "the written file's version"))), (status = 412, description = "If-Match or If-None-Match does not hold: nothing was written", body = ApiErrorBody), (status = 400, description = "the path leads out of the workspace, or a bad query", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody),
        (status = 404, body = ApiErrorBody), (status = 409, description = "a directory is in the way", body = ApiErrorBody),
        (status = 413, description = "over the upload limit", body = ApiErrorBody), (status = 422, description = "a tar entry refused, or not a tar", body = ApiErrorBody)))]
pub async fn put_file(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    params: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    check_path(&path)?;
    let params = query(params)?;
    let precondition = Precondition::from_headers(&headers)?;
    let root = workspace_dir(&state, &id).await?;
    let limit = state.upload_limit();
    let user = PathBuf::from(&path);
    let is_tar = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-tar"));
    let mut version = None;
    let view = if is_tar {
        if !precondition.is_empty() {
            return Err(AppError::BadRequest {
                code: "invalid_header",
                message: "If-Match and If-None-Match apply to a file upload, not a tar".to_owned(),
            });
        }
        if params.mode.is_some() {
            return Err(AppError::BadRequest {
                code: "invalid_query",
                message: "mode: a tar upload keeps the modes in the archive".to_owned(),
            });
        }
        let options = TarUploadOptions {
            max_total_bytes: limit,
            ..TarUploadOptions::default()
        };
        let stats = with_body_reader(body, move |reader| {
            cw::upload_tar(&root, &user, reader, &options)
        })
        .await?
        .map_err(|e| file_error(e, limit))?;
        UploadView {
            files: stats.files,
            dirs: stats.dirs,
            symlinks: stats.symlinks,
            bytes: stats.bytes,
        }
    } else {
        let mode = match &params.mode {
            Some(text) => (1..=4)
                .contains(&text.len())
                .then(|| u32::from_str_radix(text, 8).ok())
                .flatten()
                .filter(|_| text.bytes().all(|b| matches!(b, b'0'..=b'7')))
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| AppError::BadRequest {
                    code: "invalid_query",
                    message: format!("mode: {text:?} is not octal permission bits such as 644"),
                })?,
            None => 0o644,
        };
        let options = UploadOptions {
            mode,
            create_parents: true,
            max_bytes: Some(limit),
        };
        let shown = path.clone();
        let writer = {
            let (root, user) = (root.clone(), user.clone());
            blocking(move || AtomicWriter::create(&root, &user, &options))
                .await?
                .map_err(|e| confine_error(e, limit))?
        };
        // Checked before the body is read (fail fast) and again just before the rename.
        let current = writer
            .replaced_version()
            .map_err(|e| confine_error(e, limit))?;
        precondition.check(current.as_deref(), &path)?;
        let (written, new_version) = with_body_reader(body, move |mut reader| {
            write_all(writer, &mut reader, &precondition, &shown).map_err(|e| match e {
                Written::Io(error) => write_error(error, &shown, limit),
                Written::Commit(error) => confine_error(error, limit),
                Written::Refused(error) => error,
            })
        })
        .await??;
        version = Some(new_version);
        UploadView {
            files: 1,
            dirs: 0,
            symlinks: 0,
            bytes: written,
        }
    };
    let mut response = (StatusCode::CREATED, Json(view)).into_response();
    if let Some(version) = version.and_then(|v| header::HeaderValue::from_str(&v).ok()) {
        response.headers_mut().insert(header::ETAG, version);
    }
    Ok(response)
}

/// Why a file upload failed after it started.
enum Written {
    Io(std::io::Error),
    Commit(ConfineError),
    Refused(AppError),
}

/// Copies `reader` into `writer` and, if `precondition` still holds, commits it; returns the
/// bytes written and the new file's version.
fn write_all(
    mut writer: AtomicWriter,
    reader: &mut impl Read,
    precondition: &Precondition,
    path: &str,
) -> Result<(u64, String), Written> {
    std::io::copy(reader, &mut writer).map_err(Written::Io)?;
    writer.flush().map_err(Written::Io)?;
    let written = writer.written();
    if !precondition.is_empty() {
        let current = writer.replaced_version().map_err(Written::Commit)?;
        precondition
            .check(current.as_deref(), path)
            .map_err(Written::Refused)?;
    }
    let version = writer.version().map_err(Written::Commit)?;
    writer.commit().map_err(Written::Commit)?;
    Ok((written, version))
}

/// `DELETE /api/v1/workspaces/{id}/files/{path}[?recursive=true]`: a file, a symlink (not its
/// target), an empty directory, or with `recursive` a whole tree.
#[utoipa::path(delete, path = "/api/v1/workspaces/{id}/files/{path}", tag = "files",
    params(("id" = String, Path, description = "workspace id (ws_…) or name"), ("path" = String, Path, description = "path in the workspace"), DeleteQuery,
        ("If-Match" = Option<String>, Header, description = "delete only if what is there is at this version (its ETag) or, with *, exists")),
    responses((status = 204, description = "deleted"), (status = 412, description = "If-Match does not hold: nothing was deleted", body = ApiErrorBody), (status = 400, description = "the path leads out of the workspace, names the root, or a bad query", body = ApiErrorBody), (status = 401, description = "missing or invalid token", body = ApiErrorBody),
        (status = 404, body = ApiErrorBody), (status = 409, description = "a directory that is not empty, without recursive", body = ApiErrorBody)))]
pub async fn delete_file(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    params: Result<Query<DeleteQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    check_path(&path)?;
    let recursive = query(params)?.recursive.unwrap_or(false);
    let precondition = Precondition::from_headers(&headers)?;
    let root = workspace_dir(&state, &id).await?;
    let limit = state.upload_limit();
    let user = PathBuf::from(&path);
    if !precondition.is_empty() {
        let (root, user) = (root.clone(), user.clone());
        let current = blocking(move || cw::version_in_workspace(&root, &user))
            .await?
            .map_err(|e| confine_error(e, limit))?;
        precondition.check(current.as_deref(), &path)?;
    }
    blocking(move || cw::delete(&root, &user, recursive))
        .await?
        .map_err(|e| file_error(e, limit))?;
    Ok(StatusCode::NO_CONTENT)
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "file",
        FileKind::Dir => "dir",
        FileKind::Symlink => "symlink",
        FileKind::Fifo => "fifo",
        FileKind::Socket => "socket",
        FileKind::Device => "device",
    }
}
