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
        Case {
            name: "socket_families",
            requires: &[Capability::Seccomp],
            run: |e, f| Box::pin(socket_families(e, f)),
        },
        Case {
            name: "legacy_syscalls",
            requires: &[Capability::Seccomp],
            run: |e, f| Box::pin(legacy_syscalls(e, f)),
        },
        Case {
            name: "proc_masked",
            requires: &[Capability::HostFilesHidden, Capability::PidIsolation],
            run: |e, f| Box::pin(proc_masked(e, f)),
        },
    ]
}

/// A non-blocking TCP listener on `address` (port 0: any) and the port it got.
pub(super) fn probe_listener(address: &str) -> Result<(TcpListener, u16), String> {
    let listener =
        TcpListener::bind(address).map_err(|e| format!("binding a probe listener: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("probe listener: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("probe listener: {e}"))?
        .port();
    Ok((listener, port))
}

/// Ok when nothing connected to `listener`.
pub(super) fn no_connection(listener: &TcpListener) -> Result<(), String> {
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

async fn network_none(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    let (listener, port) = probe_listener("127.0.0.1:0")?;
    let script = format!("echo hi > /dev/tcp/127.0.0.1/{port}");
    let mut request = fixture.request(&["bash", "-c", &script]);
    request.network = NetworkPolicy::None;
    let (result, _) = run(&executor, request).await?;
    expect_refused(
        "connecting to the host's 127.0.0.1 under network none",
        &result,
    )?;
    no_connection(&listener)
}

/// Under `full`, a server listening on every host address is reached at none of them: not at
/// 127.0.0.1, not at any address of the host's interfaces (eth0's, docker0's, a bridge's).
async fn network_full_is_not_the_hosts(
    executor: Arc<dyn Executor>,
    fixture: Fixture,
) -> Result<(), String> {
    let (listener, port) = probe_listener("0.0.0.0:0")?;
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
    no_connection(&listener)
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

/// Creates a socket (`socketpair` with `pair`) of each family and type with raw libc calls and
/// prints `family ok` or `family ERRNO`, one line each.
const SOCKET_PROBE: &str = r#"
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for arg in sys.argv[1:]:
    kind, family, typ, proto = arg.split(":")
    if kind == "pair":
        fds = (ctypes.c_int * 2)()
        rc = libc.socketpair(int(family), int(typ), int(proto), fds)
        opened = [fds[0], fds[1]] if rc == 0 else []
    else:
        rc = libc.socket(int(family), int(typ), int(proto))
        opened = [rc] if rc >= 0 else []
    for fd in opened:
        os.close(fd)
    print(arg, "ok" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), "?"))
"#;

/// Whether this process (outside any sandbox) can create an IPv6 socket: a kernel without IPv6
/// refuses it everywhere.
fn host_has_ipv6() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
        || nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet6,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::empty(),
            None,
        )
        .is_ok()
}

async fn socket_families(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    // kind:family:type:protocol. Allowed: Unix, IPv4, IPv6, netlink (route).
    let mut allowed = vec![
        "socket:1:1:0",  // AF_UNIX, SOCK_STREAM
        "pair:1:2:0",    // socketpair(AF_UNIX, SOCK_DGRAM)
        "socket:2:2:0",  // AF_INET, SOCK_DGRAM
        "socket:16:3:0", // AF_NETLINK, SOCK_RAW, NETLINK_ROUTE
    ];
    if host_has_ipv6() {
        allowed.push("socket:10:2:0"); // AF_INET6, SOCK_DGRAM
    }
    let refused = [
        "socket:40:1:0",  // AF_VSOCK, SOCK_STREAM
        "pair:40:1:0",    // socketpair(AF_VSOCK)
        "socket:17:2:0",  // AF_PACKET, SOCK_DGRAM
        "socket:31:1:3",  // AF_BLUETOOTH, SOCK_STREAM, BTPROTO_RFCOMM
        "socket:38:5:0",  // AF_ALG, SOCK_SEQPACKET
        "socket:15:3:2",  // AF_KEY, SOCK_RAW, PF_KEY_V2
        "socket:29:3:1",  // AF_CAN, SOCK_RAW, CAN_RAW
        "socket:44:3:0",  // AF_XDP, SOCK_RAW
        "socket:30:5:0",  // AF_TIPC, SOCK_SEQPACKET
        "socket:0:1:0",   // AF_UNSPEC
        "socket:255:1:0", // no such family
    ];
    let mut argv = vec!["python3", "-c", SOCKET_PROBE];
    argv.extend(allowed.iter().chain(refused.iter()));
    let result = run_argv(&executor, &fixture, &argv).await?;
    expect_eq("exit code of the socket probe", 0, result.exit_code)
        .map_err(|e| format!("{e}; {}", describe(&result)))?;
    let answers: Vec<(&str, &str)> = result
        .stdout
        .lines()
        .filter_map(|line| line.split_once(' '))
        .collect();
    let expected: Vec<(&str, bool)> = allowed
        .iter()
        .map(|probe| (*probe, true))
        .chain(refused.iter().map(|probe| (*probe, false)))
        .collect();
    expect_eq("probes answered", expected.len(), answers.len())
        .map_err(|e| format!("{e}; {}", describe(&result)))?;
    for ((probe, ok), (answered, answer)) in expected.iter().zip(&answers) {
        expect_eq("probe", *probe, *answered)?;
        let good = if *ok {
            *answer == "ok"
        } else {
            [
                "EAFNOSUPPORT",
                "EPERM",
                "EACCES",
                "EPROTONOSUPPORT",
                "EINVAL",
            ]
            .contains(answer)
        };
        ensure(good, || {
            let wanted = if *ok { "ok" } else { "refused" };
            format!("{probe}: expected {wanted}, got {answer}")
        })?;
    }
    Ok(())
}

/// `personality(READ_IMPLIES_EXEC)` and, on x86_64, `modify_ldt` must fail; the personality
/// query must work. Prints one answer per line.
const LEGACY_PROBE: &str = r#"
import ctypes, platform
libc = ctypes.CDLL(None, use_errno=True)
libc.personality.argtypes = [ctypes.c_ulong]
print("query", "ok" if libc.personality(0xffffffff) != -1 else "refused")
print("read_implies_exec", "ok" if libc.personality(0x0400000) != -1 else "refused")
if platform.machine() == "x86_64":
    buf = ctypes.create_string_buffer(16)
    print("modify_ldt", "ok" if libc.syscall(154, 0, buf, 16) != -1 else "refused")
"#;

async fn legacy_syscalls(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    let result = run_argv(&executor, &fixture, &["python3", "-c", LEGACY_PROBE]).await?;
    expect_eq("exit code of the legacy syscall probe", 0, result.exit_code)
        .map_err(|e| format!("{e}; {}", describe(&result)))?;
    let mut expected = "query ok\nread_implies_exec refused\n".to_owned();
    if std::env::consts::ARCH == "x86_64" {
        expected.push_str("modify_ldt refused\n");
    }
    expect_eq(
        "legacy syscall probe",
        expected.as_str(),
        result.stdout.as_str(),
    )
}

/// Prints `path bytes` for each host file under /proc that exists, with the bytes it reads
/// (at most 64), and `path entries` for each directory.
const PROC_PROBE: &str = r#"
for f in "$@"; do
  if [ -d "$f" ]; then echo "$f $(ls -A "$f" 2>/dev/null | wc -l)"
  elif [ -e "$f" ]; then echo "$f $(head -c 64 "$f" 2>/dev/null | wc -c)"
  fi
done
"#;

async fn proc_masked(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    // The ones a host is sure to show (the issue's) and the ones runc masks; only those that
    // have something to hide on this host are checked.
    let paths = [
        "/proc/cmdline",
        "/proc/iomem",
        "/proc/config.gz",
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/interrupts",
        "/proc/acpi",
        "/proc/scsi",
    ];
    let mut argv = vec!["sh", "-c", PROC_PROBE, "probe"];
    argv.extend(paths);
    let result = run_argv(&executor, &fixture, &argv).await?;
    expect_eq("exit code of the /proc probe", 0, result.exit_code)
        .map_err(|e| format!("{e}; {}", describe(&result)))?;
    let mut checked = 0;
    for line in result.stdout.lines() {
        let Some((path, count)) = line.rsplit_once(' ') else {
            continue;
        };
        if !host_shows(path) {
            continue;
        }
        checked += 1;
        ensure(count.trim() == "0", || {
            format!("{path}: expected it empty or unreadable in the sandbox, it shows {count} bytes or entries")
        })?;
    }
    // /proc/cmdline is never empty on the host.
    ensure(checked > 0, || {
        format!(
            "/proc probe: expected at least /proc/cmdline checked; {}",
            describe(&result)
        )
    })
}

/// Whether the host's `path` has something to read (bytes of a file, entries of a directory).
fn host_shows(path: &str) -> bool {
    match std::fs::read_dir(path) {
        Ok(mut entries) => entries.next().is_some(),
        Err(_) => {
            use std::io::Read;
            let mut buf = [0u8; 1];
            std::fs::File::open(path)
                .and_then(|mut f| f.read(&mut buf))
                .is_ok_and(|n| n > 0)
        }
    }
}
