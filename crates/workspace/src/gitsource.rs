//! Which repositories a task may clone (pure: no I/O), and the sandbox each clone runs in.
//!
//! A repository is a URL of a network transport (`https`, `http`, `git`, `ssh`, or ssh's
//! `[user@]host:path` form), or an absolute local path under a directory the server's config
//! lists (`[git] allow_local`, empty by default). `file://`, remote helpers (`ext::…`,
//! `fd::…`, any `<transport>::<address>`) and every other scheme are refused: they run
//! programs or read the host's files. [`check_source`] decides; the server calls it at
//! submission and [`crate::clone_at`] again, on the resolved path, before it clones.
//!
//! A clone never runs git on the host: [`GitSandbox`] runs each git command of it in a sandbox
//! of its own (the host's system directories read-only, the workspace writable at
//! [`SANDBOX_WORKSPACE`], a local repository bound read-only at its own path, as an
//! unprivileged user, outbound network of its own).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Where the workspace is inside a clone's sandbox (and its working directory).
pub const SANDBOX_WORKSPACE: &str = "/workspace";

/// Where a repository comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitSource {
    /// A URL of a network transport (`https`, `http`, `git`, `ssh`), or ssh's scp form.
    Remote,
    /// A local path (absolute, normalised) the config allows.
    Local(PathBuf),
}

/// Why a repository may not be cloned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// `file://`, a remote helper (`ext::`) or a scheme git has no network transport for.
    #[error("{repository:?}: the {transport} transport is not allowed: use an https, http, git or ssh URL")]
    Transport {
        /// The repository as given.
        repository: String,
        /// The transport named.
        transport: String,
    },
    /// A relative path, or one with `.`/`..` components.
    #[error("{0:?}: a local repository must be an absolute path without . or .. components")]
    LocalPath(String),
    /// A local path outside every `allow_local` directory.
    #[error("{repository:?}: local repositories are cloned only from the directories [git] allow_local lists ({allowed})")]
    NotAllowed {
        /// The repository as given.
        repository: String,
        /// The allowed directories, or `none`.
        allowed: String,
    },
}

/// Network transports a clone may use (git's `protocol.<name>.allow`).
pub const REMOTE_PROTOCOLS: [&str; 4] = ["https", "http", "git", "ssh"];

/// Decides whether `repository` may be cloned, given the directories local repositories may
/// come from (`allow_local`, absolute). Lexical only: [`crate::clone_at`] checks the resolved
/// path again.
pub fn check_source(repository: &str, allow_local: &[PathBuf]) -> Result<GitSource, SourceError> {
    let transport = |transport: &str| SourceError::Transport {
        repository: repository.to_owned(),
        transport: transport.to_owned(),
    };
    if let Some((helper, _)) = repository.split_once("::") {
        if is_scheme(helper) {
            return Err(transport(helper));
        }
    }
    if let Some((scheme, _)) = repository.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        return match scheme.as_str() {
            "https" | "http" | "git" | "ssh" | "git+ssh" | "ssh+git" => Ok(GitSource::Remote),
            _ => Err(transport(&scheme)),
        };
    }
    if is_scp_like(repository) {
        return Ok(GitSource::Remote);
    }
    let path = Path::new(repository);
    let normal = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !normal {
        return Err(SourceError::LocalPath(repository.to_owned()));
    }
    if allow_local.iter().any(|dir| path.starts_with(dir)) {
        return Ok(GitSource::Local(path.components().collect()));
    }
    Err(SourceError::NotAllowed {
        repository: repository.to_owned(),
        allowed: if allow_local.is_empty() {
            "none".to_owned()
        } else {
            allow_local
                .iter()
                .map(|dir| dir.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
    })
}

/// A URL scheme or remote-helper name: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// git's rule for ssh's `[user@]host:path`: a colon before the first slash.
fn is_scp_like(repository: &str) -> bool {
    match (repository.find(':'), repository.find('/')) {
        (Some(colon), Some(slash)) => colon > 0 && colon < slash,
        (Some(colon), None) => colon > 0,
        _ => false,
    }
}

/// One git command for a [`GitSandbox`] to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxedGit {
    /// `git` and its arguments (paths as the sandbox sees them).
    pub argv: Vec<String>,
    /// The whole environment of the command.
    pub env: BTreeMap<String, String>,
    /// The host directory mounted read-write at [`SANDBOX_WORKSPACE`], the working directory.
    pub workspace: PathBuf,
    /// Host directories bound read-only at the same path (a local repository).
    pub read_only: Vec<PathBuf>,
    /// The longest the command may take; past it the sandbox is killed.
    pub timeout: Duration,
    /// The most bytes of stdout kept.
    pub stdout_limit: u64,
}

/// What a sandboxed git command did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SandboxedOutput {
    /// The exit code (124 after the timeout, 128+N after signal N).
    pub exit_code: i32,
    /// Whether the timeout killed it.
    pub timed_out: bool,
    /// stdout, at most [`SandboxedGit::stdout_limit`] bytes.
    pub stdout: Vec<u8>,
    /// Whether stdout was cut.
    pub stdout_truncated: bool,
    /// stderr (bounded by the sandbox).
    pub stderr: Vec<u8>,
}

/// Runs git commands in a sandbox: the host's system directories read-only (its `git`), only
/// the workspace writable, as a user that owns nothing on the host, with outbound network of
/// its own that reaches no address of the host. Blocking: called from a blocking thread.
pub trait GitSandbox: Send + Sync + fmt::Debug {
    /// Runs `git` to its end; `Err` when the sandbox could not be built (the reason).
    fn run(&self, git: &SandboxedGit) -> Result<SandboxedOutput, String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<PathBuf> {
        vec![PathBuf::from("/srv/repos")]
    }

    #[test]
    fn network_urls_and_scp_form_are_remote() {
        for url in [
            "https://example.com/a.git",
            "HTTP://example.com/a",
            "git://example.com/a",
            "ssh://git@example.com/a",
            "git@github.com:owner/repo.git",
            "example.com:repo",
        ] {
            assert_eq!(check_source(url, &[]), Ok(GitSource::Remote), "{url}");
        }
    }

    #[test]
    fn file_urls_remote_helpers_and_other_schemes_are_refused() {
        for (url, transport) in [
            ("file:///srv/repos/a", "file"),
            ("FILE:///etc", "file"),
            ("ext::sh -c touch% /tmp/pwned", "ext"),
            ("fd::3", "fd"),
            ("ext::/srv/repos/a", "ext"),
            ("ftp://example.com/a", "ftp"),
            ("testgit::/srv/repos/a", "testgit"),
        ] {
            assert_eq!(
                check_source(url, &allowed()),
                Err(SourceError::Transport {
                    repository: url.to_owned(),
                    transport: transport.to_owned()
                }),
                "{url}"
            );
        }
    }

    #[test]
    fn local_paths_only_under_allow_local() {
        assert_eq!(
            check_source("/srv/repos/a", &allowed()),
            Ok(GitSource::Local(PathBuf::from("/srv/repos/a")))
        );
        assert_eq!(
            check_source("/srv/repos/a/", &allowed()),
            Ok(GitSource::Local(PathBuf::from("/srv/repos/a")))
        );
        assert_eq!(
            check_source("/srv/repository", &allowed()),
            Err(SourceError::NotAllowed {
                repository: "/srv/repository".to_owned(),
                allowed: "/srv/repos".to_owned()
            })
        );
        assert_eq!(
            check_source("/root/secret", &[]),
            Err(SourceError::NotAllowed {
                repository: "/root/secret".to_owned(),
                allowed: "none".to_owned()
            })
        );
        for path in ["/srv/repos/../../root/x", "/srv/repos/a/..", "repo", "./a"] {
            assert_eq!(
                check_source(path, &allowed()),
                Err(SourceError::LocalPath(path.to_owned())),
                "{path}"
            );
        }
    }
}
