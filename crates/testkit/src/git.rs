//! [`HostGit`]: clones without a sandbox, for tests of what the clone does (the real sandbox,
//! `NamespaceGit`, is tested in the cli crate).

use std::process::Command;
use std::sync::Mutex;

use conductor_workspace::{GitSandbox, SandboxedGit, SandboxedOutput, SANDBOX_WORKSPACE};

/// Runs a clone's git commands on the host with [`SANDBOX_WORKSPACE`] replaced by the
/// workspace, a fresh `HOME` and nothing else of the caller's environment; records each call.
#[derive(Debug, Default)]
pub struct HostGit {
    /// Every call, in order.
    pub calls: Mutex<Vec<SandboxedGit>>,
}

impl GitSandbox for HostGit {
    fn run(&self, git: &SandboxedGit) -> Result<SandboxedOutput, String> {
        self.calls.lock().unwrap().push(git.clone());
        let workspace = git.workspace.to_str().unwrap();
        let map = |text: &str| match text.strip_prefix(SANDBOX_WORKSPACE) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{workspace}{rest}"),
            _ => text.to_owned(),
        };
        let home = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(&git.argv[0]);
        cmd.args(git.argv[1..].iter().map(|arg| map(arg)))
            .env_clear()
            .current_dir(&git.workspace);
        for (name, value) in &git.env {
            match name.as_str() {
                "HOME" => cmd.env(name, home.path()),
                _ => cmd.env(name, map(value)),
            };
        }
        let out = cmd.output().map_err(|e| e.to_string())?;
        Ok(SandboxedOutput {
            exit_code: out.status.code().unwrap_or(128),
            timed_out: false,
            stdout: out.stdout,
            stdout_truncated: false,
            stderr: out.stderr,
        })
    }
}
