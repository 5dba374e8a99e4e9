//! Git checkouts and workspace diffs, on local repositories made in tempdirs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use conductor_workspace::{
    clone_at, diff_against, ChangedFile, Checkout, FileChange, GitError, GitOptions, RefKind,
};

use crate::support::write;

/// Runs the test's own git (not the code under test) in `dir`, returning trimmed stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "safe.directory=*",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct Origin {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
    /// main's first commit, tagged v1, where `feature` starts.
    c1: String,
    /// main's tip.
    c2: String,
    /// feature's tip.
    f1: String,
}

/// A repository with `main` (two commits), tag `v1` on the first, and branch `feature`.
fn origin() -> Origin {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let repo = root.join("origin");
    fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    write(&repo, "a.txt", b"one\n");
    write(&repo, "dir/b.txt", b"bee\n");
    write(&repo, ".gitignore", b"*.log\n");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let c1 = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["tag", "-a", "v1", "-m", "v1"]);
    git(&repo, &["branch", "feature"]);
    write(&repo, "a.txt", b"one\ntwo\n");
    git(&repo, &["commit", "-q", "-am", "second"]);
    let c2 = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "-q", "feature"]);
    write(&repo, "f.txt", b"feature\n");
    git(&repo, &["add", "f.txt"]);
    git(&repo, &["commit", "-q", "-m", "feature"]);
    let f1 = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "-q", "main"]);
    Origin {
        _tmp: tmp,
        root,
        repo,
        c1,
        c2,
        f1,
    }
}

fn repo_arg(o: &Origin) -> &str {
    o.repo.to_str().unwrap()
}

impl Origin {
    /// Options that allow local clones from this origin's temporary directory.
    fn options(&self) -> GitOptions {
        GitOptions {
            allow_local: vec![self.root.clone()],
            ..GitOptions::default()
        }
    }
}

#[test]
fn clones_a_branch_a_tag_a_commit_or_the_default_branch() {
    let o = origin();
    let options = o.options();

    let ws = o.root.join("ws-branch");
    let checkout = clone_at(repo_arg(&o), Some("feature"), &ws, &options).unwrap();
    assert_eq!(
        checkout,
        Checkout {
            commit: o.f1.clone(),
            reference: "feature".into(),
            kind: RefKind::Branch
        }
    );
    assert_eq!(fs::read(ws.join("f.txt")).unwrap(), b"feature\n");
    assert_eq!(git(&ws, &["rev-parse", "--abbrev-ref", "HEAD"]), "feature");
    assert_eq!(
        git(&ws, &["rev-parse", "--abbrev-ref", "feature@{upstream}"]),
        "origin/feature"
    );
    assert_eq!(git(&ws, &["status", "--porcelain"]), "");

    let ws = o.root.join("ws-tag");
    let checkout = clone_at(repo_arg(&o), Some("v1"), &ws, &options).unwrap();
    assert_eq!(
        checkout,
        Checkout {
            commit: o.c1.clone(),
            reference: "v1".into(),
            kind: RefKind::Tag
        }
    );
    assert_eq!(fs::read(ws.join("a.txt")).unwrap(), b"one\n");
    assert_eq!(git(&ws, &["rev-parse", "--abbrev-ref", "HEAD"]), "HEAD");

    // An abbreviated commit, into an existing empty directory.
    let ws = o.root.join("ws-commit");
    fs::create_dir(&ws).unwrap();
    let checkout = clone_at(repo_arg(&o), Some(&o.c1[..10]), &ws, &options).unwrap();
    assert_eq!(
        checkout,
        Checkout {
            commit: o.c1.clone(),
            reference: o.c1.clone(),
            kind: RefKind::Commit
        }
    );
    assert_eq!(git(&ws, &["rev-parse", "HEAD"]), o.c1);

    let ws = o.root.join("ws-default");
    let checkout = clone_at(repo_arg(&o), None, &ws, &options).unwrap();
    assert_eq!(
        checkout,
        Checkout {
            commit: o.c2.clone(),
            reference: "main".into(),
            kind: RefKind::Branch
        }
    );
    assert_eq!(fs::read(ws.join("a.txt")).unwrap(), b"one\ntwo\n");
    // No hooks were installed from templates.
    let hooks = ws.join(".git/hooks");
    assert!(!hooks.exists() || fs::read_dir(&hooks).unwrap().count() == 0);
}

#[test]
fn clone_errors_are_clear_and_leave_the_destination_as_found() {
    let o = origin();
    let options = o.options();

    let absent = o.root.join("absent");
    let err = clone_at(repo_arg(&o), Some("no-such-ref"), &absent, &options).unwrap_err();
    assert!(
        matches!(&err, GitError::UnknownRef { reference, .. } if reference == "no-such-ref"),
        "{err}"
    );
    assert!(!absent.exists(), "a failed clone left {absent:?} behind");

    let empty = o.root.join("empty");
    fs::create_dir(&empty).unwrap();
    let err = clone_at(repo_arg(&o), Some("deadbeef"), &empty, &options).unwrap_err();
    assert!(matches!(err, GitError::UnknownRef { .. }), "{err}");
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);

    let plain = o.root.join("plain");
    fs::create_dir(&plain).unwrap();
    let err = clone_at(plain.to_str().unwrap(), None, &absent, &options).unwrap_err();
    assert!(matches!(err, GitError::NotARepository { .. }), "{err}");
    assert!(err.to_string().contains("not a git repository"), "{err}");
    let nonexistent = o.root.join("nonexistent");
    let err = clone_at(nonexistent.to_str().unwrap(), None, &absent, &options).unwrap_err();
    assert!(matches!(err, GitError::NotARepository { .. }), "{err}");
    assert!(!absent.exists());

    write(&o.root, "full/x", b"x");
    let err = clone_at(repo_arg(&o), None, &o.root.join("full"), &options).unwrap_err();
    assert!(matches!(err, GitError::DestinationNotEmpty(_)), "{err}");

    let err = clone_at("--upload-pack=touch /tmp/pwned", None, &absent, &options).unwrap_err();
    assert!(matches!(err, GitError::InvalidRepository(_)), "{err}");
    let err = clone_at(repo_arg(&o), Some("--orphan"), &absent, &options).unwrap_err();
    assert!(matches!(err, GitError::InvalidRef(_)), "{err}");

    let quick = GitOptions {
        timeout: Duration::from_nanos(1),
        ..o.options()
    };
    let err = clone_at(repo_arg(&o), None, &absent, &quick).unwrap_err();
    assert!(
        matches!(&err, GitError::Run { command: "clone", detail } if detail.contains("did not finish")),
        "{err}"
    );
    assert!(!absent.exists());
}

#[test]
fn only_allowed_local_paths_and_network_transports_are_cloned() {
    let o = origin();
    let absent = o.root.join("absent");
    let not_allowed = |err: &GitError| {
        matches!(
            err,
            GitError::Source(conductor_workspace::SourceError::NotAllowed { .. })
        )
    };
    // Not listed: refused before git runs.
    let err = clone_at(repo_arg(&o), None, &absent, &GitOptions::default()).unwrap_err();
    assert!(not_allowed(&err), "{err}");
    assert!(err.to_string().contains("[git] allow_local"), "{err}");
    // Listed, but a symlink in it leads out: refused once resolved.
    let allowed = o.root.join("allowed");
    fs::create_dir(&allowed).unwrap();
    std::os::unix::fs::symlink(&o.repo, allowed.join("escape")).unwrap();
    let options = GitOptions {
        allow_local: vec![allowed.clone()],
        ..GitOptions::default()
    };
    let escape = allowed.join("escape");
    let err = clone_at(escape.to_str().unwrap(), None, &absent, &options).unwrap_err();
    assert!(not_allowed(&err), "{err}");
    assert!(!absent.exists());
    // Transports that read host files or run programs, whatever allow_local says.
    let file_url = format!("file://{}", o.repo.display());
    let ext = format!("ext::git upload-pack {}", o.repo.display());
    for repository in [file_url.as_str(), ext.as_str(), "fd::0"] {
        let err = clone_at(repository, None, &absent, &o.options()).unwrap_err();
        assert!(
            matches!(
                err,
                GitError::Source(conductor_workspace::SourceError::Transport { .. })
            ),
            "{repository}: {err}"
        );
        assert!(!absent.exists());
    }
}

#[test]
fn a_sandboxed_clone_sees_only_the_workspace_and_the_repository_read_only() {
    let o = origin();
    let recorder = std::sync::Arc::new(conductor_testkit::HostGit::default());
    let options = GitOptions {
        sandbox: Some(recorder.clone()),
        ..o.options()
    };
    let ws = o.root.join("ws");
    let checkout = clone_at(repo_arg(&o), Some("v1"), &ws, &options).unwrap();
    assert_eq!(
        (checkout.kind, checkout.commit),
        (RefKind::Tag, o.c1.clone())
    );
    assert_eq!(fs::read(ws.join("a.txt")).unwrap(), b"one\n");
    let calls = recorder.calls.lock().unwrap();
    let repo = o.repo.canonicalize().unwrap();
    let has = |argv: &[String], setting: &str| argv.iter().any(|a| a == setting);
    for call in calls.iter() {
        assert_eq!(call.workspace, ws);
        assert_eq!(call.read_only, vec![repo.clone()]);
        assert_eq!(call.env["HOME"], "/tmp");
        assert!(
            has(&call.argv, "core.hooksPath=/dev/null"),
            "{:?}",
            call.argv
        );
        assert!(has(&call.argv, "protocol.allow=never"), "{:?}", call.argv);
        let host_path = ws.to_str().unwrap();
        assert!(
            !call
                .argv
                .iter()
                .chain(call.env.values())
                .any(|a| a.contains(host_path)),
            "the sandbox was given a host path: {call:?}"
        );
    }
    let clone = &calls[0];
    assert_eq!(
        &clone.argv[clone.argv.len() - 2..],
        &[repo.to_str().unwrap().to_owned(), "/workspace".to_owned()]
    );
    assert!(has(&clone.argv, "protocol.file.allow=always"));
    assert!(has(&clone.argv, "--template="));
    assert!(has(&clone.argv, "--no-local"));
}

/// Makes the changes an agent might: edit, delete, add (untracked), ignored file, a commit.
fn change(ws: &Path) {
    write(ws, "a.txt", b"one\ntwo\nthree\n");
    fs::remove_file(ws.join("dir/b.txt")).unwrap();
    write(ws, "new dir/new.txt", b"brand new\n");
    write(ws, "debug.log", b"ignored\n");
    fs::write(ws.join("bin"), [0u8, 159, 146, 150, 255]).unwrap();
}

#[test]
fn the_diff_has_edits_deletions_and_untracked_files_and_matches_git() {
    let o = origin();
    let options = o.options();
    let ws = o.root.join("ws");
    let checkout = clone_at(repo_arg(&o), Some("main"), &ws, &options).unwrap();
    change(&ws);
    let index_before = fs::read(ws.join(".git/index")).unwrap();
    let status_before = git(&ws, &["status", "--porcelain"]);

    let diff = diff_against(&ws, &checkout.commit, &options).unwrap();
    let file = |change, path: &str| ChangedFile {
        change,
        path: path.into(),
        from: None,
    };
    assert_eq!(
        diff.files,
        vec![
            file(FileChange::Modified, "a.txt"),
            file(FileChange::Added, "bin"),
            file(FileChange::Deleted, "dir/b.txt"),
            file(FileChange::Added, "new dir/new.txt"),
        ]
    );
    assert_eq!(diff.base, checkout.commit);
    assert!(!diff.truncated);

    // The same patch git itself gives after staging everything in a copy of the workspace.
    let copy = o.root.join("copy");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&ws)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    git(&copy, &["add", "-A"]);
    let expected = git(
        &copy,
        &[
            "diff",
            "--cached",
            "--binary",
            "--no-color",
            &checkout.commit,
        ],
    );
    assert_eq!(diff.patch.trim_end(), expected);
    assert!(diff.patch.contains("+three\n"));
    assert!(diff.patch.contains("GIT binary patch"));

    // The workspace's repository is untouched: same index, same status.
    assert_eq!(fs::read(ws.join(".git/index")).unwrap(), index_before);
    assert_eq!(git(&ws, &["status", "--porcelain"]), status_before);

    // A commit by the agent is still a change against the base.
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-q", "-m", "agent"]);
    let after_commit = diff_against(&ws, &checkout.commit, &options).unwrap();
    assert_eq!(after_commit.files, diff.files);

    // Bounded.
    let small = GitOptions {
        allow_local: vec![o.root.clone()],
        max_patch_bytes: 100,
        ..GitOptions::default()
    };
    let cut = diff_against(&ws, &checkout.commit, &small).unwrap();
    assert!(cut.truncated);
    assert_eq!(cut.patch.as_bytes(), &expected.as_bytes()[..100]);
    assert_eq!(cut.files, diff.files);

    // No change: empty.
    let clean = o.root.join("clean");
    let checkout = clone_at(repo_arg(&o), Some("v1"), &clean, &options).unwrap();
    let diff = diff_against(&clean, &checkout.commit, &options).unwrap();
    assert_eq!((diff.files.len(), diff.patch.as_str()), (0, ""));
}

#[test]
fn the_diff_never_runs_what_the_workspace_repository_configures() {
    let o = origin();
    let options = o.options();
    let ws = o.root.join("ws");
    let checkout = clone_at(repo_arg(&o), None, &ws, &options).unwrap();
    let marker = o.root.join("pwned");
    let m = marker.display();
    // What an agent could plant: an fsmonitor, a clean filter on every file, hooks.
    let config = fs::read_to_string(ws.join(".git/config")).unwrap();
    fs::write(
        ws.join(".git/config"),
        format!(
            "{config}[core]\n\tfsmonitor = \"touch {m}-fsmonitor; false\"\n\thooksPath = hooks\n\
             [filter \"evil\"]\n\tclean = \"touch {m}-filter; cat\"\n\trequired = true\n\
             [diff \"evil\"]\n\ttextconv = \"touch {m}-textconv; cat\"\n\
             [diff]\n\texternal = \"touch {m}-external\"\n"
        ),
    )
    .unwrap();
    write(&ws, ".gitattributes", b"* filter=evil diff=evil\n");
    for hook in ["pre-commit", "post-index-change", "reference-transaction"] {
        let path = ws.join("hooks").join(hook);
        write(
            &ws,
            &format!("hooks/{hook}"),
            format!("#!/bin/sh\ntouch {m}-hook\n").as_bytes(),
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    write(&ws, "a.txt", b"changed\n");

    let diff = diff_against(&ws, &checkout.commit, &options).unwrap();
    let names: Vec<(FileChange, &str)> = diff
        .files
        .iter()
        .map(|f| (f.change, f.path.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            (FileChange::Added, ".gitattributes"),
            (FileChange::Modified, "a.txt"),
            (FileChange::Added, "hooks/post-index-change"),
            (FileChange::Added, "hooks/pre-commit"),
            (FileChange::Added, "hooks/reference-transaction"),
        ]
    );
    let planted: Vec<_> = fs::read_dir(&o.root)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pwned"))
        .collect();
    assert_eq!(
        planted,
        Vec::<String>::new(),
        "git ran the workspace's commands"
    );
}

#[test]
fn diff_works_on_a_workspace_owned_by_the_sandbox_user() {
    let o = origin();
    let options = o.options();
    let ws = o.root.join("ws");
    let checkout = clone_at(repo_arg(&o), None, &ws, &options).unwrap();
    write(&ws, "a.txt", b"edited\n");
    if rustix::process::geteuid().is_root() {
        // As the sandbox hands it over: owned by a uid that is not ours.
        let status = Command::new("chown")
            .args(["-R", "2000000000:2000000000"])
            .arg(&ws)
            .status()
            .unwrap();
        assert!(status.success());
    } else {
        eprintln!("note: not root, so the workspace is not chowned to a foreign uid");
    }
    let diff = diff_against(&ws, &checkout.commit, &options).unwrap();
    assert_eq!(
        diff.files,
        vec![ChangedFile {
            change: FileChange::Modified,
            path: "a.txt".into(),
            from: None
        }]
    );
}

#[test]
fn diff_errors_are_clear() {
    let o = origin();
    let options = o.options();
    let ws = o.root.join("ws");
    clone_at(repo_arg(&o), None, &ws, &options).unwrap();

    let missing = "0123456789abcdef0123456789abcdef01234567";
    let err = diff_against(&ws, missing, &options).unwrap_err();
    assert!(
        matches!(&err, GitError::BaseMissing(c) if c == missing),
        "{err}"
    );
    let err = diff_against(&ws, "main", &options).unwrap_err();
    assert!(matches!(err, GitError::InvalidCommit(_)), "{err}");
    let err = diff_against(&o.root, &o.c1, &options).unwrap_err();
    assert!(matches!(err, GitError::NotAGitWorkspace(_)), "{err}");

    // A .git that is a symlink to another repository is not followed.
    let fake = o.root.join("fake");
    fs::create_dir(&fake).unwrap();
    std::os::unix::fs::symlink(o.repo.join(".git"), fake.join(".git")).unwrap();
    let err = diff_against(&fake, &o.c1, &options).unwrap_err();
    assert!(matches!(err, GitError::NotAGitWorkspace(_)), "{err}");
}
