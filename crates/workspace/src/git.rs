//! Git checkouts into workspaces, and what an agent changed since.
//!
//! [`clone_at`] clones a repository (a local path or a URL the host can reach) into a workspace
//! directory and checks out a branch, a tag or a commit; [`diff_against`] gives the workspace's
//! changes against that commit — modified, deleted and new (untracked, not ignored) files —
//! without touching the workspace's repository at all.
//!
//! Every `git` runs with an empty environment (no user or system config, `HOME` an empty
//! scratch directory, `GIT_TERMINAL_PROMPT=0`, ssh in batch mode, stdin `/dev/null`), with
//! hooks disabled (`core.hooksPath=/dev/null`, no templates), `core.fsmonitor` off, the `ext::`
//! transport refused, and a timeout after which its whole process group is killed.
//!
//! **The workspace's `.git` is untrusted after a task has run** — the agent could have written
//! `core.fsmonitor`, filter drivers or hooks into it, and git runs those. So the diff never
//! uses it as a repository: it runs in a scratch repository of its own (`GIT_DIR`), whose only
//! link to the workspace is an `objects/info/alternates` entry for the workspace's object
//! store (objects are data, never run), with a scratch index (`GIT_INDEX_FILE`) seeded from
//! the base commit (`read-tree`), then `add -A` and `diff --cached`. The workspace's index,
//! refs and objects are left exactly as they were. Without the filter and diff drivers of the
//! workspace's config, `.gitattributes` can only change line endings, not run anything.
//!
//! Clones use `--no-local`: a local repository is read through the pack protocol, never
//! hard-linked, so handing the workspace to the sandbox's user (`lchown`) cannot change the
//! source repository's files. Only the repositories [`check_source`] allows are cloned (a
//! local path only under [`GitOptions::allow_local`], checked again once resolved), with
//! every transport but https, http, git, ssh (and `file` for an allowed local path) off. With
//! [`GitOptions::sandbox`] every git command of the clone runs in that sandbox, never on the
//! host; the server always sets one.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::command::{self, Finished, RunError};
use crate::gitsource::{
    check_source, GitSandbox, GitSource, SandboxedGit, SourceError, REMOTE_PROTOCOLS,
    SANDBOX_WORKSPACE,
};

/// How git is run.
#[derive(Debug, Clone)]
pub struct GitOptions {
    /// The `git` program (default `git`, looked up in the system `PATH`).
    pub program: PathBuf,
    /// The longest any one git command may take (default 10 minutes).
    pub timeout: Duration,
    /// The most bytes of patch [`diff_against`] keeps (default 16 MiB); past it the patch is
    /// cut and [`GitDiff::truncated`] set.
    pub max_patch_bytes: u64,
    /// Where the scratch repository of [`diff_against`] goes (default the system temporary
    /// directory). It receives the blobs of the changed files, so it needs room for them.
    pub scratch_dir: Option<PathBuf>,
    /// Extra environment for git (proxy settings, say); the environment is otherwise empty.
    pub env: Vec<(String, String)>,
    /// Directories local repositories may be cloned from (default none: URLs only).
    pub allow_local: Vec<PathBuf>,
    /// Where a clone's git commands run; `None` runs them on the host, as this process (for
    /// trusted callers and tests: the server always sets one).
    pub sandbox: Option<Arc<dyn GitSandbox>>,
}

impl Default for GitOptions {
    fn default() -> Self {
        Self {
            program: PathBuf::from("git"),
            timeout: Duration::from_secs(600),
            max_patch_bytes: 16 * 1024 * 1024,
            scratch_dir: None,
            env: Vec::new(),
            allow_local: Vec::new(),
            sandbox: None,
        }
    }
}

/// Why a git operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// An empty repository argument, one starting with `-`, or with control characters.
    #[error("invalid repository {0:?}: a path or URL, not starting with `-`, without control characters")]
    InvalidRepository(String),
    /// A transport or a local path that may not be cloned from.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// An empty ref, one starting with `-`, or with whitespace or control characters.
    #[error(
        "invalid ref {0:?}: a branch, tag or commit name, not starting with `-`, without spaces"
    )]
    InvalidRef(String),
    /// A base commit that is not a full hexadecimal object id.
    #[error("invalid base commit {0:?}: a full commit id (40 or 64 hex digits) is expected")]
    InvalidCommit(String),
    /// The repository does not exist or is not a git repository.
    #[error("{repository}: not a git repository ({stderr})")]
    NotARepository {
        /// The repository as given.
        repository: String,
        /// What git said.
        stderr: String,
    },
    /// `git clone` failed for another reason (network, authentication, …).
    #[error("cloning {repository} failed: {stderr}")]
    CloneFailed {
        /// The repository as given.
        repository: String,
        /// What git said.
        stderr: String,
    },
    /// The checkout left files of the commit unwritten (git exits 0 then): paths too long or
    /// too deep for the file system. The destination is put back as it was found.
    #[error("cloning {repository}: git could not write {missing} file(s) of the checkout, the first {path:?}… (a path too long or too deep for the file system)")]
    IncompleteCheckout {
        /// The repository as given.
        repository: String,
        /// The first file missing (its first 200 bytes, lossily decoded).
        path: String,
        /// How many are missing (at least).
        missing: usize,
    },
    /// No branch, tag or commit of that name in the repository.
    #[error("{repository} has no branch, tag or commit {reference:?}")]
    UnknownRef {
        /// The repository as given.
        repository: String,
        /// The ref as given.
        reference: String,
    },
    /// The clone destination exists and is not an empty directory.
    #[error("{0}: exists and is not an empty directory")]
    DestinationNotEmpty(PathBuf),
    /// The workspace has no `.git` directory (or it is a symlink or a `gitdir:` file).
    #[error(
        "{0}: no .git directory (the workspace was not cloned, or its repository was removed)"
    )]
    NotAGitWorkspace(PathBuf),
    /// The base commit is not in the workspace's object store any more.
    #[error("commit {0} is not in the workspace's repository")]
    BaseMissing(String),
    /// Another git command failed.
    #[error("git {command} failed: {stderr}")]
    Failed {
        /// The subcommand.
        command: &'static str,
        /// What git said.
        stderr: String,
    },
    /// git could not be started, or did not finish in time.
    #[error("git {command}: {detail}")]
    Run {
        /// The subcommand.
        command: &'static str,
        /// Why.
        detail: String,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// What a ref named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefKind {
    /// A branch: checked out as a local branch tracking `origin/<name>`.
    Branch,
    /// A tag: checked out detached.
    Tag,
    /// A commit id (full or abbreviated): checked out detached.
    Commit,
}

/// The result of [`clone_at`]. Keep `commit`: it is the base of [`diff_against`] (a branch may
/// move; the commit does not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checkout {
    /// The full id of the commit checked out.
    pub commit: String,
    /// The branch, tag or commit as resolved (the default branch's name when none was given).
    pub reference: String,
    /// What `reference` is.
    pub kind: RefKind,
}

/// How a path changed (git's `--name-status` letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileChange {
    /// New (including files that were untracked).
    Added,
    /// Contents or mode changed.
    Modified,
    /// Removed.
    Deleted,
    /// Moved (with `from` set), possibly changed too.
    Renamed,
    /// Copied (with `from` set).
    Copied,
    /// Changed type (file, symlink, submodule).
    TypeChanged,
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedFile {
    /// What happened.
    pub change: FileChange,
    /// The path (the new one for renames and copies), relative to the workspace.
    pub path: String,
    /// The old path of a rename or copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// What changed in a workspace since its base commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitDiff {
    /// The base commit.
    pub base: String,
    /// Every changed path, in git's order.
    pub files: Vec<ChangedFile>,
    /// The unified diff (`git diff --binary`: binary files as applicable base85 patches; bytes
    /// that are not UTF-8 replaced by U+FFFD).
    pub patch: String,
    /// Whether `patch` was cut at [`GitOptions::max_patch_bytes`].
    pub truncated: bool,
}

/// Configuration forced on every git command, whatever any config file says.
const HARDENING: &[&str] = &[
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.untrackedCache=false",
    "core.symlinks=true",
    "core.attributesFile=/dev/null",
    "protocol.allow=never",
    "protocol.ext.allow=never",
    "credential.helper=",
    "submodule.recurse=false",
    "fetch.recurseSubmodules=false",
];

/// Where a [`Git`] runs its commands: a sandbox with the workspace (and a local repository).
struct Boxed<'a> {
    sandbox: &'a dyn GitSandbox,
    workspace: PathBuf,
    read_only: Vec<PathBuf>,
}

/// A git invocation: the program, the hardened config and the controlled environment.
struct Git<'a> {
    options: &'a GitOptions,
    home: PathBuf,
    env: Vec<(&'static str, OsString)>,
    config: Vec<String>,
    bare_off: bool,
    boxed: Option<&'a Boxed<'a>>,
}

impl<'a> Git<'a> {
    fn new(options: &'a GitOptions, home: &Path) -> Self {
        Self {
            options,
            home: home.to_path_buf(),
            env: Vec::new(),
            config: Vec::new(),
            bare_off: false,
            boxed: None,
        }
    }

    /// Runs every command in `boxed` (paths as the sandbox sees them).
    fn boxed(mut self, boxed: Option<&'a Boxed<'a>>) -> Self {
        self.boxed = boxed;
        self
    }

    /// Runs against `git_dir` with `work_tree` (`core.bare=false` whatever the repository
    /// says).
    fn in_repo(mut self, git_dir: &Path, work_tree: &Path) -> Self {
        self.env.push(("GIT_DIR", git_dir.into()));
        self.env.push(("GIT_WORK_TREE", work_tree.into()));
        self.bare_off = true;
        self
    }

    fn with_env(mut self, name: &'static str, value: impl Into<OsString>) -> Self {
        self.env.push((name, value.into()));
        self
    }

    fn with_config(mut self, setting: String) -> Self {
        self.config.push(setting);
        self
    }

    /// The environment (beyond `PATH` and `LC_ALL`) and the arguments after the program.
    fn parts(&self, args: &[OsString]) -> (Vec<(String, OsString)>, Vec<OsString>) {
        let mut env: Vec<(String, OsString)> = [
            ("HOME", self.home.clone().into()),
            ("GIT_CONFIG_NOSYSTEM", "1".into()),
            ("GIT_CONFIG_GLOBAL", "/dev/null".into()),
            ("GIT_TERMINAL_PROMPT", "0".into()),
            ("GIT_SSH_COMMAND", "ssh -o BatchMode=yes".into()),
            ("GIT_OPTIONAL_LOCKS", "0".into()),
            ("GIT_ATTR_NOSYSTEM", "1".into()),
            ("GIT_NO_REPLACE_OBJECTS", "1".into()),
            ("GIT_PROTOCOL_FROM_USER", "0".into()),
        ]
        .into_iter()
        .map(|(name, value): (&str, OsString)| (name.to_owned(), value))
        .collect();
        env.extend(self.env.iter().map(|(n, v)| ((*n).to_owned(), v.clone())));
        for (name, value) in &self.options.env {
            env.push((name.clone(), value.into()));
        }
        let mut argv: Vec<OsString> = Vec::new();
        let settings = HARDENING.iter().map(|s| (*s).to_owned());
        for setting in settings.chain(self.config.iter().cloned()) {
            argv.push("-c".into());
            argv.push(setting.into());
        }
        if self.bare_off {
            argv.push("-c".into());
            argv.push("core.bare=false".into());
        }
        argv.extend(args.iter().cloned());
        (env, argv)
    }

    /// Runs `git args…` (on the host, or in the sandbox) to its end.
    fn exec(
        &self,
        name: &'static str,
        args: &[OsString],
        stdout_limit: u64,
    ) -> Result<Finished, GitError> {
        let (env, argv) = self.parts(args);
        if let Some(boxed) = self.boxed {
            return self.exec_boxed(boxed, name, env, argv, stdout_limit);
        }
        let env: Vec<(&str, OsString)> = env.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        let mut cmd = command::command(&self.options.program, &env);
        cmd.args(argv);
        command::run(cmd, self.options.timeout, stdout_limit).map_err(|e| GitError::Run {
            command: name,
            detail: match e {
                RunError::Timeout { after, .. } => {
                    format!("did not finish within {after:?} and was killed")
                }
                other => other.to_string(),
            },
        })
    }

    fn exec_boxed(
        &self,
        boxed: &Boxed<'_>,
        name: &'static str,
        env: Vec<(String, OsString)>,
        argv: Vec<OsString>,
        stdout_limit: u64,
    ) -> Result<Finished, GitError> {
        let text = |value: OsString| {
            value.into_string().map_err(|value| GitError::Run {
                command: name,
                detail: format!("{value:?} is not UTF-8, which a sandbox's command must be"),
            })
        };
        let mut env_text = std::collections::BTreeMap::new();
        env_text.insert("PATH".to_owned(), command::SYSTEM_PATH.to_owned());
        env_text.insert("LC_ALL".to_owned(), "C".to_owned());
        for (key, value) in env {
            env_text.insert(key, text(value)?);
        }
        let program = text(self.options.program.clone().into_os_string())?;
        let mut args = vec![program];
        for arg in argv {
            args.push(text(arg)?);
        }
        let git = SandboxedGit {
            argv: args,
            env: env_text,
            workspace: boxed.workspace.clone(),
            read_only: boxed.read_only.clone(),
            timeout: self.options.timeout,
            stdout_limit,
        };
        let out = boxed.sandbox.run(&git).map_err(|detail| GitError::Run {
            command: name,
            detail: format!("in its sandbox: {detail}"),
        })?;
        if out.timed_out {
            return Err(GitError::Run {
                command: name,
                detail: format!(
                    "did not finish within {:?} and was killed",
                    self.options.timeout
                ),
            });
        }
        Ok(Finished {
            status: ExitStatus::from_raw((out.exit_code & 0xff) << 8),
            stdout: out.stdout,
            stdout_truncated: out.stdout_truncated,
            stderr: out.stderr,
        })
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, name: &'static str, args: &[&str]) -> Result<Vec<u8>, GitError> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let done = self.exec(name, &args, 1024 * 1024)?;
        Ok(succeeded(name, done)?.stdout)
    }

    /// `rev-parse --verify` of `spec^{commit}`: the full id, or `None`.
    fn commit_of(&self, spec: &str) -> Result<Option<String>, GitError> {
        let spec = format!("{spec}^{{commit}}");
        let args: Vec<OsString> = [
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let done = self.exec("rev-parse", &args, 4096)?;
        let id = String::from_utf8_lossy(&done.stdout).trim().to_owned();
        Ok((done.status.success() && is_full_id(&id)).then_some(id))
    }
}

fn succeeded(name: &'static str, done: Finished) -> Result<Finished, GitError> {
    if done.status.success() {
        Ok(done)
    } else {
        Err(GitError::Failed {
            command: name,
            stderr: done.stderr_text(),
        })
    }
}

fn is_full_id(id: &str) -> bool {
    (id.len() == 40 || id.len() == 64) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn scratch(options: &GitOptions, prefix: &str) -> Result<tempfile::TempDir, GitError> {
    let dir = options
        .scratch_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&dir)
        .map_err(|source| GitError::Io {
            op: "create scratch directory in",
            path: dir,
            source,
        })
}

fn check_repository(repository: &str) -> Result<(), GitError> {
    if repository.is_empty()
        || repository.starts_with('-')
        || repository.chars().any(char::is_control)
    {
        return Err(GitError::InvalidRepository(repository.to_owned()));
    }
    Ok(())
}

fn check_ref(reference: &str) -> Result<(), GitError> {
    if reference.is_empty()
        || reference.starts_with('-')
        || reference
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(GitError::InvalidRef(reference.to_owned()));
    }
    Ok(())
}

/// Clones `repository` (a URL, or a local path under [`GitOptions::allow_local`]) into `dest`
/// (absent, or an empty directory) and checks out `reference` — a branch, a tag or a commit
/// id, looked up in that order; `None` for the repository's default branch. Hooks never run;
/// submodules are not cloned; with [`GitOptions::sandbox`] nothing runs on the host. On any
/// failure `dest` is left as it was found (absent or empty).
pub fn clone_at(
    repository: &str,
    reference: Option<&str>,
    dest: &Path,
    options: &GitOptions,
) -> Result<Checkout, GitError> {
    check_repository(repository)?;
    if let Some(reference) = reference {
        check_ref(reference)?;
    }
    let source = resolve_source(repository, &options.allow_local)?;
    let existed = match fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(dest).map_err(|source| GitError::Io {
                op: "read",
                path: dest.to_path_buf(),
                source,
            })?;
            if entries.next().is_some() {
                return Err(GitError::DestinationNotEmpty(dest.to_path_buf()));
            }
            true
        }
        Ok(_) => return Err(GitError::DestinationNotEmpty(dest.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(source) => {
            return Err(GitError::Io {
                op: "stat",
                path: dest.to_path_buf(),
                source,
            })
        }
    };
    let home = scratch(options, ".conductor-git-home-")?;
    let result = match &options.sandbox {
        Some(sandbox) => clone_boxed(repository, &source, reference, dest, options, sandbox),
        None => {
            let at = Clone {
                repository,
                url: source_url(repository, &source),
                local: matches!(source, GitSource::Local(_)),
                dest,
            };
            clone_and_checkout(&at, reference, &Git::new(options, home.path()))
        }
    };
    if result.is_err() {
        undo_clone(dest, existed);
    }
    result
}

/// The repository checked by [`check_source`]; a local one resolved (symlinks followed) and
/// checked again against the resolved allowed directories.
fn resolve_source(repository: &str, allow_local: &[PathBuf]) -> Result<GitSource, GitError> {
    let GitSource::Local(path) = check_source(repository, allow_local)? else {
        return Ok(GitSource::Remote);
    };
    let real = fs::canonicalize(&path).map_err(|e| GitError::NotARepository {
        repository: repository.to_owned(),
        stderr: e.to_string(),
    })?;
    let allowed: Vec<PathBuf> = allow_local
        .iter()
        .filter_map(|dir| fs::canonicalize(dir).ok())
        .collect();
    match check_source(&real.to_string_lossy(), &allowed) {
        Ok(GitSource::Local(real)) => Ok(GitSource::Local(real)),
        Ok(GitSource::Remote) | Err(_) => Err(GitError::Source(SourceError::NotAllowed {
            repository: format!("{repository} (resolved to {})", real.display()),
            allowed: allow_local
                .iter()
                .map(|dir| dir.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })),
    }
}

fn source_url(repository: &str, source: &GitSource) -> String {
    match source {
        GitSource::Local(path) => path.to_string_lossy().into_owned(),
        GitSource::Remote => repository.to_owned(),
    }
}

/// A clone's source and destination as git sees them.
struct Clone<'a> {
    /// As given (for errors).
    repository: &'a str,
    /// What git is given.
    url: String,
    /// Whether it is an allowed local path (the `file` transport).
    local: bool,
    /// The destination.
    dest: &'a Path,
}

/// [`clone_and_checkout`] with every git command in `sandbox`: the workspace (created when
/// absent) is its `/workspace`, a local repository bound read-only.
fn clone_boxed(
    repository: &str,
    source: &GitSource,
    reference: Option<&str>,
    dest: &Path,
    options: &GitOptions,
    sandbox: &Arc<dyn GitSandbox>,
) -> Result<Checkout, GitError> {
    fs::create_dir_all(dest).map_err(|source| GitError::Io {
        op: "create",
        path: dest.to_path_buf(),
        source,
    })?;
    let boxed = Boxed {
        sandbox: sandbox.as_ref(),
        workspace: dest.to_path_buf(),
        read_only: match source {
            GitSource::Local(path) => vec![path.clone()],
            GitSource::Remote => Vec::new(),
        },
    };
    let at = Clone {
        repository,
        url: source_url(repository, source),
        local: matches!(source, GitSource::Local(_)),
        dest: Path::new(SANDBOX_WORKSPACE),
    };
    // The sandbox's own /tmp is the home.
    let git = Git::new(options, Path::new("/tmp")).boxed(Some(&boxed));
    clone_and_checkout(&at, reference, &git)
}

fn clone_and_checkout(
    at: &Clone<'_>,
    reference: Option<&str>,
    base: &Git<'_>,
) -> Result<Checkout, GitError> {
    let (repository, dest) = (at.repository, at.dest);
    let fresh = || Git::new(base.options, &base.home).boxed(base.boxed);
    let mut git = fresh();
    for protocol in REMOTE_PROTOCOLS {
        git = git.with_config(format!("protocol.{protocol}.allow=always"));
    }
    let mut upload_pack = None;
    if at.local {
        git = git.with_config("protocol.file.allow=always".to_owned());
        // An allowed local repository may belong to another user than the clone's; git does
        // not pass `-c` settings on to a local upload-pack.
        upload_pack = Some("--upload-pack=git -c safe.directory='*' upload-pack");
    }
    let args: Vec<OsString> = [
        "clone",
        "--quiet",
        "--no-checkout",
        "--no-local",
        "--template=",
        "--origin",
        "origin",
    ]
    .iter()
    .chain(&upload_pack)
    .chain(&["--"])
    .map(OsString::from)
    .chain([OsString::from(&at.url), dest.as_os_str().to_owned()])
    .collect();
    let done = git.exec("clone", &args, 64 * 1024)?;
    if !done.status.success() {
        let stderr = done.stderr_text();
        let not_a_repo = ["does not appear to be a git repository", "does not exist"]
            .iter()
            .any(|needle| stderr.contains(needle));
        return Err(if not_a_repo {
            GitError::NotARepository {
                repository: repository.to_owned(),
                stderr,
            }
        } else {
            GitError::CloneFailed {
                repository: repository.to_owned(),
                stderr,
            }
        });
    }

    let repo = fresh().in_repo(&dest.join(".git"), dest);
    check_out(&repo, repository, reference)
}

/// Resolves `reference` (or the default branch) in the fresh clone and checks it out.
fn check_out(
    repo: &Git<'_>,
    repository: &str,
    reference: Option<&str>,
) -> Result<Checkout, GitError> {
    let (name, kind, commit) = match reference {
        None => {
            let head = repo.ok(
                "symbolic-ref",
                &["symbolic-ref", "--short", "refs/remotes/origin/HEAD"],
            )?;
            let head = String::from_utf8_lossy(&head).trim().to_owned();
            let name = head.strip_prefix("origin/").unwrap_or(&head).to_owned();
            let commit = repo
                .commit_of(&format!("refs/remotes/origin/{name}"))?
                .ok_or_else(|| GitError::UnknownRef {
                    repository: repository.to_owned(),
                    reference: name.clone(),
                })?;
            (name, RefKind::Branch, commit)
        }
        Some(reference) => resolve(repo, repository, reference)?,
    };
    match kind {
        RefKind::Branch => {
            let upstream = format!("origin/{name}");
            repo.ok(
                "checkout",
                &["checkout", "--quiet", "--track", "-B", &name, &upstream],
            )?;
        }
        RefKind::Tag | RefKind::Commit => {
            repo.ok("checkout", &["checkout", "--quiet", "--detach", &commit])?;
        }
    }
    // git reports a file it could not write (a path past PATH_MAX) and still exits 0.
    let deleted = repo.ok("ls-files", &["ls-files", "--deleted", "-z"])?;
    let mut missing = deleted.split(|&b| b == 0).filter(|p| !p.is_empty());
    if let Some(first) = missing.next() {
        return Err(GitError::IncompleteCheckout {
            repository: repository.to_owned(),
            path: String::from_utf8_lossy(&first[..first.len().min(200)]).into_owned(),
            missing: 1 + missing.count(),
        });
    }
    Ok(Checkout {
        commit,
        reference: name,
        kind,
    })
}

/// A branch of origin, then a tag, then a commit id (hex only, so `HEAD~3` and friends are not
/// taken for commits).
fn resolve(
    repo: &Git<'_>,
    repository: &str,
    reference: &str,
) -> Result<(String, RefKind, String), GitError> {
    let branch = reference.strip_prefix("refs/heads/").unwrap_or(reference);
    if let Some(commit) = repo.commit_of(&format!("refs/remotes/origin/{branch}"))? {
        return Ok((branch.to_owned(), RefKind::Branch, commit));
    }
    let tag = reference.strip_prefix("refs/tags/").unwrap_or(reference);
    if let Some(commit) = repo.commit_of(&format!("refs/tags/{tag}"))? {
        return Ok((tag.to_owned(), RefKind::Tag, commit));
    }
    if (4..=64).contains(&reference.len()) && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
        if let Some(commit) = repo.commit_of(reference)? {
            return Ok((commit.clone(), RefKind::Commit, commit));
        }
    }
    Err(GitError::UnknownRef {
        repository: repository.to_owned(),
        reference: reference.to_owned(),
    })
}

/// Puts `dest` back as it was: removed, or emptied (at any depth: a repository's tree can be
/// as deep as git allows, see `walk.rs`).
fn undo_clone(dest: &Path, existed: bool) {
    let _ = if existed {
        crate::walk::remove_contents(dest)
    } else {
        crate::walk::remove_tree(dest)
    };
}

/// What changed in `workspace` since `base` (a full commit id, [`Checkout::commit`]):
/// modified, deleted, renamed and new files, ignored files (`.gitignore`) excepted; commits
/// the agent made count as changes too, since the comparison is with the work tree. The
/// workspace's repository is only read (its object store), never run or written: see the
/// module documentation.
pub fn diff_against(
    workspace: &Path,
    base: &str,
    options: &GitOptions,
) -> Result<GitDiff, GitError> {
    if !is_full_id(base) {
        return Err(GitError::InvalidCommit(base.to_owned()));
    }
    let dot_git = workspace.join(".git");
    let objects = dot_git.join("objects");
    let real_dir = |p: &Path| fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false);
    if !real_dir(&dot_git) || !real_dir(&objects) {
        return Err(GitError::NotAGitWorkspace(workspace.to_path_buf()));
    }
    let objects = fs::canonicalize(&objects).map_err(|source| GitError::Io {
        op: "resolve",
        path: objects.clone(),
        source,
    })?;

    let scratch = scratch(options, ".conductor-git-diff-")?;
    let git_dir = scratch.path().join("git");
    let home = scratch.path().join("home");
    fs::create_dir(&home).map_err(|source| GitError::Io {
        op: "create",
        path: home.clone(),
        source,
    })?;
    let init = Git::new(options, &home);
    let args: Vec<OsString> = ["init", "--quiet", "--bare", "--template="]
        .iter()
        .map(OsString::from)
        .chain([git_dir.clone().into_os_string()])
        .collect();
    succeeded("init", init.exec("init", &args, 4096)?)?;
    let alternates = git_dir.join("objects/info/alternates");
    let mut line = objects.into_os_string();
    line.push("\n");
    fs::write(
        &alternates,
        std::os::unix::ffi::OsStrExt::as_bytes(line.as_os_str()),
    )
    .map_err(|source| GitError::Io {
        op: "write",
        path: alternates.clone(),
        source,
    })?;

    let git = Git::new(options, &home)
        .in_repo(&git_dir, workspace)
        .with_env("GIT_INDEX_FILE", scratch.path().join("index"));
    if git.commit_of(base)?.is_none() {
        return Err(GitError::BaseMissing(base.to_owned()));
    }
    git.ok("read-tree", &["read-tree", "--end-of-options", base])?;
    git.ok("add", &["add", "--all", "--", "."])?;

    let diff_args: Vec<OsString> = [
        "diff",
        "--cached",
        "--no-ext-diff",
        "--no-textconv",
        "--no-color",
        "--binary",
        "--end-of-options",
        base,
        "--",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let done = succeeded(
        "diff",
        git.exec("diff", &diff_args, options.max_patch_bytes)?,
    )?;
    let patch = String::from_utf8_lossy(&done.stdout).into_owned();
    let truncated = done.stdout_truncated;

    let status_args = [
        "diff",
        "--cached",
        "--no-ext-diff",
        "--name-status",
        "-z",
        "--end-of-options",
        base,
        "--",
    ];
    let names = git.ok("diff", &status_args)?;
    Ok(GitDiff {
        base: base.to_owned(),
        files: parse_name_status(&names),
        patch,
        truncated,
    })
}

/// Parses `git diff --name-status -z`: a status (`M`, `A`, `D`, `T`, `R100`, `C75`, …) then one
/// path, or two for renames and copies, each NUL-terminated.
fn parse_name_status(out: &[u8]) -> Vec<ChangedFile> {
    let mut fields = out
        .split(|&b| b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned());
    let mut files = Vec::new();
    while let Some(status) = fields.next() {
        let change = match status.as_bytes().first() {
            Some(b'A') => FileChange::Added,
            Some(b'M') => FileChange::Modified,
            Some(b'D') => FileChange::Deleted,
            Some(b'R') => FileChange::Renamed,
            Some(b'C') => FileChange::Copied,
            Some(b'T') => FileChange::TypeChanged,
            _ => continue,
        };
        let two_paths = matches!(change, FileChange::Renamed | FileChange::Copied);
        let from = if two_paths { fields.next() } else { None };
        let Some(path) = fields.next() else { break };
        files.push(ChangedFile { change, path, from });
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_status_is_parsed() {
        let out = b"M\0src/lib.rs\0A\0new file\0D\0gone\0R087\0old\0moved\0T\0link\0";
        let change = |change, path: &str, from: Option<&str>| ChangedFile {
            change,
            path: path.to_owned(),
            from: from.map(str::to_owned),
        };
        assert_eq!(
            parse_name_status(out),
            vec![
                change(FileChange::Modified, "src/lib.rs", None),
                change(FileChange::Added, "new file", None),
                change(FileChange::Deleted, "gone", None),
                change(FileChange::Renamed, "moved", Some("old")),
                change(FileChange::TypeChanged, "link", None),
            ]
        );
    }

    #[test]
    fn arguments_that_git_would_take_for_options_are_refused() {
        assert!(matches!(
            check_repository("--upload-pack=touch /tmp/x"),
            Err(GitError::InvalidRepository(_))
        ));
        assert!(matches!(
            check_repository(""),
            Err(GitError::InvalidRepository(_))
        ));
        assert!(matches!(check_ref("-b"), Err(GitError::InvalidRef(_))));
        assert!(matches!(check_ref("a b"), Err(GitError::InvalidRef(_))));
        assert!(check_ref("release/1.2").is_ok());
        assert!(is_full_id(&"a".repeat(40)));
        assert!(!is_full_id("abc123"));
    }
}
