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
//! source repository's files.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::command::{self, Finished, RunError};

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
}

impl Default for GitOptions {
    fn default() -> Self {
        Self {
            program: PathBuf::from("git"),
            timeout: Duration::from_secs(600),
            max_patch_bytes: 16 * 1024 * 1024,
            scratch_dir: None,
            env: Vec::new(),
        }
    }
}

/// Why a git operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// An empty repository argument, one starting with `-`, or with control characters.
    #[error("invalid repository {0:?}: a path or URL, not starting with `-`, without control characters")]
    InvalidRepository(String),
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
    "protocol.ext.allow=never",
    "credential.helper=",
    "submodule.recurse=false",
];

/// A git invocation: the program, the hardened config and the controlled environment.
struct Git<'a> {
    options: &'a GitOptions,
    home: PathBuf,
    env: Vec<(&'static str, OsString)>,
    bare_off: bool,
}

impl<'a> Git<'a> {
    fn new(options: &'a GitOptions, home: &Path) -> Self {
        Self {
            options,
            home: home.to_path_buf(),
            env: Vec::new(),
            bare_off: false,
        }
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

    fn command(&self, args: &[&str]) -> Command {
        let mut env: Vec<(&str, OsString)> = vec![
            ("HOME", self.home.clone().into()),
            ("GIT_CONFIG_NOSYSTEM", "1".into()),
            ("GIT_CONFIG_GLOBAL", "/dev/null".into()),
            ("GIT_TERMINAL_PROMPT", "0".into()),
            ("GIT_SSH_COMMAND", "ssh -o BatchMode=yes".into()),
            ("GIT_OPTIONAL_LOCKS", "0".into()),
            ("GIT_ATTR_NOSYSTEM", "1".into()),
        ];
        env.extend(self.env.iter().cloned());
        let mut cmd = command::command(&self.options.program, &env);
        for (name, value) in &self.options.env {
            cmd.env(name, value);
        }
        for setting in HARDENING {
            cmd.args(["-c", setting]);
        }
        if self.bare_off {
            cmd.args(["-c", "core.bare=false"]);
        }
        cmd.args(args);
        cmd
    }

    fn run(
        &self,
        name: &'static str,
        cmd: Command,
        stdout_limit: u64,
    ) -> Result<Finished, GitError> {
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

    /// Runs and requires success; returns stdout.
    fn ok(&self, name: &'static str, args: &[&str]) -> Result<Vec<u8>, GitError> {
        let done = self.run(name, self.command(args), 1024 * 1024)?;
        Ok(succeeded(name, done)?.stdout)
    }

    /// `rev-parse --verify` of `spec^{commit}`: the full id, or `None`.
    fn commit_of(&self, spec: &str) -> Result<Option<String>, GitError> {
        let spec = format!("{spec}^{{commit}}");
        let cmd = self.command(&[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ]);
        let done = self.run("rev-parse", cmd, 4096)?;
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

/// Clones `repository` (a local path or URL) into `dest` (absent, or an empty directory) and
/// checks out `reference` — a branch, a tag or a commit id, looked up in that order; `None`
/// for the repository's default branch. Hooks never run; submodules are not cloned. On any
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
    let result = clone_and_checkout(repository, reference, dest, options, home.path());
    if result.is_err() {
        undo_clone(dest, existed);
    }
    result
}

fn clone_and_checkout(
    repository: &str,
    reference: Option<&str>,
    dest: &Path,
    options: &GitOptions,
    home: &Path,
) -> Result<Checkout, GitError> {
    let git = Git::new(options, home);
    let mut cmd = git.command(&[
        "clone",
        "--quiet",
        "--no-checkout",
        "--no-local",
        "--template=",
        "--origin",
        "origin",
        "--",
        repository,
    ]);
    cmd.arg(dest);
    let done = git.run("clone", cmd, 64 * 1024)?;
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

    let repo = Git::new(options, home).in_repo(&dest.join(".git"), dest);
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
        Some(reference) => resolve(&repo, repository, reference)?,
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
    let mut cmd = init.command(&["init", "--quiet", "--bare", "--template="]);
    cmd.arg(&git_dir);
    succeeded("init", init.run("init", cmd, 4096)?)?;
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

    let diff_args = [
        "diff",
        "--cached",
        "--no-ext-diff",
        "--no-textconv",
        "--no-color",
        "--binary",
        "--end-of-options",
        base,
        "--",
    ];
    let done = succeeded(
        "diff",
        git.run("diff", git.command(&diff_args), options.max_patch_bytes)?,
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
