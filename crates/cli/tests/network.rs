//! Network `full` for real, on the namespace, Docker and Podman executors: outbound works, the
//! host does not. An "internet" made by the test (a network namespace behind a veth, routed
//! through the host, at 198.51.100.2, outside every host address) must be reachable from a
//! `full` sandbox; these must not be: a TCP server on the host's 127.0.0.1, the same server at
//! a host address of another interface (a dummy interface's, and docker0's when there is one,
//! as the server's own listening port on every address would be), 169.254.169.254 (routed to
//! the "internet", so only the link-local rule keeps it out), and an abstract Unix socket of
//! the host. A `none` sandbox reaches nothing.
//!
//! Needs root (the fixture and `full` both make interfaces); skipped with the reason otherwise.
//!
//! `cargo test -p conductor --test network`

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: a failed unwrap is a failed test

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::Duration;

use conductor_core::Executor;
use conductor_executors::container::{ContainerConfig, ContainerExecutor, Engine, EngineKind};
use conductor_executors::namespace::{NamespaceConfig, NamespaceExecutor};
use conductor_types::{ExecutionRequest, ExecutionResult, NetworkPolicy};

mod support;

/// Tries each target (`ADDRESS:PORT`, or `@NAME` for an abstract Unix socket), one line each.
const PROBE: &str = r#"
import socket, sys
for target in sys.argv[1:]:
    try:
        if target.startswith("@"):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(1)
            s.connect("\0" + target[1:])
        else:
            host, port = target.rsplit(":", 1)
            s = socket.create_connection((host, int(port)), timeout=1)
        print(target, "open")
    except OSError:
        print(target, "closed")
"#;

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {args:?}: {status}");
}

/// The test's "internet" (a netns at 198.51.100.2 and 169.254.169.254, listening on port 80),
/// a host address on its veth, and servers on the host: removed when dropped.
struct Internet {
    suffix: String,
    /// A host TCP server listening on every host address.
    host_port: u16,
    /// A host address outside loopback (the dummy interface's).
    host_address: String,
    /// The host's abstract socket's name.
    abstract_name: String,
    _listeners: Option<(TcpListener, UnixListener)>,
    /// One fixture at a time: the host route to 169.254.169.254 is global.
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Internet {
    async fn start() -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: the network fixture needs root");
            return None;
        }
        let serial = SERIAL.lock().await;
        let suffix = format!("{:05x}", std::process::id() & 0xfffff);
        let namespace = format!("ctnet{suffix}");
        let (outer, inner) = (format!("ctva{suffix}"), format!("ctvb{suffix}"));
        // Whatever happens from here, dropping this removes it.
        let mut internet = Self {
            suffix,
            host_port: 0,
            host_address: "198.18.77.1".to_owned(),
            abstract_name: String::new(),
            _listeners: None,
            _serial: serial,
        };
        ip(&["netns", "add", &namespace]);
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        ip(&["link", "set", &inner, "netns", &namespace]);
        ip(&["addr", "add", "198.51.100.1/24", "dev", &outer]);
        ip(&["link", "set", &outer, "up"]);
        ip(&["route", "add", "169.254.169.254/32", "via", "198.51.100.2"]);
        for args in [
            vec!["addr", "add", "198.51.100.2/24", "dev", &inner],
            vec!["addr", "add", "169.254.169.254/32", "dev", &inner],
            vec!["link", "set", &inner, "up"],
            vec!["link", "set", "lo", "up"],
            vec!["route", "add", "default", "via", "198.51.100.1"],
        ] {
            let mut full = vec!["-n", &namespace];
            full.extend(args);
            ip(&full);
        }
        // A host address on another interface than loopback.
        ip(&["addr", "add", "198.18.77.1/32", "dev", &outer]);
        serve_in(&namespace);
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let host_port = listener.local_addr().unwrap().port();
        let abstract_name = format!("conductor-test-{}", internet.suffix);
        let unix = {
            use std::os::linux::net::SocketAddrExt;
            let address =
                std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
                    .unwrap();
            UnixListener::bind_addr(&address).unwrap()
        };
        internet.host_port = host_port;
        internet.abstract_name = abstract_name;
        internet._listeners = Some((listener, unix));
        Some(internet)
    }

    /// Every target the probe tries, and whether a `full` sandbox must reach it.
    fn targets(&self) -> Vec<(String, bool)> {
        let port = self.host_port;
        let mut targets = vec![
            ("198.51.100.2:80".to_owned(), true),
            (format!("127.0.0.1:{port}"), false),
            (format!("{}:{port}", self.host_address), false),
            ("169.254.169.254:80".to_owned(), false),
            (format!("@{}", self.abstract_name), false),
        ];
        if let Some(docker0) = docker0_address() {
            targets.push((format!("{docker0}:{port}"), false));
        }
        targets
    }

    /// The probe's expected output for a sandbox that reaches the internet (`full`) or not.
    fn expected(&self, full: bool) -> String {
        self.targets()
            .iter()
            .map(|(target, open)| {
                let state = if full && *open { "open" } else { "closed" };
                format!("{target} {state}\n")
            })
            .collect()
    }

    fn argv(&self, python: &str) -> Vec<String> {
        let mut argv = vec![python.to_owned(), "-c".to_owned(), PROBE.to_owned()];
        argv.extend(self.targets().into_iter().map(|(target, _)| target));
        argv
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        let suffix = &self.suffix;
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("ctnet{suffix}")])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &format!("ctva{suffix}")])
            .status();
        // Gone with the veth, unless that was never made.
        let _ = Command::new("ip")
            .args(["route", "del", "169.254.169.254/32"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A thread in `namespace` answering "hello" on port 80.
fn serve_in(namespace: &str) {
    let file = std::fs::File::open(format!("/run/netns/{namespace}")).unwrap();
    let (ready, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // setns changes this thread's namespace only.
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let listener = TcpListener::bind("0.0.0.0:80").unwrap();
        ready.send(()).unwrap();
        for stream in listener.incoming().flatten() {
            let _ = (&stream).write_all(b"hello\n");
        }
    });
    wait.recv_timeout(Duration::from_secs(5)).unwrap();
}

fn docker0_address() -> Option<String> {
    let output = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", "docker0"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let cidr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)?;
    Some(cidr.split('/').next()?.to_owned())
}

async fn run(
    executor: &dyn Executor,
    argv: Vec<String>,
    network: NetworkPolicy,
) -> ExecutionResult {
    let workspace = tempfile::tempdir().unwrap();
    let mut request = ExecutionRequest::new(argv, workspace.path().to_owned());
    request.network = network;
    request.timeout = Some(Duration::from_secs(60));
    let (events, mut receiver) = tokio::sync::mpsc::channel(64);
    let drain = tokio::spawn(async move { while receiver.recv().await.is_some() {} });
    let result = executor.execute(request, events).await.unwrap();
    drain.await.unwrap();
    result
}

/// `full` reaches the test's internet and nothing of the host; `none` reaches nothing.
async fn full_reaches_out_and_not_the_host(executor: &dyn Executor, python: &str) {
    let Some(internet) = Internet::start().await else {
        return;
    };
    let full = run(executor, internet.argv(python), NetworkPolicy::Full).await;
    assert_eq!(
        (full.exit_code, full.stdout.as_str()),
        (0, internet.expected(true).as_str()),
        "{}",
        full.stderr
    );
    let none = run(executor, internet.argv(python), NetworkPolicy::None).await;
    assert_eq!(
        (none.exit_code, none.stdout.as_str()),
        (0, internet.expected(false).as_str()),
        "{}",
        none.stderr
    );
}

#[tokio::test]
async fn namespace_full_reaches_out_and_not_the_host() {
    let config = NamespaceConfig {
        helper_path: env!("CARGO_BIN_EXE_conductor").into(),
        ..NamespaceConfig::default()
    };
    let executor = match NamespaceExecutor::new(config) {
        Ok(executor) => executor,
        Err(e) => {
            eprintln!("skipped: the namespace executor is unavailable: {e}");
            return;
        }
    };
    if let Some(reason) = executor.full_network_unavailable() {
        if nix::unistd::geteuid().is_root() {
            panic!("network full is unavailable as root: {reason}");
        }
        eprintln!("skipped: {reason}");
        return;
    }
    full_reaches_out_and_not_the_host(&executor, "/usr/bin/python3").await;
}

/// Each `full` execution's veth is gone once it ended, and the start cost is printed.
#[tokio::test]
async fn namespace_full_leaves_no_interface() {
    let config = NamespaceConfig {
        helper_path: env!("CARGO_BIN_EXE_conductor").into(),
        warm_helpers: 0,
        ..NamespaceConfig::default()
    };
    let Ok(executor) = NamespaceExecutor::new(config) else {
        eprintln!("skipped: the namespace executor is unavailable");
        return;
    };
    if executor.full_network_unavailable().is_some() {
        eprintln!("skipped: no network full here");
        return;
    }
    // No other test of this binary makes interfaces meanwhile.
    let _serial = SERIAL.lock().await;
    let argv = || vec!["true".to_owned()];
    let mut costs = Vec::new();
    for _ in 0..5 {
        let none = run(&executor, argv(), NetworkPolicy::None).await;
        let full = run(&executor, argv(), NetworkPolicy::Full).await;
        assert_eq!((none.exit_code, full.exit_code), (0, 0), "{}", full.stderr);
        costs.push(full.stats.duration_ms as i64 - none.stats.duration_ms as i64);
    }
    eprintln!("full's added start cost (ms, cold helpers): {costs:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let links = Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    let ours: Vec<&str> = links
        .lines()
        .filter(|line| {
            line.split(": ")
                .nth(1)
                .is_some_and(|n| n.starts_with("cnd"))
        })
        .collect();
    assert_eq!(ours, Vec::<&str>::new());
}

async fn container(kind: EngineKind) -> Option<ContainerExecutor> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "skipped: {}: the container executors' cgroups need root",
            kind.name()
        );
        return None;
    }
    let engine = match Engine::connect(kind, &kind.default_socket()).await {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("skipped: {}: {e}", kind.name());
            return None;
        }
    };
    // The postgres service image has python3 (see the services tests).
    let service = conductor_envs::services()
        .into_iter()
        .find(|s| s.name == "postgres")?;
    let tag = service.image_tag();
    if !engine.has_image(&tag).await.unwrap_or(false) {
        eprintln!(
            "skipped: {}: {tag} is not there: run `conductor env build postgres` and the services tests",
            kind.name()
        );
        return None;
    }
    let executor = ContainerExecutor::with_engine(ContainerConfig::new(kind, tag), engine).unwrap();
    Some(executor)
}

#[tokio::test]
async fn docker_full_reaches_out_and_not_the_host() {
    let Some(executor) = container(EngineKind::Docker).await else {
        return;
    };
    full_reaches_out_and_not_the_host(&executor, "python3").await;
}

#[tokio::test]
async fn podman_full_reaches_out_and_not_the_host() {
    let Some(executor) = container(EngineKind::Podman).await else {
        return;
    };
    full_reaches_out_and_not_the_host(&executor, "python3").await;
}
