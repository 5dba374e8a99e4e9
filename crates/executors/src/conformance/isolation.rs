//! Cases about what a sandbox hides or refuses: network, the root filesystem, host files,
//! other processes, the hostname, user mapping, and dangerous system calls.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use conductor_core::Executor;
use conductor_types::{Capability, NetworkPolicy};

use super::{describe, ensure, expect_eq, expect_refused, run, run_argv, unique, Case, Fixture};

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "network_none",
            requires: &[Capability::NetworkNone],
            run: |e, f| Box::pin(network_none(e, f)),
        },
        Case {
            name: "network_full_is_not_the_hosts",
            requires: &[Capability::NetworkFull],
            run: |e, f| Box::pin(network_full_is_not_the_hosts(e, f)),
        },
        Case {
            name: "read_only_root",
            requires: &[Capability::ReadOnlyRoot],
            run: |e, f| Box::pin(read_only_root(e, f)),
        },
        Case {
            name: "host_files_hidden",
            requires: &[Capability::HostFilesHidden],
            run: |e, f| Box::pin(host_files_hidden(e, f)),
        },
        Case {
            name: "pid_isolation",
            requires: &[Capability::PidIsolation],
            run: |e, f| Box::pin(pid_isolation(e, f)),
        },
        Case {
            name: "hostname_isolation",
            requires: &[Capability::HostnameIsolation],
            run: |e, f| Box::pin(hostname_isolation(e, f)),
        },
        Case {
            name: "user_mapping",
            requires: &[Capability::UserMapping],
            run: |e, f| Box::pin(user_mapping(e, f)),
        },
        Case {
            name: "seccomp",
            requires: &[Capability::Seccomp],
            run: |e, f| Box::pin(seccomp(e, f)),
        },
    ]
}

async fn network_none(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding a probe listener: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("probe listener: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("probe listener: {e}"))?
        .port();
    let script = format!("echo hi > /dev/tcp/127.0.0.1/{port}");
    let mut request = fixture.request(&["bash", "-c", &script]);
    request.network = NetworkPolicy::None;
    let (result, _) = run(&executor, request).await?;
    expect_refused(
        "connecting to the host's 127.0.0.1 under network none",
        &result,
    )?;
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        Ok((_, peer)) => Err(format!(
            "probe listener: expected no connection, got one from {peer}"
        )),
        Err(e) => Err(format!(
            "probe listener: expected no connection, got error {e}"
        )),
    }
}

/// Under `full`, a server listening on every host address is reached at none of them: not at
/// 127.0.0.1, not at any address of the host's interfaces (eth0's, docker0's, a bridge's).
async fn network_full_is_not_the_hosts(
    executor: Arc<dyn Executor>,
    fixture: Fixture,
) -> Result<(), String> {
    let listener =
        TcpListener::bind("0.0.0.0:0").map_err(|e| format!("binding a probe listener: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("probe listener: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("probe listener: {e}"))?
        .port();
    let mut addresses = vec!["127.0.0.1".to_owned()];
    addresses.extend(
        nix::ifaddrs::getifaddrs()
            .map_err(|e| format!("listing the host's addresses: {e}"))?
            .filter_map(|interface| interface.address?.as_sockaddr_in().map(|a| a.ip()))
            .filter(|ip| !ip.is_loopback())
            .map(|ip| ip.to_string()),
    );
    // Each in parallel (a dropped SYN would otherwise wait for the kernel's timeout), after a
    // control: the sandbox's own loopback refuses, so the probe does see a connection's fate.
    let script = format!(
        "bash -c 'echo > /dev/tcp/127.0.0.1/9' 2>&1 | grep -q 'Connection refused' \
         || echo 'the probe cannot connect anywhere'; for a in {}; do (timeout 3 bash -c \"echo hi > /dev/tcp/$a/{port}\" 2>/dev/null \
         && echo \"reached $a\") & done; wait",
        addresses.join(" ")
    );
    let mut request = fixture.request(&["bash", "-c", &script]);
    request.network = NetworkPolicy::Full;
    let (result, _) = run(&executor, request).await?;
    expect_eq(
        &format!("host addresses reached under network full (tried {addresses:?})"),
        "",
        result.stdout.as_str(),
    )?;
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        Ok((_, peer)) => Err(format!(
            "probe listener: expected no connection, got one from {peer}"
        )),
        Err(e) => Err(format!(
            "probe listener: expected no connection, got error {e}"
        )),
    }
}

async fn read_only_root(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    let probe = PathBuf::from(format!("/usr/conductor-probe-{}", unique()));
    let script = format!("echo x > {}", probe.display());
    let result = run_argv(&executor, &fixture, &["sh", "-c", &script]).await?;
    let leaked = probe.exists();
    if leaked {
        let _ = std::fs::remove_file(&probe);
    }
    expect_refused("writing under /usr", &result)?;
    ensure(!leaked, || {
        format!(
            "{}: expected not to exist on the host, but it does",
            probe.display()
        )
    })
}

async fn host_files_hidden(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let token = unique();
    let secret = home.join(format!(".conductor-secret-{token}"));
    let contents = format!("secret-{token}");
    std::fs::write(&secret, &contents).map_err(|e| format!("writing {}: {e}", secret.display()))?;
    let path = secret.display().to_string();
    let result = run_argv(&executor, &fixture, &["cat", &path]).await;
    let _ = std::fs::remove_file(&secret);
    let result = result?;
    ensure(!result.stdout.contains(&contents), || {
        format!("cat {path}: expected the host file to be hidden, got its contents on stdout")
    })?;
    expect_refused(&format!("cat {path}"), &result)
}

async fn pid_isolation(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    let result = run_argv(&executor, &fixture, &["ls", "/proc"]).await?;
    expect_eq("exit code of ls /proc", 0, result.exit_code)
        .map_err(|e| format!("{e}; {}", describe(&result)))?;
    let pids: Vec<&str> = result
        .stdout
        .lines()
        .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    ensure(pids.len() <= 5, || {
        format!(
            "processes visible in /proc: expected at most 5, got {}: {pids:?}",
            pids.len()
        )
    })
}

async fn hostname_isolation(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| format!("reading the host's hostname: {e}"))?;
    let result = run_argv(&executor, &fixture, &["hostname"]).await?;
    expect_eq("exit code of hostname", 0, result.exit_code)
        .map_err(|e| format!("{e}; {}", describe(&result)))?;
    let inside = result.stdout.trim();
    ensure(!inside.is_empty() && inside != host.trim(), || {
        format!(
            "hostname: expected one other than the host's {:?}, got {inside:?}",
            host.trim()
        )
    })
}

async fn user_mapping(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    let name = format!("owned-{}", unique());
    let script = format!("echo x > {name}");
    let result = run_argv(&executor, &fixture, &["sh", "-c", &script]).await?;
    expect_eq("exit code writing into the workspace", 0, result.exit_code)
        .map_err(|e| format!("{e}; {}", describe(&result)))?;
    let path = fixture.workspace.join(&name);
    let uid = std::fs::metadata(&path)
        .map_err(|e| format!("{}: expected the file on the host, got {e}", path.display()))?
        .uid();
    let own = nix::unistd::geteuid().as_raw();
    ensure(uid != 0 && uid != own, || {
        format!("owner of a file created in the sandbox: expected a non-root uid other than the test's {own}, got {uid}")
    })
}

async fn seccomp(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    let probes: [(&str, &[&str]); 2] = [
        (
            "mount -t tmpfs x /tmp",
            &["mount", "-t", "tmpfs", "x", "/tmp"],
        ),
        ("unshare -U true", &["unshare", "-U", "true"]),
    ];
    for (what, argv) in probes {
        let result = run_argv(&executor, &fixture, argv).await?;
        expect_refused(what, &result)?;
    }
    // PTRACE_ATTACH (16) to pid 1 must fail: exit 0 means ptrace returned -1.
    let script =
        "import ctypes,sys; sys.exit(0 if ctypes.CDLL(None).ptrace(16, 1, 0, 0) == -1 else 1)";
    let result = run_argv(&executor, &fixture, &["python3", "-c", script]).await?;
    expect_eq(
        "exit code of the ptrace probe (0 = refused)",
        0,
        result.exit_code,
    )
    .map_err(|e| format!("{e}; {}", describe(&result)))
}
