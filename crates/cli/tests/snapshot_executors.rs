//! Issue #5: a snapshot taken of a workspace one executor wrote restores and runs under another
//! — namespace → docker and docker → namespace, and the same with podman.
//!
//! Each direction: the writer runs a script in the `minimal` environment (the namespace executor
//! in its rootfs, the container executors in its image) that makes a regular file, a read-only
//! file, an executable script, a symlink, an empty directory and a nested one; the workspace is
//! snapshotted with `conductor_workspace::SnapshotStore` and restored into a new directory; the
//! reader runs the script there, `stat`s every entry from inside its sandbox, and writes into the
//! tree (the restored tree is owned by whoever restored it, and each executor hands the workspace
//! to its sandbox user before the run). What the reader sees must be what the writer saw.
//!
//! Skipped, with the reason printed, only when the namespace executor cannot run here, an engine
//! does not answer, or the `minimal` environment is not built or imported
//! (`conductor env build minimal`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::sync::Arc;

use conductor_core::{Executor, ExecutorError};
use conductor_envs::EnvStore;
use conductor_executors::container::{ContainerConfig, ContainerExecutor, Engine, EngineKind};
use conductor_executors::namespace::{NamespaceConfig, NamespaceExecutor};
use conductor_types::{ExecutionRequest, ExecutionResult};
use conductor_workspace::{SnapshotOptions, SnapshotStore, WorkspaceId};

mod support;

/// Makes the tree, then describes it.
const WRITE: &str = r#"set -e
mkdir -p src/pkg/deep empty
printf 'payload\n' > src/pkg/deep/data.txt
printf 'frozen\n' > src/readonly.txt
chmod 444 src/readonly.txt
printf '#!/bin/sh\necho "script ran by $(id -u): $(cat src/pkg/deep/data.txt)"\n' > run.sh
chmod 755 run.sh
chmod 700 src/pkg
ln -s src/pkg/deep/data.txt link
"#;

/// Describes the tree as seen from inside: type, mode, size, link target, contents.
const DESCRIBE: &str = r#"set -e
for path in empty link run.sh src src/pkg src/pkg/deep src/pkg/deep/data.txt src/readonly.txt; do
    stat -c '%n %F %a' "$path"
done
readlink link
cat link
"#;

/// Runs the restored script and proves the tree is usable (writable) by this sandbox's user.
const RUN: &str = r#"set -e
./run.sh | sed 's/by [0-9]*:/by USER:/'
printf 'more\n' >> src/pkg/deep/data.txt
touch empty/new
rm empty/new
"#;

/// The `minimal` environment's rootfs and image tag, when built.
fn minimal_env() -> Result<(PathBuf, String), String> {
    let store = EnvStore::new(conductor_envs::envs_dir(&support::conductor_home()));
    let spec = store.resolve("minimal").map_err(|e| e.to_string())?;
    let built = store
        .built(&spec)
        .map_err(|e| e.to_string())?
        .ok_or("the minimal environment is not built (conductor env build minimal)")?;
    Ok((built.rootfs(), built.manifest.image_tag()))
}

/// An executor and how to point a request at its environment.
struct Runner {
    name: &'static str,
    executor: Arc<dyn Executor>,
    rootfs: Option<PathBuf>,
}

impl Runner {
    async fn sh(&self, script: &str, workspace: &Path) -> ExecutionResult {
        let mut request = ExecutionRequest::new(
            vec!["/bin/sh".into(), "-c".into(), script.into()],
            workspace.to_owned(),
        );
        request.rootfs.clone_from(&self.rootfs);
        let (events, mut receiver) = tokio::sync::mpsc::channel(64);
        let drain = tokio::spawn(async move { while receiver.recv().await.is_some() {} });
        let result = self.executor.execute(request, events).await;
        drain.await.unwrap();
        let result = result.unwrap_or_else(|e| panic!("{}: {e}", self.name));
        assert_eq!(
            result.exit_code, 0,
            "{} failed: stdout {:?} stderr {:?}",
            self.name, result.stdout, result.stderr
        );
        result
    }
}

fn namespace(rootfs: &Path) -> Result<Runner, String> {
    let config = NamespaceConfig {
        helper_path: env!("CARGO_BIN_EXE_conductor").into(),
        ..NamespaceConfig::default()
    };
    match NamespaceExecutor::new(config) {
        Ok(executor) => Ok(Runner {
            name: "namespace",
            executor: Arc::new(executor),
            rootfs: Some(rootfs.to_owned()),
        }),
        Err(ExecutorError::Unavailable { reason, .. }) => Err(reason),
        Err(e) => panic!("creating the namespace executor: {e}"),
    }
}

async fn container(kind: EngineKind, image: &str) -> Result<Runner, String> {
    let engine = Engine::connect(kind, &kind.default_socket())
        .await
        .map_err(|e| format!("{} does not answer: {e}", kind.name()))?;
    if !engine.has_image(image).await.map_err(|e| e.to_string())? {
        return Err(format!(
            "{image} is not imported into {} (conductor env build minimal)",
            kind.name()
        ));
    }
    let executor =
        ContainerExecutor::with_engine(ContainerConfig::new(kind, image.to_owned()), engine)
            .map_err(|e| e.to_string())?;
    executor.warmup().await.map_err(|e| e.to_string())?;
    Ok(Runner {
        name: kind.name(),
        executor: Arc::new(executor),
        rootfs: None,
    })
}

/// Writer makes the tree; snapshot; restore into a new directory; reader sees the same tree,
/// runs the script and writes into it.
async fn round_trip(writer: &Runner, reader: &Runner) {
    let dir = tempfile::tempdir().unwrap();
    let (written, restored) = (dir.path().join("written"), dir.path().join("restored"));
    std::fs::create_dir(&written).unwrap();
    let seen_by_writer = writer
        .sh(&format!("{WRITE}{DESCRIBE}"), &written)
        .await
        .stdout;

    let store = SnapshotStore::open(dir.path().join("snapshots")).unwrap();
    let workspace = WorkspaceId::new("written").unwrap();
    let snapshot = store
        .create_snapshot(
            &workspace,
            &written,
            "by-writer",
            &SnapshotOptions::default(),
        )
        .unwrap();
    let stats = store.restore(snapshot.manifest.id, &restored).unwrap();
    assert_eq!((stats.files, stats.symlinks), (3, 1), "{stats:?}");

    let seen_by_reader = reader.sh(DESCRIBE, &restored).await.stdout;
    assert_eq!(
        seen_by_reader, seen_by_writer,
        "{} → {}: the restored tree differs",
        writer.name, reader.name
    );
    assert_eq!(
        seen_by_reader,
        "empty directory 755\n\
         link symbolic link 777\n\
         run.sh regular file 755\n\
         src directory 755\n\
         src/pkg directory 700\n\
         src/pkg/deep directory 755\n\
         src/pkg/deep/data.txt regular file 644\n\
         src/readonly.txt regular file 444\n\
         src/pkg/deep/data.txt\n\
         payload\n",
        "{} → {}",
        writer.name,
        reader.name
    );
    let ran = reader.sh(RUN, &restored).await.stdout;
    assert_eq!(
        ran, "script ran by USER: payload\n",
        "{} → {}",
        writer.name, reader.name
    );
    assert_eq!(
        std::fs::read_to_string(restored.join("src/pkg/deep/data.txt")).unwrap(),
        "payload\nmore\n"
    );
    eprintln!("{} → {}: restored and ran", writer.name, reader.name);
}

async fn across(kind: EngineKind) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the executors hand workspaces to other uids, which needs root");
        return;
    }
    let (rootfs, image) = match minimal_env() {
        Ok(env) => env,
        Err(reason) => return eprintln!("skipped: {reason}"),
    };
    let namespace = match namespace(&rootfs) {
        Ok(runner) => runner,
        Err(reason) => {
            return eprintln!("skipped: the namespace executor is unavailable: {reason}")
        }
    };
    let container = match container(kind, &image).await {
        Ok(runner) => runner,
        Err(reason) => return eprintln!("skipped: {reason}"),
    };
    round_trip(&namespace, &container).await;
    round_trip(&container, &namespace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_moves_between_namespace_and_docker() {
    across(EngineKind::Docker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_moves_between_namespace_and_podman() {
    across(EngineKind::Podman).await;
}
