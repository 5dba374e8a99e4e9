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
    for target in executors() {
        for case in conformance::cases() {
            trials.push(trial(&args, &target, case));
        }
    }
    libtest_mimic::run(&args, trials).exit_code()
}

/// An executor under test, or why it cannot be tested here.
enum Target {
    Ready(Arc<dyn Executor>),
    Unavailable { name: &'static str, reason: String },
}

fn executors() -> Vec<Target> {
    vec![
        Target::Ready(Arc::new(HostExecutor::new(HostConfig::default()))),
        namespace(),
        container(EngineKind::Docker),
        container(EngineKind::Podman),
    ]
}

/// The docker or podman executor running the `minimal` environment, if the engine answers.
fn container(kind: EngineKind) -> Target {
    let unavailable = |reason: String| Target::Unavailable {
        name: kind.name(),
        reason,
    };
    if std::env::var("CONDUCTOR_CONFORMANCE_CONTAINERS").as_deref() == Ok("0") {
        return unavailable("CONDUCTOR_CONFORMANCE_CONTAINERS=0".to_owned());
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return unavailable(format!("building a tokio runtime: {e}")),
    };
    let ready = runtime.block_on(async {
        let engine = Engine::connect(kind, &kind.default_socket())
            .await
            .map_err(|e| e.to_string())?;
        let image = minimal_image(&engine).await?;
        let executor = ContainerExecutor::with_engine(ContainerConfig::new(kind, image), engine)
            .map_err(|e| e.to_string())?;
        executor.warmup().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(executor)
    });
    match ready {
        Ok(executor) => Target::Ready(Arc::new(executor)),
        Err(reason) => unavailable(reason),
    }
}

/// The `minimal` environment's image in `engine`: built (root only) and imported when missing.
async fn minimal_image(engine: &Engine) -> Result<String, String> {
    let home = match std::env::var_os("CONDUCTOR_HOME").filter(|h| !h.is_empty()) {
        Some(home) => std::path::PathBuf::from(home),
        None => std::path::PathBuf::from(std::env::var_os("HOME").ok_or("HOME is not set")?)
            .join(".conductor"),
    };
    let store = EnvStore::new(conductor_envs::envs_dir(&home));
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

/// The namespace executor with this package's `conductor` binary as its helper, if it can run
/// on this machine.
fn namespace() -> Target {
    let config = NamespaceConfig {
        helper_path: env!("CARGO_BIN_EXE_conductor").into(),
        ..Default::default()
    };
    let unavailable = |reason: String| Target::Unavailable {
        name: "namespace",
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
    match health {
        Ok(()) => Target::Ready(Arc::new(executor)),
        Err(reason) => unavailable(reason),
    }
}

fn trial(args: &Arguments, target: &Target, case: Case) -> Trial {
    let (executor, skip) = match target {
        Target::Ready(executor) => (
            Some(executor.clone()),
            case.skip_reason(executor.name(), &executor.capabilities()),
        ),
        Target::Unavailable { name, reason } => {
            (None, Some(format!("{name} is unavailable: {reason}")))
        }
    };
    let name = match target {
        Target::Ready(executor) => format!("{}::{}", executor.name(), case.name),
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
        (Some(executor), None) => run_case(executor, case),
    })
    .with_ignored_flag(ignored)
}

fn run_case(executor: Arc<dyn Executor>, case: Case) -> Result<(), Failed> {
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
    let outcome = runtime
        .block_on(async { tokio::time::timeout(TRIAL_LIMIT, (case.run)(executor, fixture)).await });
    match outcome {
        Ok(result) => result.map_err(Failed::from),
        Err(_) => Err(Failed::from(format!(
            "expected the case to finish within {TRIAL_LIMIT:?}, it did not"
        ))),
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
