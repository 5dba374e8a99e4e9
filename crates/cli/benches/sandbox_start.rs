//! Sandbox start-to-exit latency of `/bin/true`: the host and namespace executors (warm pool and
//! cold) against `bwrap --unshare-all` and `unshare -Urfpmn` measured in the same run,
//! interleaved round-robin so drift on the machine hits every variant alike. Every namespace
//! execution gets a cgroup of its own (created ahead of time for a warm helper, on the critical
//! path for a cold one).
//!
//! Run: `cargo bench -p conductor --bench sandbox_start` (CONDUCTOR_BENCH_ITERATIONS=N to change
//! the sample count; default 200 after 20 warm-up rounds).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_core::Executor;
use conductor_executors::host::{HostConfig, HostExecutor};
use conductor_executors::namespace::{NamespaceConfig, NamespaceExecutor};
use conductor_types::{ExecutionRequest, NetworkPolicy};

mod common;
use common::{ms, percentile};

type Variant = (String, Box<dyn FnMut() -> Result<(), String>>);

fn main() -> Result<(), String> {
    let iterations: usize = std::env::var("CONDUCTOR_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let warmup = 20;
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?,
    );
    let workspace = tempfile::tempdir().map_err(|e| e.to_string())?;

    let mut variants: Vec<Variant> = Vec::new();
    if which("bwrap") {
        variants.push((
            "bwrap --unshare-all".into(),
            Box::new(|| run_baseline(&bwrap_args())),
        ));
    } else {
        eprintln!("bench: bwrap not installed (apt-get install bubblewrap): baseline skipped");
    }
    variants.push((
        "unshare -Urfpmn".into(),
        Box::new(|| run_baseline(&["unshare", "-Urfpmn", "--mount-proc", "/bin/true"])),
    ));
    // Warm (the default with cgroups: a helper already in its cgroup) and cold (the command
    // spawned directly, joining its cgroup on the critical path, as `conductor exec` runs).
    for (label, warm_helpers) in [("host executor", 1), ("host (cold)", 0)] {
        let config = HostConfig {
            helper_path: env!("CARGO_BIN_EXE_conductor").into(),
            warm_helpers,
            ..Default::default()
        };
        let host: Arc<dyn Executor> = Arc::new(HostExecutor::new(config));
        let (_, run) = executor_variant(host, NetworkPolicy::Host, &runtime, workspace.path());
        variants.push((label.to_owned(), run));
    }
    // Warm (the default: a helper with its cgroup and namespaces made ahead of time) and cold
    // (everything on the critical path, as `conductor exec` runs).
    for (label, warm_helpers) in [("namespace executor", 1), ("namespace (cold)", 0)] {
        let config = NamespaceConfig {
            helper_path: env!("CARGO_BIN_EXE_conductor").into(),
            warm_helpers,
            ..Default::default()
        };
        match NamespaceExecutor::new(config) {
            Ok(namespace) => {
                let namespace: Arc<dyn Executor> = Arc::new(namespace);
                let (_, run) =
                    executor_variant(namespace, NetworkPolicy::None, &runtime, workspace.path());
                variants.push((label.to_owned(), run));
            }
            Err(e) => eprintln!("bench: namespace executor unavailable: {e}"),
        }
    }

    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(iterations); variants.len()];
    for round in 0..warmup + iterations {
        for (index, (name, run)) in variants.iter_mut().enumerate() {
            let start = Instant::now();
            run().map_err(|e| format!("{name}: {e}"))?;
            if round >= warmup {
                samples[index].push(start.elapsed());
            }
        }
    }

    println!(
        "sandbox start-to-exit of /bin/true, {iterations} runs each ({warmup} warm-up), 2 cores"
    );
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>10}",
        "variant", "p50 ms", "p99 ms", "mean ms", "p50/bwrap"
    );
    let bwrap_p50 = variants
        .iter()
        .position(|(name, _)| name.starts_with("bwrap"))
        .map(|i| percentile(&mut samples[i].clone(), 50));
    let mut namespace_ratio = None;
    for ((name, _), runs) in variants.iter().zip(samples.iter_mut()) {
        let p50 = percentile(runs, 50);
        let p99 = percentile(runs, 99);
        let mean = runs.iter().sum::<Duration>() / runs.len().max(1) as u32;
        let ratio = bwrap_p50.map(|b| p50.as_secs_f64() / b.as_secs_f64());
        if name == "namespace executor" {
            namespace_ratio = ratio;
        }
        println!(
            "{:<24} {:>9.2} {:>9.2} {:>9.2} {:>10}",
            name,
            ms(p50),
            ms(p99),
            ms(mean),
            ratio
                .map(|r| format!("{r:.2}x"))
                .unwrap_or_else(|| "-".into())
        );
    }
    match namespace_ratio {
        Some(r) if r <= 1.0 => println!("target namespace p50 <= 1.00x bwrap: met ({r:.2}x)"),
        Some(r) => println!("target namespace p50 <= 1.00x bwrap: MISSED ({r:.2}x)"),
        None => println!("target namespace p50 <= 1.00x bwrap: not measured"),
    }
    Ok(())
}

fn executor_variant(
    executor: Arc<dyn Executor>,
    network: NetworkPolicy,
    runtime: &Arc<tokio::runtime::Runtime>,
    workspace: &Path,
) -> Variant {
    let name = format!("{} executor", executor.name());
    let runtime = Arc::clone(runtime);
    let workspace = workspace.to_owned();
    let run = move || {
        let mut request = ExecutionRequest::new(vec!["/bin/true".into()], workspace.clone());
        request.network = network.clone();
        let (events, receiver) = tokio::sync::mpsc::channel(16);
        drop(receiver);
        let result = runtime
            .block_on(executor.execute(request, events))
            .map_err(|e| e.to_string())?;
        match result.exit_code {
            0 => Ok(()),
            code => Err(format!("/bin/true exited {code}: {}", result.stderr)),
        }
    };
    (name, Box::new(run))
}

fn bwrap_args() -> Vec<&'static str> {
    vec![
        "bwrap",
        "--unshare-all",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "/bin/true",
    ]
}

fn run_baseline(argv: &[&str]) -> Result<(), String> {
    let status = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} exited with {status}", argv.join(" ")))
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
