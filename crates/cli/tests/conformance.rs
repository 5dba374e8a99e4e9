//! Runs the conformance suite (`conductor_executors::conformance`) against every executor, one
//! trial per executor and case, named `<executor>::<case>`.
//!
//! A case whose capability the executor does not declare, or every case of an executor that is
//! unavailable on this machine, is marked ignored and the reason is printed to stderr — never
//! counted as passed. Trials run one at a time unless `--test-threads` says otherwise: the CPU
//! quota case measures timing.
//!
//! The docker and podman executors run the `minimal` environment's image. When an engine
//! answers, the environment is built (cached in `$CONDUCTOR_HOME/envs`) and imported as needed;
//! when it does not answer (or `CONDUCTOR_CONFORMANCE_CONTAINERS=0`), their cases are skipped
//! with the reason.
//!
//! `cargo test -p conductor --test conformance [-- FILTER]`

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use conductor_core::Executor;
use conductor_envs::{BuildConfig, BuildEvent, Builder, EnvStore};
use conductor_executors::conformance::{self, Case, Fixture};
use conductor_executors::container::{ContainerConfig, ContainerExecutor, Engine, EngineKind};
use conductor_executors::host::{HostConfig, HostExecutor};
use conductor_executors::namespace::{NamespaceConfig, NamespaceExecutor};
use libtest_mimic::{Arguments, Failed, Trial};

mod support;

/// Longest a single trial may take before it is failed.
const TRIAL_LIMIT: Duration = Duration::from_secs(180);

fn main() -> ExitCode {
    // Before any thread exists: the environment case reads these host variables.
    conformance::prepare_host_env();
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let mut trials = Vec::new();
    let targets = executors();
    for target in &targets {
        for case in conformance::cases() {
            trials.push(trial(&args, target, case));
        }
    }
    for kind in [EngineKind::Docker, EngineKind::Podman] {
        // The pool's own trials need the engine the cold target found (or did not).
        let missing = targets.iter().find_map(|target| match target {
            Target::Unavailable { name, reason } if name == kind.name() => Some(reason.clone()),
            _ => None,
        });
        trials.extend(pool_trials(&args, kind, missing));
    }
    libtest_mimic::run(&args, trials).exit_code()
}

/// An executor under test, or why it cannot be tested here.
enum Target {
    Ready(Arc<dyn Executor>),
    /// A container executor with a warm pool: each case first fills the pool (`warmup`), so
    /// its first execution runs in a warm container. Trials are named `<engine>-warm::<case>`,
    /// or `<engine>-reuse::<case>` when the containers are reset and reused (the label).
    Warm(Arc<dyn Executor>, &'static str),
    /// A ready executor named `<engine>-<label>::<case>` (the rootless Podman).
    Labelled(Arc<dyn Executor>, &'static str),
    Unavailable {
        name: String,
        reason: String,
    },
}

fn executors() -> Vec<Target> {
    vec![
        Target::Ready(Arc::new(HostExecutor::new(HostConfig {
            helper_path: env!("CARGO_BIN_EXE_conductor").into(),
            ..HostConfig::default()
        }))),
        namespace(1),
        namespace(0),
        container(EngineKind::Docker, 0, 0),
        container(EngineKind::Podman, 0, 0),
        container(EngineKind::Docker, 1, 0),
        container(EngineKind::Podman, 1, 0),
        container(EngineKind::Docker, 1, 1000),
        container(EngineKind::Podman, 1, 1000),
        rootless_podman(),
    ]
}

/// The docker or podman executor running the `minimal` environment, if the engine answers;
/// with a warm pool of `warm_pool` containers, each serving up to `warm_reuse` executions.
fn container(kind: EngineKind, warm_pool: usize, warm_reuse: u32) -> Target {
    let label = if warm_reuse > 0 { "reuse" } else { "warm" };
    let name = match warm_pool {
        0 => kind.name().to_owned(),
        _ => format!("{}-{label}", kind.name()),
    };
    match container_executor_in(kind, warm_pool, warm_reuse, None) {
        Ok(executor) if warm_pool > 0 => Target::Warm(executor, label),
        Ok(executor) => Target::Ready(executor),
        Err(reason) => Target::Unavailable { name, reason },
    }
}

/// The executor of [`container`], with warm slots in `pool_dir` instead of the shared default.
fn container_executor_in(
    kind: EngineKind,
    warm_pool: usize,
    warm_reuse: u32,
    pool_dir: Option<std::path::PathBuf>,
) -> Result<Arc<ContainerExecutor>, String> {
    if std::env::var("CONDUCTOR_CONFORMANCE_CONTAINERS").as_deref() == Ok("0") {
        return Err("CONDUCTOR_CONFORMANCE_CONTAINERS=0".to_owned());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("building a tokio runtime: {e}"))?;
    runtime.block_on(async {
        let engine = Engine::connect(kind, &kind.default_socket())
            .await
            .map_err(|e| e.to_string())?;
        let image = minimal_image(&engine).await?;
        let mut config = ContainerConfig {
            warm_pool,
            warm_reuse,
            ..ContainerConfig::new(kind, image)
        };
        if let Some(pool_dir) = pool_dir {
            config.pool_dir = pool_dir;
        }
        let executor = ContainerExecutor::with_engine(config, engine).map_err(|e| e.to_string())?;
        // Only the sweep and the health check: a pool filled on this runtime would outlive it.
        if warm_pool == 0 {
            executor.warmup().await.map_err(|e| e.to_string())?;
        } else {
            executor.health_check().await.map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(Arc::new(executor))
    })
}

/// The `minimal` environment's image in `engine`: built (root only) and imported when missing.
async fn minimal_image(engine: &Engine) -> Result<String, String> {
    let store = EnvStore::new(conductor_envs::envs_dir(&support::conductor_home()));
    let spec = store.resolve("minimal").map_err(|e| e.to_string())?;
    let built = match store.built(&spec).map_err(|e| e.to_string())? {
        Some(built) => built,
        None => {
            if !nix::unistd::geteuid().is_root() {
                return Err("the minimal environment is not built and building it needs root (conductor env build minimal)".to_owned());
            }
            eprintln!(
                "conformance: building the minimal environment into {}",
                store.dir().display()
            );
            let builder = Builder::new(store.clone(), BuildConfig::default());
            tokio::task::spawn_blocking(move || {
                builder.build(&spec, &mut |event| {
                    if let BuildEvent::Step {
                        index,
                        total,
                        title,
                    } = event
                    {
                        eprintln!("conformance: [{index}/{total}] {title}");
                    }
                })
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
        }
    };
    let tag = built.manifest.image_tag();
    if !engine.has_image(&tag).await.map_err(|e| e.to_string())? {
        eprintln!("conformance: importing {tag} into {}", engine.kind().name());
        engine
            .import_rootfs(&built.rootfs(), &tag)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(tag)
}

/// The podman executor on the rootless Podman that `scripts/services` runs as the user
/// `conductor-rootless` (its socket in `/run/user/<uid>/podman`), running the `minimal`
/// environment's image imported into that user's storage.
fn rootless_podman() -> Target {
    let unavailable = |reason: String| Target::Unavailable {
        name: "podman-rootless".to_owned(),
        reason,
    };
    if std::env::var("CONDUCTOR_CONFORMANCE_CONTAINERS").as_deref() == Ok("0") {
        return unavailable("CONDUCTOR_CONFORMANCE_CONTAINERS=0".to_owned());
    }
    let Ok(Some(user)) = nix::unistd::User::from_name("conductor-rootless") else {
        return unavailable("no user conductor-rootless (scripts/services creates it and starts its rootless Podman)".to_owned());
    };
    let socket = std::path::PathBuf::from(format!("/run/user/{}/podman/podman.sock", user.uid));
    let made = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("building a tokio runtime: {e}"))
        .and_then(|runtime| {
            runtime.block_on(async {
                let engine = Engine::connect(EngineKind::Podman, &socket)
                    .await
                    .map_err(|e| e.to_string())?;
                let image = minimal_image(&engine).await?;
                let config = ContainerConfig::for_socket(EngineKind::Podman, image, socket.clone());
                if config.rootless.is_none() {
                    return Err(format!(
                        "{} is root's: not a rootless Podman",
                        socket.display()
                    ));
                }
                let executor =
                    ContainerExecutor::with_engine(config, engine).map_err(|e| e.to_string())?;
                executor.warmup().await.map_err(|e| e.to_string())?;
                Ok::<_, String>(executor)
            })
        });
    match made {
        Ok(executor) => Target::Labelled(Arc::new(executor), "rootless"),
        Err(reason) => unavailable(reason),
    }
}

/// The namespace executor with this package's `conductor` binary as its helper, if it can run
/// on this machine; with `warm_helpers` started ahead of time (as root, with their root built),
/// or none (`namespace-cold::<case>`: every helper starts on demand and builds the whole root).
fn namespace(warm_helpers: usize) -> Target {
    let config = NamespaceConfig {
        helper_path: env!("CARGO_BIN_EXE_conductor").into(),
        warm_helpers,
        ..Default::default()
    };
    let name = match warm_helpers {
        0 => "namespace-cold",
        _ => "namespace",
    };
    let unavailable = |reason: String| Target::Unavailable {
        name: name.to_owned(),
        reason,
    };
    let executor = match NamespaceExecutor::new(config) {
        Ok(executor) => executor,
        Err(e) => return unavailable(e.to_string()),
    };
    let health = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("building a tokio runtime: {e}"))
        .and_then(|runtime| {
            runtime
                .block_on(executor.health_check())
                .map_err(|e| e.to_string())
        });
    match (health, warm_helpers) {
        (Ok(()), 0) => Target::Labelled(Arc::new(executor), "cold"),
        (Ok(()), _) => Target::Ready(Arc::new(executor)),
        (Err(reason), _) => unavailable(reason),
    }
}

fn trial(args: &Arguments, target: &Target, case: Case) -> Trial {
    let warm = matches!(target, Target::Warm(..));
    let (executor, skip) = match target {
        Target::Ready(executor) | Target::Warm(executor, _) | Target::Labelled(executor, _) => (
            Some(executor.clone()),
            case.skip_reason(executor.name(), &executor.capabilities()),
        ),
        Target::Unavailable { name, reason } => {
            (None, Some(format!("{name} is unavailable: {reason}")))
        }
    };
    let name = match target {
        Target::Ready(executor) => format!("{}::{}", executor.name(), case.name),
        Target::Warm(executor, label) | Target::Labelled(executor, label) => {
            format!("{}-{label}::{}", executor.name(), case.name)
        }
        Target::Unavailable { name, .. } => format!("{name}::{}", case.name),
    };
    if let Some(reason) = &skip {
        if selected(args, &name) {
            eprintln!("skipping {name}: {reason}");
        }
    }
    let ignored = skip.is_some();
    Trial::test(name, move || match (executor, skip) {
        // Reached only with --ignored / --include-ignored: say why instead of passing.
        (_, Some(reason)) => Err(Failed::from(format!("not run: {reason}"))),
        (None, None) => Err(Failed::from("no executor")),
        (Some(executor), None) => run_case(executor, case, warm),
    })
    .with_ignored_flag(ignored)
}

fn run_case(executor: Arc<dyn Executor>, case: Case, warm: bool) -> Result<(), Failed> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("building a tokio runtime: {e}"))?;
    let workspace = tempfile::Builder::new()
        .prefix("conductor-conformance-")
        .tempdir()
        .map_err(|e| format!("creating the workspace: {e}"))?;
    let fixture = Fixture::new(workspace.path().to_owned(), &executor.capabilities());
    let outcome = runtime.block_on(async {
        if warm {
            executor
                .warmup()
                .await
                .map_err(|e| format!("filling the warm pool: {e}"))?;
        }
        tokio::time::timeout(TRIAL_LIMIT, (case.run)(executor, fixture))
            .await
            .map_err(|_| format!("expected the case to finish within {TRIAL_LIMIT:?}, it did not"))
    });
    match outcome {
        Ok(result) => result.map_err(Failed::from),
        Err(message) => Err(Failed::from(message)),
    }
}

/// Whether libtest's filter and `--skip` select `name` (to print skip reasons only for trials
/// the user asked for).
fn selected(args: &Arguments, name: &str) -> bool {
    let matches = |pattern: &str| {
        if args.exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    };
    let wanted = match args.filter.as_deref() {
        Some(filter) => matches(filter),
        None => true,
    };
    wanted && !args.skip.iter().any(|s| matches(s))
}

/// The warm pool's own trials for `kind`: each execution gets a fresh container, and dropping
/// the executor leaves no container, slot or cgroup behind. Skipped, with the reason, where the engine does not answer (`missing`).
fn pool_trials(args: &Arguments, kind: EngineKind, missing: Option<String>) -> Vec<Trial> {
    let fresh = format!(
        "{}-warm::pool_gives_a_fresh_container_each_time",
        kind.name()
    );
    let drop = format!("{}-warm::pool_leaves_nothing_after_drop", kind.name());
    let reused = format!("{}-reuse::reuse_resets_between_executions", kind.name());
    if let Some(reason) = &missing {
        for name in [&fresh, &drop, &reused] {
            if selected(args, name) {
                eprintln!("skipping {name}: {reason}");
            }
        }
    }
    let skip = missing.is_some();
    vec![
        Trial::test(fresh, move || pool_case(kind, 2, 0, fresh_containers)).with_ignored_flag(skip),
        Trial::test(drop, move || pool_case(kind, 2, 0, nothing_left_after_drop))
            .with_ignored_flag(skip),
        Trial::test(reused, move || pool_case(kind, 1, 1000, reused_containers))
            .with_ignored_flag(skip),
    ]
}

type PoolCase = fn(
    Arc<ContainerExecutor>,
    std::path::PathBuf,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>>>>;

fn pool_case(
    kind: EngineKind,
    warm_pool: usize,
    warm_reuse: u32,
    case: PoolCase,
) -> Result<(), Failed> {
    // A pool dir of its own: the warm conformance cases run alongside with the same process's
    // pools, so only slots in this directory are this executor's.
    let pool_dir = std::path::Path::new("/run/conductor/container-pool").join(format!(
        "{}-trial-{}",
        kind.name(),
        conductor_types::ExecutionId::random()
    ));
    let executor = container_executor_in(kind, warm_pool, warm_reuse, Some(pool_dir.clone()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("building a tokio runtime: {e}"))?;
    let workspace = tempfile::Builder::new()
        .prefix("conductor-pool-")
        .tempdir()
        .map_err(|e| format!("creating the workspace: {e}"))?;
    runtime
        .block_on(async {
            tokio::time::timeout(TRIAL_LIMIT, case(executor, workspace.path().to_owned()))
                .await
                .map_err(|_| format!("expected the case to finish within {TRIAL_LIMIT:?}"))?
        })
        .map_err(Failed::from)?;
    let _ = std::fs::remove_dir(&pool_dir);
    Ok(())
}

/// Runs `script` with `sh -c` and returns its stdout.
async fn run_sh(
    executor: &ContainerExecutor,
    workspace: &std::path::Path,
    script: &str,
) -> Result<String, String> {
    let request = conductor_types::ExecutionRequest::new(
        vec!["sh".into(), "-c".into(), script.into()],
        workspace.to_owned(),
    );
    let (events, receiver) = tokio::sync::mpsc::channel(64);
    drop(receiver);
    let result = executor
        .execute(request, events)
        .await
        .map_err(|e| e.to_string())?;
    if result.exit_code != 0 {
        return Err(format!(
            "{script:?} exited {}: {}",
            result.exit_code, result.stderr
        ));
    }
    Ok(result.stdout)
}

/// Three executions in a row, each from a full pool: each sees an empty /tmp (nothing left by
/// the one before), runs in a container of its own (its cgroup path), and its workspace is the
/// request's.
fn fresh_containers(
    executor: Arc<ContainerExecutor>,
    workspace: std::path::PathBuf,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>>>> {
    Box::pin(async move {
        let mut cgroups = Vec::new();
        for round in 0..3 {
            executor.warmup().await.map_err(|e| e.to_string())?;
            if executor.idle_warm() != 2 {
                return Err(format!(
                    "expected 2 idle warm containers after warmup, found {}",
                    executor.idle_warm()
                ));
            }
            let stdout = run_sh(
                &executor,
                &workspace,
                &format!(
                    "ls -A /tmp; touch /tmp/left-{round}; echo {round} > /workspace/round; \
                     grep -m1 memory /proc/self/cgroup || head -n1 /proc/self/cgroup"
                ),
            )
            .await?;
            let mut lines = stdout.lines();
            let cgroup = lines.next_back().unwrap_or_default().to_owned();
            // A warm container's cgroup parent is named for the pool, a cold one's for the run.
            if !cgroup.contains("-warm-") {
                return Err(format!(
                    "round {round}: expected a warm container, ran in cgroup {cgroup:?}"
                ));
            }
            let rest: Vec<&str> = lines.collect();
            if !rest.is_empty() {
                return Err(format!(
                    "round {round}: expected an empty /tmp, found {rest:?}"
                ));
            }
            let written = std::fs::read_to_string(workspace.join("round"))
                .map_err(|e| format!("reading the workspace file: {e}"))?;
            if written.trim() != round.to_string() {
                return Err(format!(
                    "round {round}: the workspace holds {written:?}, expected {round}"
                ));
            }
            if cgroups.contains(&cgroup) {
                return Err(format!(
                    "round {round}: container cgroup {cgroup} was used before"
                ));
            }
            cgroups.push(cgroup);
        }
        executor.drain_pool().await;
        Ok(())
    })
}

/// A pool of one container reset and reused: the second execution runs in the same container
/// (its init's start time) yet finds nothing of the first — files in `/tmp` (even in a
/// directory it cannot read) and `/dev/shm`, System V shared memory, a process it left running
/// in a session of its own — and neither could read the agent's command FIFO or forge its
/// status. A command that times out costs its container: the next runs in another one.
fn reused_containers(
    executor: Arc<ContainerExecutor>,
    workspace: std::path::PathBuf,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>>>> {
    Box::pin(async move {
        let init = "cut -d' ' -f22 /proc/1/stat";
        executor.warmup().await.map_err(|e| e.to_string())?;
        let first = run_sh(
            &executor,
            &workspace,
            &format!(
                "{init}; id -u; echo secret > /tmp/a; mkdir /tmp/d; touch /tmp/d/f; chmod 000 /tmp/d; \
                 echo x > /dev/shm/s; ipcmk -M 4096 >/dev/null; \
                 if cat /.conductor/command >/dev/null 2>&1; then echo read-command; fi; \
                 if echo 0 2>/dev/null >/.conductor/status; then echo wrote-status; fi; \
                 kill -9 -1 2>/dev/null; setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo done"
            ),
        )
        .await?;
        let first: Vec<&str> = first.lines().collect();
        let [first_init, uid, "done"] = first[..] else {
            return Err(format!("first execution printed {first:?}"));
        };
        if uid != conductor_executors::container::DEFAULT_USER.to_string() {
            return Err(format!("the command ran as uid {uid}"));
        }
        wait_for_idle(&executor, 1).await?;
        let second = run_sh(
            &executor,
            &workspace,
            &format!(
                "{init}; ls -A /tmp /dev/shm | grep -v ':$' | grep . ; \
                 echo shm=$(ipcs -m | grep -c '^0x'); \
                 echo sleeping=$(cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^sleep$'); true"
            ),
        )
        .await?;
        let expected = format!("{first_init}\nshm=0\nsleeping=0\n");
        if second != expected {
            return Err(format!(
                "expected the same container, reset ({expected:?}), the second execution printed {second:?}"
            ));
        }
        // Output, status and streams stay the command's own.
        let request = conductor_types::ExecutionRequest::new(
            vec![
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 7".into(),
            ],
            workspace.clone(),
        );
        let (events, receiver) = tokio::sync::mpsc::channel(64);
        drop(receiver);
        wait_for_idle(&executor, 1).await?;
        let result = executor
            .execute(request, events)
            .await
            .map_err(|e| e.to_string())?;
        if (result.exit_code, &*result.stdout, &*result.stderr) != (7, "out\n", "err\n") {
            return Err(format!("expected exit 7, out, err: got {result:?}"));
        }
        // A timeout removes the container.
        wait_for_idle(&executor, 1).await?;
        let mut request = conductor_types::ExecutionRequest::new(
            vec!["sleep".into(), "30".into()],
            workspace.clone(),
        );
        request.timeout = Some(std::time::Duration::from_millis(500));
        let (events, receiver) = tokio::sync::mpsc::channel(64);
        drop(receiver);
        let result = executor
            .execute(request, events)
            .await
            .map_err(|e| e.to_string())?;
        if !result.timed_out {
            return Err(format!("expected a timeout, got {result:?}"));
        }
        wait_for_idle(&executor, 1).await?;
        let after = run_sh(&executor, &workspace, init).await?;
        if after.trim() == first_init {
            return Err("the container that timed out was used again".to_owned());
        }
        executor.drain_pool().await;
        Ok(())
    })
}

/// Waits (up to 30 s) until `count` warm containers are idle: a reused one comes back once
/// reset, a removed one is replaced.
async fn wait_for_idle(executor: &ContainerExecutor, count: usize) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while executor.idle_warm() < count {
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "expected {count} idle warm containers within 30 s, found {}",
                executor.idle_warm()
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// After warmup fills the pool, dropping the executor removes its containers (named
/// `conductor-warm-<slot>`), their slot directories and their cgroups (`<engine>-warm-<slot>`).
/// The executor has a pool dir of its own, so its slots name exactly its containers.
fn nothing_left_after_drop(
    executor: Arc<ContainerExecutor>,
    _workspace: std::path::PathBuf,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>>>> {
    Box::pin(async move {
        executor.warmup().await.map_err(|e| e.to_string())?;
        let engine = executor.engine().clone();
        let kind = engine.kind();
        let pool_dir = executor.config().pool_dir.clone();
        let slots: Vec<String> = std::fs::read_dir(&pool_dir)
            .map_err(|e| format!("reading {}: {e}", pool_dir.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let containers = || async {
            let mut found = 0;
            for slot in &slots {
                let filters = std::collections::HashMap::from([(
                    "name".to_owned(),
                    vec![format!("conductor-warm-{slot}")],
                )]);
                found += engine
                    .list_containers(&filters)
                    .await
                    .map(|listed| listed.len())
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(found)
        };
        let leftovers = || {
            let slots_left = slots
                .iter()
                .filter(|slot| pool_dir.join(slot).exists())
                .count();
            let cgroups = slots
                .iter()
                .filter(|slot| {
                    let name = format!("{}-warm-{slot}", kind.name());
                    std::path::Path::new("/sys/fs/cgroup/memory/conductor")
                        .join(&name)
                        .exists()
                        || std::path::Path::new("/sys/fs/cgroup/conductor")
                            .join(&name)
                            .exists()
                })
                .count();
            (slots_left, cgroups)
        };
        let before = (containers().await?, leftovers());
        if before != (2, (2, 2)) {
            return Err(format!(
                "expected 2 warm containers, slots and cgroups after warmup, found {before:?}"
            ));
        }
        drop(executor);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let now = (containers().await?, leftovers());
            if now == (0, (0, 0)) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "expected no containers, slots or cgroups 20 s after the drop, found {now:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}
