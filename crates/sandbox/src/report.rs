//! The helper → executor report protocol: one JSON object per line on the channel socket.
//!
//! The helper writes at most one `Failed` (the stage that broke), an `ExecFailed` when `execve`
//! failed, and finally `Exited` or `Signaled` for the command. The executor folds the lines it
//! read into an [`Outcome`]. A helper that dies without a final report is an [`Outcome::Lost`].

use serde::{Deserialize, Serialize};

/// One message from the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Report {
    /// Building the sandbox failed at `stage` (`mounting /proc`, `writing uid_map`, …).
    Failed {
        /// What was being done, phrased to follow "while".
        stage: String,
        /// The error.
        error: String,
    },
    /// `execve` of the command failed; the command process exits 127 (not found) or 126.
    ExecFailed {
        /// `argv[0]` as given.
        program: String,
        /// The error (`No such file or directory`, …).
        error: String,
    },
    /// The command exited with a status code.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// The command was killed by a signal.
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// init listens on these loopback ports; the listeners came with this line
    /// (`SCM_RIGHTS`, see [`crate::bridge`]).
    Listening {
        /// The ports, in the order of the descriptors.
        ports: Vec<u16>,
    },
}

impl Report {
    /// The report as one JSON line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Serialising this enum of strings and integers cannot fail; fall back to a fixed line.
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"type":"failed","stage":"reporting","error":"unencodable report"}"#.to_vec()
        });
        line.push(b'\n');
        line
    }
}

/// What the reports of one run add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command ran and exited; `exec_error` is set when it never started because `execve`
    /// failed (the code is then 126 or 127).
    Exited {
        /// The exit code.
        code: i32,
        /// Why `execve` failed, if it did.
        exec_error: Option<String>,
    },
    /// The command was killed by a signal.
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// The sandbox could not be built.
    SetupFailed {
        /// The stage.
        stage: String,
        /// The error.
        error: String,
    },
    /// The helper went away without a final report (killed, or crashed).
    Lost,
}

/// Folds the channel's bytes into an outcome. Unparseable lines are ignored: the helper is the
/// only writer, and a torn last line means it died mid-write, which is `Lost` anyway.
pub fn outcome(bytes: &[u8]) -> Outcome {
    let mut exec_error = None;
    let mut result = Outcome::Lost;
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Report>(line) {
            Ok(Report::Failed { stage, error }) => return Outcome::SetupFailed { stage, error },
            Ok(Report::ExecFailed { program, error }) => {
                exec_error = Some(format!("cannot execute {program}: {error}"));
            }
            Ok(Report::Exited { code }) => {
                result = Outcome::Exited {
                    code,
                    exec_error: None,
                }
            }
            Ok(Report::Signaled { signal }) => result = Outcome::Signaled { signal },
            Ok(Report::Listening { .. }) | Err(_) => {}
        }
    }
    match result {
        Outcome::Exited { code, .. } => Outcome::Exited { code, exec_error },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(reports: &[Report]) -> Vec<u8> {
        reports.iter().flat_map(Report::to_line).collect()
    }

    #[test]
    fn reports_are_single_json_lines() {
        assert_eq!(
            String::from_utf8(Report::Exited { code: 3 }.to_line()).unwrap(),
            "{\"type\":\"exited\",\"code\":3}\n"
        );
        assert_eq!(
            String::from_utf8(
                Report::Failed {
                    stage: "mounting /proc".into(),
                    error: "EPERM: Operation not permitted".into()
                }
                .to_line()
            )
            .unwrap(),
            "{\"type\":\"failed\",\"stage\":\"mounting /proc\",\"error\":\"EPERM: Operation not permitted\"}\n"
        );
    }

    #[test]
    fn outcome_folds_the_reports() {
        assert_eq!(
            outcome(&wire(&[Report::Exited { code: 3 }])),
            Outcome::Exited {
                code: 3,
                exec_error: None
            }
        );
        assert_eq!(
            outcome(&wire(&[Report::Signaled { signal: 9 }])),
            Outcome::Signaled { signal: 9 }
        );
        assert_eq!(
            outcome(&wire(&[
                Report::ExecFailed {
                    program: "nope".into(),
                    error: "No such file or directory".into()
                },
                Report::Exited { code: 127 }
            ])),
            Outcome::Exited {
                code: 127,
                exec_error: Some("cannot execute nope: No such file or directory".into())
            }
        );
        assert_eq!(
            outcome(&wire(&[
                Report::Failed {
                    stage: "writing uid_map".into(),
                    error: "EPERM".into()
                },
                Report::Exited { code: 1 }
            ])),
            Outcome::SetupFailed {
                stage: "writing uid_map".into(),
                error: "EPERM".into()
            }
        );
    }

    #[test]
    fn nothing_or_a_torn_line_is_lost() {
        assert_eq!(outcome(b""), Outcome::Lost);
        assert_eq!(outcome(b"{\"type\":\"exi"), Outcome::Lost);
    }
}
