//! `conductor workspace list|create|show|rm|snapshot|snapshots|restore|diff|export|import`: the
//! client side of the workspace and snapshot API. Tables for humans, `--json` for scripts.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use conductor_server::{ChangeKind, DiffView, ListingView, RestoreView, SnapshotView, UploadView};
use conductor_types::Workspace;
use reqwest::Method;
use serde_json::json;

use crate::client::{emit, Client, ClientArgs};

/// `conductor workspace …`.
#[derive(Debug, clap::Args)]
pub struct WorkspaceArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: WorkspaceCommand,
}

#[derive(Debug, clap::Subcommand)]
enum WorkspaceCommand {
    /// List workspaces.
    List,
    /// Create a named, persistent workspace.
    Create {
        /// Its name: letters, digits, '-', '_' or '.'.
        name: String,
        /// delete, keep (the default) or ttl:DURATION (ttl:7d).
        #[arg(long)]
        cleanup: Option<String>,
        /// A disk quota (1g, 512m): the workspace becomes a filesystem of that size (the
        /// server must run as root).
        #[arg(long)]
        disk: Option<String>,
    },
    /// Show one workspace.
    Show {
        /// Workspace id or name.
        workspace: String,
    },
    /// Delete a workspace and its directory (its snapshots are kept).
    Rm {
        /// Workspace id or name.
        workspace: String,
    },
    /// Snapshot a workspace.
    Snapshot {
        /// Workspace id or name.
        workspace: String,
        /// The snapshot's name (before-deployment).
        name: String,
    },
    /// List a workspace's snapshots, oldest first.
    Snapshots {
        /// Workspace id or name.
        workspace: String,
    },
    /// Restore a snapshot exactly (files added since are removed).
    Restore {
        /// Workspace id or name.
        workspace: String,
        /// Snapshot id.
        snapshot: String,
        /// Restore into this workspace instead.
        #[arg(long)]
        target: Option<String>,
    },
    /// What changed between a snapshot and the workspace now (or another snapshot).
    Diff {
        /// Workspace id or name.
        workspace: String,
        /// Snapshot id.
        snapshot: String,
        /// Another snapshot id, or "current".
        #[arg(long, default_value = "current")]
        against: String,
    },
    /// Write a snapshot to a .tar.zst file.
    Export {
        /// Workspace id or name.
        workspace: String,
        /// Snapshot id.
        snapshot: String,
        /// Where to write it ("-": standard output; default: SNAPSHOT.tar.zst).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Import a snapshot exported with `export`.
    Import {
        /// The .tar.zst file.
        file: PathBuf,
    },
    /// List a directory of a workspace (default: its root).
    Ls {
        /// Workspace id or name.
        workspace: String,
        /// Directory in the workspace.
        #[arg(default_value = "")]
        path: String,
    },
    /// Download a file, or with --tar a directory as a tar archive.
    Get {
        /// Workspace id or name.
        workspace: String,
        /// Path in the workspace.
        path: String,
        /// Download the directory `path` as a tar archive.
        #[arg(long)]
        tar: bool,
        /// Where to write it (default: standard output).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Upload a file (atomically), or with --tar extract a tar archive into a directory.
    Put {
        /// Workspace id or name.
        workspace: String,
        /// Path in the workspace.
        path: String,
        /// The local file ("-": standard input).
        file: PathBuf,
        /// The file is a tar archive to extract into the directory `path`.
        #[arg(long)]
        tar: bool,
        /// Permission bits of the uploaded file, in octal (default 644).
        #[arg(long, conflicts_with = "tar")]
        mode: Option<String>,
    },
    /// Delete a file, a symlink or an empty directory (-r: a whole tree) from a workspace.
    RmPath {
        /// Workspace id or name.
        workspace: String,
        /// Path in the workspace.
        path: String,
        /// Delete a directory with everything in it.
        #[arg(long, short = 'r')]
        recursive: bool,
    },
    /// Delete a snapshot (blobs no other snapshot uses are freed).
    SnapshotRm {
        /// Workspace id or name.
        workspace: String,
        /// Snapshot id.
        snapshot: String,
    },
}

/// Runs `conductor workspace …`.
pub fn main(args: WorkspaceArgs) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|rt| rt.block_on(workspace(args)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => crate::fail(&error),
    }
}

/// A path segment from the command line: ids and names only, so nothing needs escaping.
fn segment(text: &str) -> anyhow::Result<&str> {
    let valid = !text.is_empty()
        && !text.starts_with('.')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        bail!("{text:?} is not a workspace or snapshot id or name");
    }
    Ok(text)
}

fn snapshots_path(workspace: &str) -> anyhow::Result<String> {
    Ok(format!(
        "/api/v1/workspaces/{}/snapshots",
        segment(workspace)?
    ))
}

fn snapshot_path(workspace: &str, snapshot: &str) -> anyhow::Result<String> {
    Ok(format!(
        "{}/{}",
        snapshots_path(workspace)?,
        segment(snapshot)?
    ))
}

/// `/api/v1/workspaces/<ws>/files/<path>`, each path segment percent-encoded.
fn files_path(workspace: &str, path: &str) -> anyhow::Result<String> {
    let mut url = format!("/api/v1/workspaces/{}/files", segment(workspace)?);
    for part in path.split('/').filter(|p| !p.is_empty()) {
        // URL parsing would resolve these before the server could refuse them.
        if part == "." || part == ".." {
            bail!("{path:?}: workspace paths are relative to its root, without `.` or `..`");
        }
        url.push('/');
        for byte in part.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
                url.push(char::from(byte));
            } else {
                let _ = write!(url, "%{byte:02X}");
            }
        }
    }
    Ok(url)
}

/// Writes a response body to `output` (standard output when `None` or `-`).
async fn save(mut response: reqwest::Response, output: Option<&Path>) -> anyhow::Result<u64> {
    let to_stdout = output.is_none_or(|o| o.as_os_str() == "-");
    let shown = output.map_or_else(|| "standard output".to_owned(), |o| o.display().to_string());
    let mut sink: Box<dyn Write> = match output {
        Some(path) if !to_stdout => {
            Box::new(std::fs::File::create(path).with_context(|| format!("creating {shown}"))?)
        }
        _ => Box::new(std::io::stdout().lock()),
    };
    let mut written = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .context("reading the download from the server")?
    {
        sink.write_all(&chunk)
            .with_context(|| format!("writing {shown}"))?;
        written += chunk.len() as u64;
    }
    sink.flush().with_context(|| format!("writing {shown}"))?;
    Ok(written)
}

/// A directory listing as a table.
pub fn listing_table(listing: &ListingView) -> String {
    let mut out = format!(
        "{:<8}  {:>6}  {:>12}  {:<24}  NAME\n",
        "KIND", "MODE", "SIZE", "MODIFIED"
    );
    for entry in &listing.entries {
        let name = match &entry.target {
            Some(target) => format!("{} -> {target}", entry.name),
            None => entry.name.clone(),
        };
        let _ = writeln!(
            out,
            "{:<8}  {:>6o}  {:>12}  {:<24}  {name}",
            entry.kind, entry.mode, entry.size, entry.mtime
        );
    }
    out
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    emit(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

fn optional<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The workspaces as a table.
pub fn workspace_table(workspaces: &[Workspace]) -> String {
    let mut out = format!(
        "{:<35}  {:<20}  {:<10}  {:>12}  {:>6}  {:<16}  {:<24}  LAST USED\n",
        "ID", "NAME", "CLEANUP", "SIZE", "DISK", "OWNER", "CREATED"
    );
    for ws in workspaces {
        let _ = writeln!(
            out,
            "{:<35}  {:<20}  {:<10}  {:>12}  {:>6}  {:<16}  {:<24}  {}",
            ws.id,
            ws.name,
            ws.cleanup,
            optional(ws.size_bytes),
            optional(ws.disk),
            ws.owner.as_deref().unwrap_or("-"),
            ws.created_at,
            optional(ws.last_used_at)
        );
    }
    out
}

/// The snapshots as a table.
pub fn snapshot_table(snapshots: &[SnapshotView]) -> String {
    let mut out = format!(
        "{:<36}  {:<24}  {:>7}  {:>6}  {:>8}  {:>12}  NAME\n",
        "ID", "CREATED", "FILES", "DIRS", "SYMLINKS", "BYTES"
    );
    for s in snapshots {
        let _ = writeln!(
            out,
            "{:<36}  {:<24}  {:>7}  {:>6}  {:>8}  {:>12}  {}",
            s.id, s.created_at, s.files, s.dirs, s.symlinks, s.bytes, s.name
        );
    }
    out
}

/// A diff as one line per path: `A`dded, `D`eleted, `M`odified, mode `C`hanged, `T`ype changed.
pub fn diff_lines(diff: &DiffView) -> String {
    let mut out = String::new();
    for change in &diff.changes {
        let mark = match change.kind {
            ChangeKind::Added => "A",
            ChangeKind::Removed => "D",
            ChangeKind::Modified => "M",
            ChangeKind::ModeChanged => "C",
            ChangeKind::TypeChanged => "T",
        };
        let path = serde_json::to_value(&change.path)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{:?}", change.path));
        let _ = writeln!(out, "{mark} {path}");
    }
    out
}

fn show(ws: &Workspace) -> String {
    format!(
        "id:        {}\nname:      {}\nowner:     {}\ncleanup:   {}\ndisk:      {}\ncreated:   {}\nlast used: {}\nsize:      {}\n",
        ws.id,
        ws.name,
        ws.owner.as_deref().unwrap_or("-"),
        ws.cleanup,
        optional(ws.disk),
        ws.created_at,
        optional(ws.last_used_at),
        optional(ws.size_bytes.map(|b| format!("{b} bytes"))),
    )
}

async fn workspace(args: WorkspaceArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    match args.command {
        WorkspaceCommand::List => {
            let list: Vec<Workspace> = client
                .json(client.request(Method::GET, "/api/v1/workspaces"))
                .await?;
            if json {
                print_json(&list)?;
            } else {
                emit(&workspace_table(&list))?;
            }
        }
        WorkspaceCommand::Create {
            name,
            cleanup,
            disk,
        } => {
            let mut body = json!({ "name": name });
            if let Some(cleanup) = cleanup {
                body["cleanup"] = json!(cleanup);
            }
            if let Some(disk) = disk {
                body["disk"] = json!(disk);
            }
            let created: Workspace = client
                .json(
                    client
                        .request(Method::POST, "/api/v1/workspaces")
                        .json(&body),
                )
                .await?;
            if json {
                print_json(&created)?;
            } else {
                emit(&format!("{}\n", created.id))?;
            }
        }
        WorkspaceCommand::Show { workspace } => {
            let path = format!("/api/v1/workspaces/{}", segment(&workspace)?);
            let found: Workspace = client.json(client.request(Method::GET, &path)).await?;
            if json {
                print_json(&found)?;
            } else {
                emit(&show(&found))?;
            }
        }
        WorkspaceCommand::Rm { workspace } => {
            let path = format!("/api/v1/workspaces/{}", segment(&workspace)?);
            client.send(client.request(Method::DELETE, &path)).await?;
            if !json {
                emit(&format!("deleted {workspace}\n"))?;
            }
        }
        WorkspaceCommand::Snapshot { workspace, name } => {
            let request = client
                .request(Method::POST, &snapshots_path(&workspace)?)
                .json(&json!({ "name": name }));
            let created: SnapshotView = client.json(request).await?;
            if json {
                print_json(&created)?;
            } else {
                emit(&format!("{}\n", created.id))?;
            }
        }
        WorkspaceCommand::Snapshots { workspace } => {
            let list: Vec<SnapshotView> = client
                .json(client.request(Method::GET, &snapshots_path(&workspace)?))
                .await?;
            if json {
                print_json(&list)?;
            } else {
                emit(&snapshot_table(&list))?;
            }
        }
        WorkspaceCommand::Restore {
            workspace,
            snapshot,
            target,
        } => {
            let path = format!("{}/restore", snapshot_path(&workspace, &snapshot)?);
            let request = client
                .request(Method::POST, &path)
                .json(&json!({ "target": target }));
            let restored: RestoreView = client.json(request).await?;
            if json {
                print_json(&restored)?;
            } else {
                emit(&format!(
                    "restored {} into {}: {} files, {} symlinks, {} directories created, {} entries removed\n",
                    restored.snapshot,
                    restored.workspace,
                    restored.files,
                    restored.symlinks,
                    restored.dirs_created,
                    restored.removed
                ))?;
            }
        }
        WorkspaceCommand::Diff {
            workspace,
            snapshot,
            against,
        } => {
            let path = format!("{}/diff", snapshot_path(&workspace, &snapshot)?);
            let request = client
                .request(Method::GET, &path)
                .query(&[("against", against.as_str())]);
            let diff: DiffView = client.json(request).await?;
            if json {
                print_json(&diff)?;
            } else {
                emit(&diff_lines(&diff))?;
            }
        }
        WorkspaceCommand::Export {
            workspace,
            snapshot,
            output,
        } => {
            let path = format!("{}/export", snapshot_path(&workspace, &snapshot)?);
            let response = client.send(client.request(Method::GET, &path)).await?;
            let output = output.unwrap_or_else(|| PathBuf::from(format!("{snapshot}.tar.zst")));
            let written = save(response, Some(&output)).await?;
            if output.as_os_str() != "-" && !json {
                eprintln!("wrote {} ({written} bytes)", output.display());
            }
        }
        WorkspaceCommand::Import { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let request = client
                .request(Method::POST, "/api/v1/snapshots/import")
                .header(reqwest::header::CONTENT_TYPE, "application/zstd")
                .body(bytes);
            let imported: SnapshotView = client.json(request).await?;
            if json {
                print_json(&imported)?;
            } else {
                emit(&format!(
                    "{} ({}, of workspace {})\n",
                    imported.id, imported.name, imported.workspace
                ))?;
            }
        }
        WorkspaceCommand::Ls { workspace, path } => {
            let listing: ListingView = client
                .json(client.request(Method::GET, &files_path(&workspace, &path)?))
                .await?;
            if json {
                print_json(&listing)?;
            } else {
                emit(&listing_table(&listing))?;
            }
        }
        WorkspaceCommand::Get {
            workspace,
            path,
            tar,
            output,
        } => {
            let mut request = client.request(Method::GET, &files_path(&workspace, &path)?);
            if tar {
                request = request.query(&[("format", "tar")]);
            }
            let response = client.send(request).await?;
            let is_json = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
            if is_json {
                bail!("{path:?} is a directory: use `conductor workspace ls`, or --tar");
            }
            save(response, output.as_deref()).await?;
        }
        WorkspaceCommand::Put {
            workspace,
            path,
            file,
            tar,
            mode,
        } => {
            let bytes = if file.as_os_str() == "-" {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
                    .context("reading standard input")?;
                bytes
            } else {
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let content_type = if tar {
                "application/x-tar"
            } else {
                "application/octet-stream"
            };
            let mut request = client
                .request(Method::PUT, &files_path(&workspace, &path)?)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
            if let Some(mode) = mode {
                request = request.query(&[("mode", mode)]);
            }
            let written: UploadView = client.json(request).await?;
            if json {
                print_json(&written)?;
            } else {
                emit(&format!(
                    "wrote {} files, {} directories, {} symlinks, {} bytes\n",
                    written.files, written.dirs, written.symlinks, written.bytes
                ))?;
            }
        }
        WorkspaceCommand::RmPath {
            workspace,
            path,
            recursive,
        } => {
            let mut request = client.request(Method::DELETE, &files_path(&workspace, &path)?);
            if recursive {
                request = request.query(&[("recursive", "true")]);
            }
            client.send(request).await?;
            if !json {
                emit(&format!("deleted {path}\n"))?;
            }
        }
        WorkspaceCommand::SnapshotRm {
            workspace,
            snapshot,
        } => {
            let path = snapshot_path(&workspace, &snapshot)?;
            client.send(client.request(Method::DELETE, &path)).await?;
            if !json {
                emit(&format!("deleted {snapshot}\n"))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use conductor_types::Timestamp;

    use super::*;

    #[test]
    fn tables_and_diffs_for_humans() {
        let ws = Workspace {
            id: "ws_0f4c1d3b9a8e4f6b8d2c7a1e5b3f9d0c".parse().unwrap(),
            name: "repo".into(),
            cleanup: "keep".into(),
            created_at: Timestamp(0),
            last_used_at: None,
            size_bytes: Some(31),
            owner: Some("tok_0123456789ab".into()),
            disk: Some(conductor_types::Bytes(conductor_types::Bytes::GIB)),
        };
        assert_eq!(
            workspace_table(std::slice::from_ref(&ws)),
            "ID                                   NAME                  CLEANUP             SIZE    DISK  OWNER             CREATED                   LAST USED\n\
             ws_0f4c1d3b9a8e4f6b8d2c7a1e5b3f9d0c  repo                  keep                  31      1g  tok_0123456789ab  1970-01-01T00:00:00.000Z  -\n"
        );
        assert_eq!(
            show(&ws),
            "id:        ws_0f4c1d3b9a8e4f6b8d2c7a1e5b3f9d0c\nname:      repo\nowner:     tok_0123456789ab\ncleanup:   keep\ndisk:      1g\ncreated:   1970-01-01T00:00:00.000Z\nlast used: -\nsize:      31 bytes\n"
        );
        let diff: DiffView = serde_json::from_value(json!({
            "snapshot": "s",
            "against": "current",
            "changes": [
                {"path": "a", "kind": "added", "after": {"type": "file", "mode": 420, "size": 1}},
                {"path": "b/c", "kind": "mode_changed"},
                {"path": "d", "kind": "removed"},
            ]
        }))
        .unwrap();
        assert_eq!(diff_lines(&diff), "A a\nC b/c\nD d\n");
    }

    #[test]
    fn file_paths_are_percent_encoded_per_segment() {
        assert_eq!(
            files_path("repo", "").unwrap(),
            "/api/v1/workspaces/repo/files"
        );
        assert_eq!(
            files_path("repo", "src/a b?.txt").unwrap(),
            "/api/v1/workspaces/repo/files/src/a%20b%3F.txt"
        );
        assert!(files_path("repo", "../etc").is_err());
    }

    #[test]
    fn path_segments_are_ids_or_names_only() {
        assert_eq!(segment("repo").unwrap(), "repo");
        for bad in ["", "..", "a/b", "a?b", ".hidden"] {
            assert!(segment(bad).is_err(), "{bad}");
        }
    }
}
