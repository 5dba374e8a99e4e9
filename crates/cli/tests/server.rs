//! `conductor serve` from the outside: a real spawned server with the host executor, driven over
//! HTTP and through the CLI client. Restart recovery after kill -9, many concurrent clients,
//! `conductor run` exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_types::{Task, TaskPage, TaskStatus};
use serde_json::json;

mod support;
use support::{is_root, Server};

fn command(text: &str) -> serde_json::Value {
    json!({ "commands": [text] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_queued_and_running_tasks_loses_none() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), 2);
    let client = server.client();
    let once = client.submit(command("sleep 3")).await;
    let retried = client
        .submit(json!({ "commands": ["sleep 3"], "retries": 1 }))
        .await;
    for id in [once.id, retried.id] {
        client
            .wait_until(id, |t| t.state.status == TaskStatus::Running)
            .await;
    }
    let mut queued = Vec::new();
    for n in 0..3 {
        queued.push(client.submit(command(&format!("echo queued-{n}"))).await.id);
    }
    server.kill_9();

    let server = Server::start(home.path(), 2);
    let client = server.client();
    let once = client.task(once.id).await;
    assert_eq!(once.state.status, TaskStatus::Interrupted);
    assert_eq!(
        once.state.status_reason.as_deref(),
        Some("the server stopped while the task was running (found at restart)")
    );
    let retried = client
        .wait_until(retried.id, |t| t.state.status.is_finished())
        .await;
    assert_eq!(
        (retried.state.status, retried.state.attempt),
        (TaskStatus::Succeeded, 2)
    );
    for (n, id) in queued.into_iter().enumerate() {
        let task = client
            .wait_until(id, |t| t.state.status.is_finished())
            .await;
        assert_eq!(
            (task.state.status, task.state.attempt),
            (TaskStatus::Succeeded, 1)
        );
        assert_eq!(client.logs(id).await, format!("queued-{n}\n"));
    }
    server.terminate();
}

/// Pids of live (not zombie) processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with('Z'))
            })
            .unwrap_or(true);
        if cmdline == wanted && !zombie {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_leaves_no_orphan_process_behind_after_restart() {
    if !std::path::Path::new("/sys/fs/cgroup").exists() || !is_root() {
        eprintln!("skipped: needs root and cgroups (the server finds orphans by their cgroup)");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    // A duration no other test uses, to find exactly these processes.
    let argv = ["sleep", "1000.25"];
    for executor in ["host", "namespace"] {
        let server = Server::start_with(home.path(), 2, &["--executor", executor]);
        let client = server.client();
        let once = client.submit(command("sleep 1000.25")).await;
        let retried = client
            .submit(json!({ "commands": ["sleep 1000.25"], "retries": 1 }))
            .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while processes(&argv).len() < 2 {
            assert!(
                Instant::now() < deadline,
                "the sleeps never started ({executor})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.kill_9();
        // The server is gone; its tasks' processes are not.
        let orphans = processes(&argv);
        assert_eq!(orphans.len(), 2, "{executor}");

        let server = Server::start_with(home.path(), 2, &["--executor", executor]);
        // Listening means the sweep is done: the orphans are dead. (The retried task may already
        // run again, in a process of its own.)
        let alive: Vec<u32> = processes(&argv)
            .into_iter()
            .filter(|pid| orphans.contains(pid))
            .collect();
        assert_eq!(alive, Vec::<u32>::new(), "{executor}");
        let client = server.client();
        let once = client.task(once.id).await;
        assert_eq!(
            (once.state.status, once.state.status_reason.as_deref()),
            (
                TaskStatus::Interrupted,
                Some("the server stopped while the task was running (found at restart)")
            ),
            "{executor}"
        );
        // The retried task runs again, for real this time: cancel it and check it is gone.
        client
            .wait_until(retried.id, |t| {
                t.state.status == TaskStatus::Running && t.state.attempt == 2
            })
            .await;
        while processes(&argv).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the retry never started ({executor})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cancelled = client
            .http
            .post(format!("{}/api/v1/tasks/{}/cancel", client.url, retried.id))
            .bearer_auth(&client.token)
            .send()
            .await
            .unwrap();
        assert_eq!(cancelled.status(), 200);
        let retried = client
            .wait_until(retried.id, |t| t.state.status.is_finished())
            .await;
        assert_eq!(retried.state.status, TaskStatus::Cancelled);
        while !processes(&argv).is_empty() {
            assert!(
                Instant::now() < deadline,
                "cancel left the sleep running ({executor})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.terminate();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tasks_from_twenty_clients_complete_exactly_once() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), 4);
    let client = Arc::new(server.client());
    let mut clients = Vec::new();
    for c in 0..20 {
        let client = Arc::clone(&client);
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..10 {
                let task = client.submit(command(&format!("echo {c}-{n}"))).await;
                ids.push((task.id, format!("{c}-{n}\n")));
            }
            ids
        }));
    }
    let mut submitted = Vec::new();
    for handle in clients {
        submitted.extend(handle.await.unwrap());
    }
    assert_eq!(submitted.len(), 200);
    for (id, expected) in &submitted {
        let task = client
            .wait_until(*id, |t| t.state.status.is_finished())
            .await;
        assert_eq!(
            (task.state.status, task.state.attempt, task.results.len()),
            (TaskStatus::Succeeded, 1, 1),
            "{task:?}"
        );
        assert_eq!(&client.logs(*id).await, expected);
    }
    let page: TaskPage = client
        .http
        .get(format!(
            "{}/api/v1/tasks?status=succeeded&limit=500",
            client.url
        ))
        .bearer_auth(&client.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page.tasks.len(), 200);
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_share_a_workspace_and_cd_carries_to_the_next_command() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), 1);
    let client = server.client();
    let first = client
        .submit(json!({
            "commands": ["mkdir -p src/deep && cd src/deep && echo made > file", "pwd; cat file", "exit 3", "echo never"],
            "workspace": "repo"
        }))
        .await;
    let first = client
        .wait_until(first.id, |t| t.state.status.is_finished())
        .await;
    let exits: Vec<_> = first.results.iter().map(|r| r.exit_code).collect();
    assert_eq!(
        (first.state.status, first.state.exit_code, exits),
        (TaskStatus::Failed, Some(3), vec![Some(0), Some(0), Some(3)])
    );
    let root = home.path().join("workspaces/named/repo");
    assert_eq!(
        client.logs(first.id).await,
        format!("{}/src/deep\nmade\n", root.display())
    );
    // The next task in the same named workspace starts at its root and sees the files.
    let second = client
        .submit(json!({ "commands": ["pwd", "cat src/deep/file"], "workspace": "repo" }))
        .await;
    client
        .wait_until(second.id, |t| t.state.status == TaskStatus::Succeeded)
        .await;
    assert_eq!(
        client.logs(second.id).await,
        format!("{}\nmade\n", root.display())
    );
    server.terminate();
}

/// Runs the CLI against `server` with `home`'s admin token; returns (code, stdout, stderr).
fn cli(server: &Server, home: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_conductor"))
        .args(args)
        .env("CONDUCTOR_SERVER", &server.url)
        .env("CONDUCTOR_HOME", home)
        .env_remove("CONDUCTOR_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_client_submits_lists_gets_follows_cancels_and_manages_tokens() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), 1);
    let h = home.path();
    let (code, id, err) = cli(
        &server,
        h,
        &[
            "task",
            "submit",
            "-c",
            "echo one",
            "-c",
            "echo two",
            "--label",
            "team=infra",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let id = id.trim().to_owned();
    let (code, logs, _) = cli(&server, h, &["task", "logs", "-f", &id]);
    assert_eq!((code, logs.as_str()), (Some(0), "one\ntwo\n"));
    let (_, json, _) = cli(&server, h, &["task", "get", &id, "--json"]);
    let task: Task = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (
            task.state.status,
            task.results.len(),
            task.spec.labels["team"].as_str()
        ),
        (TaskStatus::Succeeded, 2, "infra")
    );
    let (_, table, _) = cli(&server, h, &["task", "list", "--label", "team=infra"]);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows[0].starts_with("ID "), "{table}");
    assert!(rows[1].starts_with(&format!("{id}  succeeded")), "{table}");

    // Limits, network and services as flags; the host executor gives network host only and
    // has no services: refused with the field named.
    let (code, id, err) = cli(
        &server,
        h,
        &[
            "task",
            "submit",
            "-c",
            "true",
            "--memory",
            "64m",
            "--pids",
            "32",
            "--network",
            "host",
        ],
    );
    if is_root() {
        assert_eq!(code, Some(0), "{err}");
        let (_, json, _) = cli(&server, h, &["task", "get", id.trim(), "--json"]);
        let task: Task = serde_json::from_str(&json).unwrap();
        assert_eq!(
            task.spec.resources.memory,
            Some(conductor_types::Bytes::mib(64))
        );
        assert_eq!(task.spec.resources.pids, Some(32));
    }
    // `full` is a namespace of its own, which the host executor cannot build: refused (422).
    let (code, _, err) = cli(
        &server,
        h,
        &["task", "submit", "-c", "true", "--network", "full"],
    );
    assert_ne!(code, Some(0));
    assert!(
        err.contains("network policy full is not supported yet by the host executor")
            && err.contains("422"),
        "{err}"
    );
    let (code, _, err) = cli(
        &server,
        h,
        &["task", "submit", "-c", "true", "--service", "redis:7"],
    );
    assert_ne!(code, Some(0));
    assert!(err.contains("services"), "{err}");

    let file = home.path().join("task.json");
    std::fs::write(
        &file,
        r#"{"commands": ["sleep 30"], "description": "slow"}"#,
    )
    .unwrap();
    let (_, slow, _) = cli(
        &server,
        h,
        &["task", "submit", "--file", file.to_str().unwrap()],
    );
    let slow = slow.trim().to_owned();
    let (code, out, _) = cli(&server, h, &["task", "cancel", &slow]);
    assert_eq!((code, out), (Some(0), format!("{slow} cancelled\n")));
    let (code, _, err) = cli(&server, h, &["task", "cancel", &slow]);
    assert_eq!(
        (code, err.as_str()),
        (
            Some(2),
            "conductor: error: cannot cancel a task that is cancelled (conflict, 409 Conflict)\n"
        )
    );
    let (code, _, err) = cli(
        &server,
        h,
        &["task", "submit", "-c", "ls", "--environment", "python-dev"],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown environment \"python-dev\""), "{err}");

    let (code, secret, _) = cli(&server, h, &["token", "create", "ci"]);
    assert_eq!(code, Some(0));
    let (_, listed, _) = cli(&server, h, &["token", "list", "--json"]);
    let tokens: Vec<conductor_types::TokenInfo> = serde_json::from_str(&listed).unwrap();
    // The server's own agent token (one agent) is listed too.
    assert_eq!(
        tokens.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["admin", "agent agent-1", "ci"]
    );
    let (code, _, err) = cli(
        &server,
        h,
        &["task", "list", "--token", secret.trim(), "--json"],
    );
    assert_eq!(code, Some(0), "{err}");
    let ci = tokens.iter().find(|t| t.name == "ci").unwrap();
    let (code, _, _) = cli(&server, h, &["token", "revoke", &ci.id]);
    assert_eq!(code, Some(0));
    let (code, _, err) = cli(&server, h, &["task", "list", "--token", secret.trim()]);
    assert_eq!(
        (code, err.as_str()),
        (
            Some(2),
            "conductor: error: invalid or revoked token (unauthorized, 401 Unauthorized)\n"
        )
    );
    server.terminate();
}

#[test]
fn run_streams_output_and_exits_with_the_task_code() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), 1);
    let out = Command::new(env!("CARGO_BIN_EXE_conductor"))
        .args(["run", "--server", &server.url, "--"])
        .args(["sh", "-c", "echo out; echo err >&2; exit 7"])
        .env("CONDUCTOR_HOME", home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!((out.status.code(), stdout.as_str()), (Some(7), "out\n"));
    assert!(stderr.starts_with("err\n"), "{stderr}");
    server.terminate();
}

#[test]
fn the_cli_manages_workspaces_and_snapshots() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), 1);
    let h = home.path();
    let ok = |args: &[&str]| {
        let (code, out, err) = cli(&server, h, args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        out
    };
    let id = ok(&["workspace", "create", "repo", "--cleanup", "ttl:48h"]);
    let id = id.trim();
    assert!(id.starts_with("ws_"), "{id}");
    let (code, _, err) = cli(&server, h, &["workspace", "create", "repo"]);
    assert_eq!(
        (code, err.as_str()),
        (
            Some(2),
            "conductor: error: a workspace named \"repo\" already exists (conflict, 409 Conflict)\n"
        )
    );
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&["workspace", "show", "repo", "--json"])).unwrap();
    assert_eq!(
        (&shown["id"], &shown["cleanup"]),
        (&json!(id), &json!("ttl:2d"))
    );
    // Owned by the admin token the CLI used.
    let owner = shown["owner"].as_str().unwrap_or_default().to_owned();
    assert!(owner.starts_with("tok_"), "{shown}");
    assert!(
        ok(&["workspace", "show", "repo"]).contains(&format!("\nowner:     {owner}\n")),
        "the owner is shown"
    );
    if nix::unistd::geteuid().is_root() {
        // A disk quota: its own filesystem, shown, and gone with the workspace.
        ok(&["workspace", "create", "sized", "--disk", "16m"]);
        assert!(ok(&["workspace", "show", "sized"]).contains("\ndisk:      16m\n"));
        let listed = ok(&["workspace", "list"]);
        assert!(
            listed
                .lines()
                .any(|l| l.contains("sized") && l.contains(" 16m ")),
            "{listed}"
        );
        ok(&["workspace", "rm", "sized"]);
        assert!(!h.join("workspaces/named-quota/sized.img").exists());
    }
    let dir = h.join("workspaces/named/repo");
    std::fs::write(dir.join("a.txt"), "one\n").unwrap();
    let sid = ok(&["workspace", "snapshot", id, "base"]);
    let sid = sid.trim();
    let listed = ok(&["workspace", "snapshots", "repo"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.lines().nth(1).unwrap().starts_with(sid), "{listed}");
    // A task changes the workspace; the diff shows it; restore undoes it.
    let (code, out, err) = cli(
        &server,
        h,
        &[
            "run",
            "--workspace",
            "repo",
            "--",
            "echo two > a.txt; touch b.txt",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        ok(&["workspace", "diff", "repo", sid]),
        "M a.txt\nA b.txt\n"
    );
    ok(&["workspace", "restore", "repo", sid]);
    assert_eq!(std::fs::read_to_string(dir.join("a.txt")).unwrap(), "one\n");
    assert!(!dir.join("b.txt").exists());
    assert_eq!(ok(&["workspace", "diff", "repo", sid]), "");
    // Export, delete, import back, restore again.
    let file = h.join("base.tar.zst");
    ok(&[
        "workspace",
        "export",
        "repo",
        sid,
        "-o",
        file.to_str().unwrap(),
    ]);
    ok(&["workspace", "snapshot-rm", "repo", sid]);
    assert_eq!(ok(&["workspace", "snapshots", "repo"]).lines().count(), 1);
    let imported = ok(&["workspace", "import", file.to_str().unwrap()]);
    assert!(imported.starts_with(sid), "{imported}");
    std::fs::write(dir.join("a.txt"), "three\n").unwrap();
    ok(&["workspace", "restore", "repo", sid]);
    assert_eq!(std::fs::read_to_string(dir.join("a.txt")).unwrap(), "one\n");
    // Files: upload, list, download, delete; traversal refused.
    let local = h.join("local.sh");
    std::fs::write(&local, "#!/bin/sh\necho hi\n").unwrap();
    ok(&[
        "workspace",
        "put",
        "repo",
        "bin/run.sh",
        local.to_str().unwrap(),
        "--mode",
        "755",
    ]);
    let listing = ok(&["workspace", "ls", "repo", "bin"]);
    assert!(
        listing
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("file         755"),
        "{listing}"
    );
    assert!(
        listing.lines().nth(1).unwrap().ends_with("  run.sh"),
        "{listing}"
    );
    assert_eq!(
        ok(&["workspace", "get", "repo", "bin/run.sh"]),
        "#!/bin/sh\necho hi\n"
    );
    let tar = h.join("bin.tar");
    ok(&[
        "workspace",
        "get",
        "repo",
        "bin",
        "--tar",
        "-o",
        tar.to_str().unwrap(),
    ]);
    ok(&[
        "workspace",
        "put",
        "repo",
        "copy",
        tar.to_str().unwrap(),
        "--tar",
    ]);
    assert_eq!(
        std::fs::read_to_string(dir.join("copy/run.sh")).unwrap(),
        "#!/bin/sh\necho hi\n"
    );
    ok(&["workspace", "rm-path", "repo", "copy", "-r"]);
    assert!(!dir.join("copy").exists());
    std::os::unix::fs::symlink("/etc", dir.join("etc")).unwrap();
    let (code, _, err) = cli(&server, h, &["workspace", "get", "repo", "etc/hostname"]);
    assert_eq!(
        (code, err.as_str()),
        (
            Some(2),
            "conductor: error: path \"etc/hostname\" leads out of the workspace through a symlink (invalid_path, 400 Bad Request)\n"
        )
    );
    // Listed, then removed with its directory.
    let list = ok(&["workspace", "list"]);
    assert!(list.lines().nth(1).unwrap().starts_with(id), "{list}");
    ok(&["workspace", "rm", "repo"]);
    assert!(!dir.exists());
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&["workspace", "list", "--json"])).unwrap();
    assert!(list.is_empty());
    server.terminate();
}

#[test]
fn the_cli_clones_a_repository_into_a_task_and_shows_its_diff() {
    let home = tempfile::tempdir().unwrap();
    // Local repositories only where `[git] allow_local` says, readable by the clone's
    // unprivileged sandbox user.
    let repos = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        repos.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!("[git]\nallow_local = [{:?}]\n", repos.path()),
    )
    .unwrap();
    let repo = repos.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "first"]);
    let server = Server::start(home.path(), 1);
    let h = home.path();
    let (code, out, err) = cli(
        &server,
        h,
        &[
            "run",
            "--git",
            repo.to_str().unwrap(),
            "--git-ref",
            "main",
            "--",
            "cat README && echo bye >> README",
        ],
    );
    assert_eq!((code, out.as_str()), (Some(0), "hello\n"), "{err}");
    let (_, list, _) = cli(&server, h, &["task", "list", "--json"]);
    let page: TaskPage = serde_json::from_str(&list).unwrap();
    let id = page.tasks[0].id.to_string();
    let (code, diff, err) = cli(&server, h, &["task", "diff", &id]);
    assert_eq!(code, Some(0), "{err}");
    let mut lines = diff.lines();
    assert!(lines.next().unwrap().contains(" branch main ("), "{diff}");
    assert_eq!(lines.next().unwrap(), "modified     README");
    assert!(diff.contains("+bye"), "{diff}");
    server.terminate();
}

/// `[limits.default]` reaches the task: a task naming no limit runs in a cgroup with the
/// configured memory, pids and cpu values and a workspace of the default disk size, and its
/// spec says which limits came from defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_default_limits_reach_the_tasks_cgroup_and_workspace() {
    if !is_root() {
        eprintln!("skipping: cgroup limits and disk quotas need root");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        "[limits.default]\nmemory = \"300m\"\npids = 77\ncpus = 0.5\ndisk = \"64m\"\ntimeout = \"90s\"\n",
    )
    .unwrap();
    let server = Server::start(home.path(), 1);
    let client = server.client();
    let script = concat!(
        "m=$(grep ':memory:' /proc/self/cgroup | cut -d: -f3); ",
        "p=$(grep ':pids:' /proc/self/cgroup | cut -d: -f3); ",
        // `N:cpu:/path` or `N:cpu,cpuacct:/path`: the hierarchy's directory, then the path.
        "l=$(grep -E ':cpu(,cpuacct)?:' /proc/self/cgroup); d=${l#*:}; d=${d%%:*}; c=${l##*:}; ",
        "echo memory=$(cat /sys/fs/cgroup/memory$m/memory.limit_in_bytes); ",
        "echo pids=$(cat /sys/fs/cgroup/pids$p/pids.max); ",
        "echo cpu=$(cat /sys/fs/cgroup/$d$c/cpu.cfs_quota_us)/$(cat /sys/fs/cgroup/$d$c/cpu.cfs_period_us); ",
        "echo disk=$(df -B1M --output=size . | tail -1 | tr -d ' ')"
    );
    let task = client.submit(command(script)).await;
    let applied: Vec<&str> = task
        .spec
        .defaults_applied
        .iter()
        .map(|limit| limit.as_str())
        .collect();
    assert_eq!(applied, ["memory", "cpus", "pids", "disk", "timeout"]);
    assert_eq!(task.spec.timeout, Some(Duration::from_secs(90)));
    let task = client
        .wait_until(task.id, |t| t.state.status.is_finished())
        .await;
    assert_eq!(task.state.status, TaskStatus::Succeeded, "{task:?}");
    let logs = client.logs(task.id).await;
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(
        lines[..3],
        [
            format!("memory={}", 300 * 1024 * 1024),
            "pids=77".to_owned(),
            "cpu=50000/100000".to_owned(),
        ],
        "{logs}"
    );
    // The workspace is a filesystem of the default size (less ext4's own overhead).
    let disk: u64 = lines[3].strip_prefix("disk=").unwrap().parse().unwrap();
    assert!((50..=64).contains(&disk), "{logs}");
    server.terminate();
}
