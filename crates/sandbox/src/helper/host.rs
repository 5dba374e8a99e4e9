//! The helper in host mode ([`HelperMode::Host`](crate::spec::HelperMode::Host)), for the host
//! executor: no namespaces and no fork. The helper has joined its cgroup from the prelude (a warm
//! one long before the execution); on the [`HostSpec`] it starts a session of its own, sets the
//! rlimits, changes to the workspace and execs the command with exactly the spec's environment,
//! so its pid, its exit status and its rusage are the command's.
//!
//! The executor's socket is close-on-exec and every other inherited descriptor was closed at
//! start-up (see `take_channel`), so the command gets only `/dev/null` and the two output pipes.
//! A command that cannot be executed is reported as `ExecFailed` then `Exited` with the shell's
//! codes (127 not found, 126 permission denied), nothing written to its stderr: the executor
//! writes the message, as it does when its own `spawn` fails. Any other error is a set-up error.

use std::fs::File;

use nix::errno::Errno;

use crate::command::{reset_signals, set_rlimit, Executable};
use crate::mounts::StageError;
use crate::report::Report;
use crate::spec::HostSpec;

use super::report;

/// Exit code for a program that does not exist.
const EXIT_NOT_FOUND: i32 = 127;
/// Exit code for a program that exists but cannot be executed.
const EXIT_CANNOT_EXECUTE: i32 = 126;

/// Waits for the spec and becomes the command. Returns the exit code when the program could not
/// be executed (after reporting it), an error when anything before that failed.
pub(super) fn run(channel: &File) -> Result<i32, StageError> {
    let spec =
        HostSpec::read_from(channel).map_err(|e| StageError::new("reading the host spec", e))?;
    let executable = Executable::new(&spec.argv, &spec.env)?;
    // No controlling terminal, and a process group the executor can kill whole.
    nix::unistd::setsid().map_err(|e| StageError::new("starting a new session", e))?;
    for rlimit in &spec.rlimits {
        set_rlimit(rlimit)
            .map_err(|e| StageError::new(format!("setting rlimit {:?}", rlimit.resource), e))?;
    }
    nix::unistd::chdir(&spec.cwd).map_err(|e| {
        StageError::new(
            format!("changing to the working directory {}", spec.cwd.display()),
            e,
        )
    })?;
    reset_signals();
    let errno = executable.exec();
    let code = match errno {
        Errno::ENOENT => EXIT_NOT_FOUND,
        Errno::EACCES | Errno::EPERM => EXIT_CANNOT_EXECUTE,
        other => {
            return Err(StageError::new(
                format!("starting the command {}", executable.program),
                other,
            ))
        }
    };
    report(
        channel,
        &Report::ExecFailed {
            program: executable.program.clone(),
            error: errno.desc().to_owned(),
        },
    );
    report(channel, &Report::Exited { code });
    Ok(code)
}
