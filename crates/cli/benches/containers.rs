//! Container start-to-exit latency of `/bin/true` in the `minimal` environment's image: the
//! docker and podman executors, cold (create, start, wait, remove, each with its own cgroup) and
//! from the warm pool, against plain `docker run --rm` / `podman run --rm --network none` of the
//! same image, measured in the same run and interleaved round-robin so drift on the machine hits
//! every variant alike. `conductor exec` (the whole process: connect, check the image, run) is
//! measured too.
//!
//! A warm sample refills the pool first (untimed), so each one measures taking a warm
//! container that is ready, running the command in it and removing it; the time until the
//! `Started` event (the command sent) is printed as the acquisition. The `warm reuse` variant
//! is a pool whose container is reset and reused (`warm_reuse`): each sample waits (untimed)
//! for the container to come back from its reset.
//!
//! Targets (issue 4): cold executor p50 ≤ 1.10× its engine's `run --rm`; warm-pool
//! acquisition p50 (request to command started) ≤ 0.25× the cold `docker run --rm`; the warm
//! start-to-exit ratio is printed beside it. An engine whose daemon does not answer, or whose image is
//! missing (`conductor env build minimal`), is skipped with the reason.
//!
//! Run: `cargo bench -p conductor --bench containers` (CONDUCTOR_BENCH_ITERATIONS=N to change
//! the sample count; default 30 after 3 warm-up rounds).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_core::Executor;
use conductor_envs::EnvStore;
use conductor_executors::container::{ContainerConfig, ContainerExecutor, Engine, EngineKind};
use conductor_types::{ExecEvent, ExecutionRequest};

mod common;
use common::{ms, percentile};

/// One measured thing: its name, and a run returning (start-to-exit, time to `Started`).
type Variant = (String, Box<dyn FnMut() -> Result<Sample, String>>);

#[derive(Debug, Clone, Copy)]
struct Sample {
    total: Duration,
    acquire: Option<Duration>,
}

fn main() -> Result<(), String> {
    let iterations: usize = std::env::var("CONDUCTOR_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let warmup = 3;
    if let Ok(filter) = std::env::var("CONDUCTOR_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?,
    );
    let workspace = tempfile::tempdir().map_err(|e| e.to_string())?;
    let home = conductor_home()?;
    let store = EnvStore::new(conductor_envs::envs_dir(&home));
    let image = store
        .resolve("minimal")
        .and_then(|spec| store.built(&spec))
        .map_err(|e| e.to_string())?
        .map(|built| built.manifest.image_tag())
        .ok_or("the minimal environment is not built: conductor env build minimal")?;

    let mut variants: Vec<Variant> = Vec::new();
    let mut pools: Vec<Arc<ContainerExecutor>> = Vec::new();
    for kind in [EngineKind::Docker, EngineKind::Podman] {
        let engine = match runtime.block_on(Engine::connect(kind, &kind.default_socket())) {
            Ok(engine) => engine,
            Err(e) => {
                println!("{}: skipped: {e}", kind.name());
                continue;
            }
        };
        match runtime.block_on(engine.has_image(&image)) {
            Ok(true) => {}
            Ok(false) => {
                println!(
                    "{}: skipped: image {image} is not imported (conductor env build minimal)",
                    kind.name()
                );
                continue;
            }
            Err(e) => {
                println!("{}: skipped: {e}", kind.name());
                continue;
            }
        }
        let cli = kind.name();
        let run_args: Vec<String> = ["run", "--rm", "--network", "none", &image, "/bin/true"]
            .map(str::to_owned)
            .to_vec();
        variants.push((
            format!("{cli} run --rm"),
            Box::new(move || run_process(cli, &run_args)),
        ));
        let cold =
            ContainerExecutor::with_engine(ContainerConfig::new(kind, &image), engine.clone())
                .map_err(|e| e.to_string())?;
        variants.push(executor_variant(
            format!("{cli} executor"),
            Arc::new(cold),
            false,
            &runtime,
            workspace.path(),
        ));
        let exec_args: Vec<String> = ["exec", "--executor", cli, "--", "/bin/true"]
            .map(str::to_owned)
            .to_vec();
        variants.push((
            format!("conductor exec ({cli})"),
            Box::new(move || run_process(env!("CARGO_BIN_EXE_conductor"), &exec_args)),
        ));
        let config = ContainerConfig {
            warm_pool: 1,
            ..ContainerConfig::new(kind, &image)
        };
        let reuse = ContainerConfig {
            warm_reuse: u32::MAX,
            ..config.clone()
        };
        let warm = Arc::new(
            ContainerExecutor::with_engine(config, engine.clone()).map_err(|e| e.to_string())?,
        );
        pools.push(Arc::clone(&warm));
        variants.push(executor_variant(
            format!("{cli} warm pool"),
            warm,
            true,
            &runtime,
            workspace.path(),
        ));
        let reused =
            Arc::new(ContainerExecutor::with_engine(reuse, engine).map_err(|e| e.to_string())?);
        pools.push(Arc::clone(&reused));
        variants.push(executor_variant(
            format!("{cli} warm reuse"),
            reused,
            true,
            &runtime,
            workspace.path(),
        ));
    }
    if variants.is_empty() {
        println!("no container engine answers: nothing measured (scripts/services starts them)");
        return Ok(());
    }

    let mut samples: Vec<Vec<Sample>> = vec![Vec::with_capacity(iterations); variants.len()];
    for round in 0..warmup + iterations {
        for (index, (name, run)) in variants.iter_mut().enumerate() {
            let sample = run().map_err(|e| format!("{name}: {e}"))?;
            if round >= warmup {
                samples[index].push(sample);
            }
        }
    }
    for pool in &pools {
        runtime.block_on(pool.drain_pool());
    }

    println!(
        "container start-to-exit of /bin/true ({image}), {iterations} runs each ({warmup} warm-up), interleaved"
    );
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>14} {:>12}",
        "variant", "p50 ms", "p99 ms", "mean ms", "acquire p50", "p50/run"
    );
    let p50_of = |name: &str, samples: &[Vec<Sample>]| {
        variants
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| percentile(&mut totals(&samples[i]), 50))
    };
    let mut p50s = std::collections::HashMap::new();
    for ((name, _), runs) in variants.iter().zip(samples.iter()) {
        let mut all = totals(runs);
        let p50 = percentile(&mut all, 50);
        let p99 = percentile(&mut all, 99);
        let mean = all.iter().sum::<Duration>() / all.len().max(1) as u32;
        let mut acquired: Vec<Duration> = runs.iter().filter_map(|s| s.acquire).collect();
        let acquire = (!acquired.is_empty()).then(|| percentile(&mut acquired, 50));
        let engine = name
            .split([' ', '(', ')'])
            .find(|w| *w == "docker" || *w == "podman");
        let baseline = engine.and_then(|e| p50_of(&format!("{e} run --rm"), &samples));
        println!(
            "{:<24} {:>9.1} {:>9.1} {:>9.1} {:>14} {:>12}",
            name,
            ms(p50),
            ms(p99),
            ms(mean),
            acquire
                .map(|a| format!("{:.1} ms", ms(a)))
                .unwrap_or_else(|| "-".into()),
            baseline
                .map(|b| format!("{:.2}x", p50.as_secs_f64() / b.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
        );
        p50s.insert(name.clone(), p50);
    }
    let docker_run = p50s.get("docker run --rm").copied();
    for engine in ["docker", "podman"] {
        let (Some(run), Some(cold)) = (
            p50s.get(&format!("{engine} run --rm")),
            p50s.get(&format!("{engine} executor")),
        ) else {
            println!("target {engine} executor p50 <= 1.10x {engine} run --rm: not measured");
            continue;
        };
        verdict(
            &format!("{engine} executor p50 <= 1.10x {engine} run --rm"),
            cold.as_secs_f64() / run.as_secs_f64(),
            1.10,
        );
        let warm = variants
            .iter()
            .position(|(n, _)| *n == format!("{engine} warm pool"))
            .map(|i| {
                let mut acquired: Vec<Duration> =
                    samples[i].iter().filter_map(|s| s.acquire).collect();
                (
                    percentile(&mut acquired, 50),
                    percentile(&mut totals(&samples[i]), 50),
                )
            });
        match (warm, docker_run) {
            (Some((acquire, total)), Some(docker_run)) => {
                verdict(
                    &format!("{engine} warm-pool acquisition p50 <= 0.25x docker run --rm"),
                    acquire.as_secs_f64() / docker_run.as_secs_f64(),
                    0.25,
                );
                println!(
                    "  ({engine} warm start-to-exit, with exit and removal: {:.2}x docker run --rm)",
                    total.as_secs_f64() / docker_run.as_secs_f64()
                );
                if let Some(reused) = p50s.get(&format!("{engine} warm reuse")) {
                    println!(
                        "  ({engine} reused warm container start-to-exit: {:.2}x docker run --rm)",
                        reused.as_secs_f64() / docker_run.as_secs_f64()
                    );
                }
            }
            _ => println!(
                "target {engine} warm-pool acquisition p50 <= 0.25x docker run --rm: not measured"
            ),
        }
    }
    Ok(())
}

fn verdict(target: &str, ratio: f64, limit: f64) {
    let met = if ratio <= limit { "met" } else { "MISSED" };
    println!("target {target}: {met} ({ratio:.2}x)");
}

fn executor_variant(
    name: String,
    executor: Arc<ContainerExecutor>,
    warm: bool,
    runtime: &Arc<tokio::runtime::Runtime>,
    workspace: &std::path::Path,
) -> Variant {
    let runtime = Arc::clone(runtime);
    let workspace = workspace.to_owned();
    let run = move || {
        runtime.block_on(async {
            if warm {
                executor.warmup().await.map_err(|e| e.to_string())?;
                // A reused container comes back once reset (untimed, like a refill).
                let deadline = Instant::now() + Duration::from_secs(10);
                while executor.idle_warm() == 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if executor.idle_warm() == 0 {
                    return Err("the warm pool is empty after warmup".to_owned());
                }
            }
            let request = ExecutionRequest::new(vec!["/bin/true".into()], workspace.clone());
            let (events, mut receiver) = tokio::sync::mpsc::channel(16);
            let begun = Instant::now();
            let watcher = tokio::spawn(async move {
                while let Some(event) = receiver.recv().await {
                    if let ExecEvent::Started { .. } = event {
                        return Some(begun.elapsed());
                    }
                }
                None
            });
            let result = executor
                .execute(request, events)
                .await
                .map_err(|e| e.to_string())?;
            let total = begun.elapsed();
            let acquire = watcher.await.ok().flatten();
            match result.exit_code {
                0 => Ok(Sample {
                    total,
                    acquire: warm.then_some(acquire).flatten(),
                }),
                code => Err(format!("/bin/true exited {code}: {}", result.stderr)),
            }
        })
    };
    (name, Box::new(run))
}

fn run_process(program: &str, args: &[String]) -> Result<Sample, String> {
    let begun = Instant::now();
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    let total = begun.elapsed();
    if output.status.success() {
        Ok(Sample {
            total,
            acquire: None,
        })
    } else {
        Err(format!(
            "{program} {} exited with {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn conductor_home() -> Result<std::path::PathBuf, String> {
    match std::env::var_os("CONDUCTOR_HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(home.into()),
        None => Ok(
            std::path::PathBuf::from(std::env::var_os("HOME").ok_or("HOME is not set")?)
                .join(".conductor"),
        ),
    }
}

fn totals(samples: &[Sample]) -> Vec<Duration> {
    samples.iter().map(|s| s.total).collect()
}
