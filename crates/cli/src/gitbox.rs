//! The sandbox a server's git clones run in: one namespace executor of its own (no warm
//! helpers), the host's system directories read-only (its `git`), the task's workspace
//! writable at `/workspace`, an allowed local repository bound read-only, as the sandbox's
//! mapped root (a host uid that owns nothing), with network `full` whatever the task's own
//! policy — a namespace of its own, never the host's — and limits of its own.

use std::path::PathBuf;
use std::sync::Arc;

use conductor_core::Executor;
use conductor_executors::namespace::{NamespaceConfig, NamespaceExecutor};
use conductor_types::{
    Bytes, ExecEvent, ExecutionRequest, NetworkPolicy, OutputStream, ResourceLimits,
};
use conductor_workspace::{GitSandbox, SandboxedGit, SandboxedOutput};
use tokio::sync::mpsc;

/// Memory a clone may use.
const MEMORY: Bytes = Bytes::mib(4096);
/// Processes and threads a clone may have alive at once.
const PIDS: u32 = 512;
/// Bytes of stderr kept (git's error messages).
const STDERR_LIMIT: usize = 64 * 1024;

/// Runs each git command of a clone in a namespace sandbox.
#[derive(Debug)]
pub struct NamespaceGit {
    executor: Arc<dyn Executor>,
    runtime: tokio::runtime::Handle,
}

impl NamespaceGit {
    /// A sandbox for clones whose executions go under `cgroup_parent` and spool to
    /// `spool_dir`; `Err` (the reason) when the namespace executor cannot run here.
    pub async fn new(cgroup_parent: String, spool_dir: PathBuf) -> Result<Self, String> {
        let config = NamespaceConfig {
            cgroup_parent,
            spool_dir,
            warm_helpers: 0,
            helper_path: crate::helper::helper_path(),
            ..NamespaceConfig::default()
        };
        let executor: Arc<dyn Executor> =
            Arc::new(NamespaceExecutor::new(config).map_err(|e| e.to_string())?);
        executor.health_check().await.map_err(|e| e.to_string())?;
        Ok(Self {
            executor,
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

/// The execution of one git command.
fn request(git: &SandboxedGit) -> ExecutionRequest {
    let mut request = ExecutionRequest::new(git.argv.clone(), git.workspace.clone());
    request.env = git.env.clone();
    request.read_only_paths = git.read_only.clone();
    request.network = NetworkPolicy::Full;
    request.timeout = Some(git.timeout);
    request.hostname = Some("conductor-git".to_owned());
    request.limits = ResourceLimits {
        memory: Some(MEMORY),
        pids: Some(PIDS),
        ..ResourceLimits::default()
    };
    request
}

impl GitSandbox for NamespaceGit {
    fn run(&self, git: &SandboxedGit) -> Result<SandboxedOutput, String> {
        let request = request(git);
        let executor = Arc::clone(&self.executor);
        let stdout_limit = usize::try_from(git.stdout_limit).unwrap_or(usize::MAX);
        self.runtime.block_on(async move {
            let (events, mut receiver) = mpsc::channel(64);
            let collect = async move {
                let mut out = SandboxedOutput::default();
                while let Some(event) = receiver.recv().await {
                    let ExecEvent::Output { stream, data, .. } = event else {
                        continue;
                    };
                    let (buffer, limit) = match stream {
                        OutputStream::Stdout => (&mut out.stdout, stdout_limit),
                        OutputStream::Stderr => (&mut out.stderr, STDERR_LIMIT),
                    };
                    let room = limit.saturating_sub(buffer.len());
                    if data.len() > room && stream == OutputStream::Stdout {
                        out.stdout_truncated = true;
                    }
                    buffer.extend_from_slice(&data[..data.len().min(room)]);
                }
                out
            };
            let (result, mut out) = tokio::join!(executor.execute(request, events), collect);
            let result = result.map_err(|e| e.to_string())?;
            out.exit_code = result.exit_code;
            out.timed_out = result.timed_out;
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_clone_runs_with_network_full_limits_and_the_repository_read_only() {
        let git = SandboxedGit {
            argv: vec!["git".into(), "clone".into()],
            env: BTreeMap::from([("HOME".to_owned(), "/tmp".to_owned())]),
            workspace: PathBuf::from("/w"),
            read_only: vec![PathBuf::from("/srv/repos/a")],
            timeout: Duration::from_secs(60),
            stdout_limit: 1024,
        };
        let request = request(&git);
        assert_eq!(
            (
                request.argv,
                request.env,
                request.workspace,
                request.read_only_paths,
                request.network,
                request.timeout,
                request.limits.memory,
                request.limits.pids,
                request.rootfs
            ),
            (
                git.argv,
                git.env,
                git.workspace,
                git.read_only,
                NetworkPolicy::Full,
                Some(Duration::from_secs(60)),
                Some(MEMORY),
                Some(PIDS),
                None
            )
        );
    }
}
