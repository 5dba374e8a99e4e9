//! `conductor env list|build|show|rm`: environments built offline (conductor-envs) and
//! imported into the container engines that answer, with a progress bar while building.
//! `conductor env build postgres redis` builds the service sidecars the same way, imported as
//! `conductor-service/<name>:<hash>`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use conductor_envs::{BuildConfig, BuildEvent, Builder, BuiltEnv, EnvSpec, EnvStore, ServiceSpec};
use conductor_executors::container::{Engine, EngineKind};
use indicatif::{ProgressBar, ProgressStyle};

/// `conductor env`.
#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    #[command(subcommand)]
    command: EnvCommand,
}

#[derive(Debug, clap::Subcommand)]
enum EnvCommand {
    /// List the presets and custom environments, and whether each is built.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Build environments (cached: an unchanged spec is not rebuilt) and import them into the
    /// container engines. The service sidecars `postgres` and `redis` are built by name too.
    Build {
        /// Presets, custom environments or services (postgres, redis) to build.
        names: Vec<String>,
        /// A spec file (TOML or JSON: name, base, packages, setup) to build.
        #[arg(long, value_name = "SPEC")]
        file: Option<PathBuf>,
        /// A Dockerfile to build as the one environment NAME (a subset: FROM debian:bookworm,
        /// python:3.11 or node:18; RUN, ENV, ARG, WORKDIR; no COPY/ADD or multi-stage).
        #[arg(long, value_name = "PATH", conflicts_with = "file")]
        dockerfile: Option<PathBuf>,
        /// Where to import the image: every engine that answers (auto), one, or none.
        #[arg(long, value_enum, default_value_t = ImportTo::Auto)]
        import: ImportTo,
    },
    /// Show an environment's spec and, when built, its manifest.
    Show {
        /// The environment.
        name: String,
    },
    /// Remove an environment's builds, saved spec and images.
    Rm {
        /// The environment.
        name: String,
    },
}

/// Which engines `env build` imports into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ImportTo {
    /// Every engine whose socket answers.
    Auto,
    /// Docker only (fails when it does not answer).
    Docker,
    /// Podman only (fails when it does not answer).
    Podman,
    /// Do not import (the rootfs still serves the namespace executor).
    None,
}

/// Runs `conductor env`.
pub fn main(args: EnvArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return crate::fail(&anyhow::Error::new(e).context("starting the runtime")),
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => crate::fail(&error),
    }
}

/// The environment store under `$CONDUCTOR_HOME/envs`.
pub fn store() -> anyhow::Result<EnvStore> {
    Ok(EnvStore::new(conductor_envs::envs_dir(
        &crate::client::conductor_home()?,
    )))
}

async fn run(args: EnvArgs) -> anyhow::Result<()> {
    let store = store()?;
    match args.command {
        EnvCommand::List { json } => list(&store, json),
        EnvCommand::Build {
            names,
            file,
            dockerfile,
            import,
        } => {
            // Each spec with the image tag it is imported as.
            let mut specs = Vec::new();
            if let Some(path) = file {
                let spec = EnvSpec::from_file(&path)?;
                if let Some(text) = &spec.dockerfile {
                    print_notes(&spec.name, text);
                }
                let tag = spec.image_tag();
                specs.push((spec, tag));
            }
            let names = match dockerfile {
                Some(path) => {
                    let [name] = names.as_slice() else {
                        bail!("--dockerfile builds one environment: give its name (conductor env build NAME --dockerfile PATH)");
                    };
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let (spec, notes) = EnvSpec::from_dockerfile(name, &text)?;
                    for note in notes {
                        eprintln!("{name}: Dockerfile {note}");
                    }
                    let tag = spec.image_tag();
                    specs.push((spec, tag));
                    Vec::new()
                }
                None => names,
            };
            for name in names {
                match conductor_envs::service(&name) {
                    Some(service) => {
                        let tag = service.image_tag();
                        specs.push((service.env, tag));
                    }
                    None => {
                        let spec = store.resolve(&name)?;
                        let tag = spec.image_tag();
                        specs.push((spec, tag));
                    }
                }
            }
            if specs.is_empty() {
                bail!("name an environment to build (see conductor env list) or give --file SPEC");
            }
            let engines = engines(import).await?;
            for (spec, tag) in specs {
                let built = build(&store, spec).await?;
                for engine in &engines {
                    ensure_image_as(engine, &built, &tag).await?;
                }
            }
            Ok(())
        }
        EnvCommand::Show { name } => {
            let service = conductor_envs::service(&name);
            let (spec, image) = match &service {
                Some(service) => (service.env.clone(), service.image_tag()),
                None => {
                    let spec = store.resolve(&name)?;
                    let image = spec.image_tag();
                    (spec, image)
                }
            };
            let built = store.built(&spec)?;
            let value = serde_json::json!({
                "name": spec.name,
                "hash": spec.content_hash(),
                "image": image,
                "service": service.as_ref().map(|s| serde_json::json!({
                    "name": s.name,
                    "runs": s.version,
                    "command": s.command,
                    "user": s.user,
                    "port": s.port,
                    "health": s.health,
                    "task_env": s.task_env,
                })),
                "spec": spec,
                "built": built.as_ref().map(|b| serde_json::json!({
                    "dir": b.dir,
                    "rootfs": b.rootfs(),
                    "manifest": b.manifest,
                })),
            });
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
        EnvCommand::Rm { name } => {
            let (dir_name, image) = match conductor_envs::service(&name) {
                Some(service) => (service.env.name.clone(), Some(service.image_tag())),
                None => (
                    name.clone(),
                    store.resolve(&name).ok().map(|s| s.image_tag()),
                ),
            };
            let removed = store.remove(&dir_name)?;
            let mut images = 0;
            if let Some(image) = image {
                for engine in engines(ImportTo::Auto).await? {
                    if engine.remove_image(&image).await? {
                        images += 1;
                    }
                }
            }
            if !removed && images == 0 {
                bail!("environment {name} has no build and no image to remove");
            }
            eprintln!("removed {name} ({} image(s))", images);
            Ok(())
        }
    }
}

/// Prints what a Dockerfile's translation ignored or does differently from Docker.
fn print_notes(name: &str, dockerfile: &str) {
    if let Ok(translation) = conductor_envs::dockerfile::translate(dockerfile) {
        for note in translation.notes {
            eprintln!("{name}: Dockerfile {note}");
        }
    }
}

fn list(store: &EnvStore, json: bool) -> anyhow::Result<()> {
    let all = store.list()?;
    if json {
        let rows: Vec<_> = all
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.spec.name,
                    "preset": s.preset,
                    "hash": s.spec.content_hash(),
                    "built": s.built.is_some(),
                    "size_bytes": s.built.as_ref().map(|b| b.manifest.size_bytes),
                    "description": s.spec.description,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<8} {:<12} {:<10} {:>8}  DESCRIPTION",
        "NAME", "KIND", "HASH", "STATUS", "SIZE"
    );
    for s in all {
        let size = s.built.as_ref().map_or_else(
            || "-".to_owned(),
            |b| format!("{}M", b.manifest.size_bytes / (1024 * 1024)),
        );
        println!(
            "{:<16} {:<8} {:<12} {:<10} {:>8}  {}",
            s.spec.name,
            if s.preset { "preset" } else { "custom" },
            s.spec.content_hash(),
            if s.built.is_some() {
                "built"
            } else {
                "not built"
            },
            size,
            s.spec.description
        );
    }
    for service in conductor_envs::services() {
        let built = store.built(&service.env)?;
        println!(
            "{:<16} {:<8} {:<12} {:<10} {:>8}  {} ({})",
            service.name,
            "service",
            service.env.content_hash(),
            if built.is_some() {
                "built"
            } else {
                "not built"
            },
            built.as_ref().map_or_else(
                || "-".to_owned(),
                |b| format!("{}M", b.manifest.size_bytes / (1024 * 1024))
            ),
            service.env.description,
            service.version
        );
    }
    Ok(())
}

/// Builds `spec` (cached) on a blocking thread, showing a progress bar on stderr.
pub async fn build(store: &EnvStore, spec: EnvSpec) -> anyhow::Result<BuiltEnv> {
    let builder = Builder::new(store.clone(), BuildConfig::default());
    let name = spec.name.clone();
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(name.clone());
    bar.enable_steady_tick(Duration::from_millis(120));
    let progress_bar = bar.clone();
    let built = tokio::task::spawn_blocking(move || {
        let mut title = String::new();
        builder.build(&spec, &mut |event| match event {
            BuildEvent::Cached { name, hash } => {
                progress_bar.println(format!("{name} ({hash}) is built already"));
            }
            BuildEvent::Step {
                index,
                total,
                title: step,
            } => {
                progress_bar.set_length(total as u64);
                progress_bar.set_position(index.saturating_sub(1) as u64);
                progress_bar.println(format!("[{index}/{total}] {step}"));
                title = step;
                progress_bar.set_message(title.clone());
            }
            BuildEvent::Output(line) => {
                let line: String = line.chars().take(100).collect();
                progress_bar.set_message(format!("{title}: {line}"));
            }
            BuildEvent::Built {
                name,
                hash,
                duration_ms,
            } => {
                progress_bar.set_position(progress_bar.length().unwrap_or(0));
                progress_bar.println(format!(
                    "built {name} ({hash}) in {:.1} s",
                    duration_ms as f64 / 1000.0
                ));
            }
        })
    })
    .await
    .context("the build thread failed")?;
    bar.finish_and_clear();
    let built = built?;
    eprintln!(
        "{}: {} ({} MiB, {} packages)",
        built.manifest.name,
        built.rootfs().display(),
        built.manifest.size_bytes / (1024 * 1024),
        built.manifest.packages.len()
    );
    Ok(built)
}

/// The engines to import into.
async fn engines(import: ImportTo) -> anyhow::Result<Vec<Engine>> {
    let kinds: &[EngineKind] = match import {
        ImportTo::None => &[],
        ImportTo::Docker => &[EngineKind::Docker],
        ImportTo::Podman => &[EngineKind::Podman],
        ImportTo::Auto => &[EngineKind::Docker, EngineKind::Podman],
    };
    let mut engines = Vec::new();
    for kind in kinds {
        match Engine::connect(*kind, &kind.default_socket()).await {
            Ok(engine) => engines.push(engine),
            Err(e) if import == ImportTo::Auto => {
                tracing::info!(error = %e, "not importing into {}", kind.name());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(engines)
}

/// Imports `built` into `engine` as `conductor-env/<name>:<hash>` unless it is there already;
/// returns the tag.
pub async fn ensure_image(engine: &Engine, built: &BuiltEnv) -> anyhow::Result<String> {
    ensure_image_as(engine, built, &built.manifest.image_tag()).await
}

/// Imports `built` into `engine` as `tag` unless it is there already; returns the tag.
pub async fn ensure_image_as(
    engine: &Engine,
    built: &BuiltEnv,
    tag: &str,
) -> anyhow::Result<String> {
    let tag = tag.to_owned();
    if engine.has_image(&tag).await? {
        return Ok(tag);
    }
    let started = std::time::Instant::now();
    engine.import_rootfs(&built.rootfs(), &tag).await?;
    eprintln!(
        "imported {tag} into {} in {:.1} s",
        engine.kind().name(),
        started.elapsed().as_secs_f64()
    );
    Ok(tag)
}

/// The service images `engine` can run (`ContainerConfig::services`): every local service whose
/// current spec is built, imported into the engine when it is not there yet. A service that is
/// not built is left out; starting it then fails naming `conductor env build <name>`.
// Used by the server's composition root (`environments`); `conductor exec` runs no services
// and does not pay for the lookups.
pub async fn service_images(
    engine: &Engine,
    store: &EnvStore,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut images = BTreeMap::new();
    for service in conductor_envs::services() {
        let ServiceSpec { name, env, .. } = &service;
        if let Some(built) = store.built(env)? {
            let tag = ensure_image_as(engine, &built, &service.image_tag()).await?;
            images.insert(name.clone(), tag);
        }
    }
    Ok(images)
}
