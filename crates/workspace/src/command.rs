//! Running the external tools this crate drives (`git`, `mkfs.ext4`, `mount`, `resize2fs`):
//! an empty environment plus what the caller sets, stdin `/dev/null`, the child in a process
//! group of its own so a timeout kills everything it started (git's transport helpers
//! included), and output captured up to a bound.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// `PATH` for the tools: the usual system directories, nothing from the caller's environment.
pub(crate) const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A finished command.
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// Whether stdout was cut at the limit.
    pub stdout_truncated: bool,
    pub stderr: Vec<u8>,
}

impl Finished {
    /// stderr as trimmed text, for error messages.
    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }
}

/// Why a command could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("{program} did not finish within {after:?} and was killed")]
    Timeout { program: String, after: Duration },
    #[error("waiting for {program}: {source}")]
    Wait { program: String, source: io::Error },
}

/// How much stderr is kept: enough for any tool's error message.
const STDERR_LIMIT: u64 = 64 * 1024;

/// A command with a cleared environment (`PATH`, `LC_ALL=C` and `envs` only), its stdin
/// `/dev/null`, in its own process group.
pub(crate) fn command(program: impl AsRef<OsStr>, envs: &[(&str, OsString)]) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", SYSTEM_PATH)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in envs {
        cmd.env(name, value);
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd
}

/// Runs `cmd` to its end or until `timeout`, when its whole process group is killed. Keeps at
/// most `stdout_limit` bytes of stdout (reading, and dropping, the rest so the child never
/// blocks on a full pipe).
pub(crate) fn run(
    mut cmd: Command,
    timeout: Duration,
    stdout_limit: u64,
) -> Result<Finished, RunError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        program: program.clone(),
        source,
    })?;
    let stdout = child.stdout.take().map(|s| drain(s, stdout_limit));
    let stderr = child.stderr.take().map(|s| drain(s, STDERR_LIMIT));
    let status = wait_until(&mut child, timeout, &program);
    // The pipes close when every process of the group has exited (or been killed).
    let (stdout, stdout_truncated) = stdout.map(join).unwrap_or_default();
    let (stderr, _) = stderr.map(join).unwrap_or_default();
    Ok(Finished {
        status: status?,
        stdout,
        stdout_truncated,
        stderr,
    })
}

fn wait_until(child: &mut Child, timeout: Duration, program: &str) -> Result<ExitStatus, RunError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                kill_group(child);
                let _ = child.wait();
                return Err(RunError::Timeout {
                    program: program.to_owned(),
                    after: timeout,
                });
            }
            Ok(None) => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(source) => {
                kill_group(child);
                return Err(RunError::Wait {
                    program: program.to_owned(),
                    source,
                });
            }
        }
    }
}

fn kill_group(child: &Child) {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        // The child leads its own group (process_group(0)), so this reaches its descendants.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

type Drained = thread::JoinHandle<(Vec<u8>, bool)>;

fn drain<R: Read + Send + 'static>(mut reader: R, limit: u64) -> Drained {
    thread::spawn(move || {
        let mut kept = Vec::new();
        let _ = (&mut reader).take(limit).read_to_end(&mut kept);
        let rest = io::copy(&mut reader, &mut io::sink()).unwrap_or(0);
        (kept, rest > 0)
    })
}

fn join(handle: Drained) -> (Vec<u8>, bool) {
    handle.join().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn environment_is_cleared_and_output_bounded() {
        // Cargo runs tests with CARGO_PKG_NAME set: the child must not see it.
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
        let mut cmd = command("sh", &[("ONLY", "this".into())]);
        cmd.args(["-c", "env | sort; head -c 100000 /dev/zero"]);
        let done = run(cmd, Duration::from_secs(10), 4096).unwrap();
        assert!(done.status.success());
        assert!(done.stdout_truncated);
        assert_eq!(done.stdout.len(), 4096);
        let text = String::from_utf8_lossy(&done.stdout);
        let vars: Vec<&str> = text
            .lines()
            .take_while(|l| !l.starts_with('\0'))
            .filter(|l| l.contains('='))
            .map(|l| l.split('=').next().unwrap_or(""))
            .collect();
        assert!(!text.contains("CARGO_PKG_NAME"));
        assert!(vars.contains(&"ONLY") && vars.contains(&"LC_ALL") && vars.contains(&"PATH"));
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let mut cmd = command("sh", &[]);
        // A grandchild that would outlive a kill of the shell alone.
        cmd.arg("-c")
            .arg(format!("(sleep 1; touch {}) & sleep 30", marker.display()));
        let start = Instant::now();
        let err = run(cmd, Duration::from_millis(200), 1024).unwrap_err();
        assert!(matches!(err, RunError::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
        thread::sleep(Duration::from_millis(1500));
        assert!(
            !marker.exists(),
            "a process of the group survived the timeout"
        );
    }
}
