//! A task's executor before its first command: the server's own environment's, one built after
//! the server started (found through the [`EnvironmentPort`]), or that of the environment the
//! task defined in its request, built first when no build of its content exists. Two tasks
//! needing the same build wait for one: the first starts it (in a task of its own, so it goes
//! on if that task is cancelled), the others join it, and each sees its progress as
//! `environment_build` events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use conductor_core::{Executor, StoreError};
use conductor_types::{FailureCode, InlineEnvironment, Task, TaskEventKind};
use tokio::sync::{broadcast, watch};

use super::Scheduler;
use crate::environments::EnvironmentPort;

/// Lines a build may send ahead of a slow task before the task skips some.
const PROGRESS_BUFFER: usize = 1024;
/// Build lines stored per task at most; past it one marker line (the build goes on).
const MAX_STORED_LINES: usize = 5000;
/// How often a task waiting for a build checks whether it was cancelled.
const CANCEL_CHECK: Duration = Duration::from_millis(500);

/// The outcome of a build, once it is over.
type Outcome = Option<Result<(), String>>;

/// A build in progress, shared by the tasks waiting for it.
#[derive(Debug)]
struct InFlight {
    lines: broadcast::Sender<String>,
    done: watch::Receiver<Outcome>,
}

/// The builds in progress, by build name.
#[derive(Debug, Default)]
pub(super) struct Builds {
    in_flight: Mutex<HashMap<String, InFlight>>,
}

/// Why a task cannot run: its failure code and reason.
type Refusal = (FailureCode, String);

impl Scheduler {
    /// The port to environments beyond the server's own, when the caller gave one.
    pub fn environment_port(&self) -> Option<&Arc<dyn EnvironmentPort>> {
        self.config.environment_port.as_ref()
    }

    /// The executor `task` runs on, its environment built first when it was defined in the
    /// request and is not built yet. `Ok(Ok(None))` when the task was cancelled or interrupted
    /// meanwhile.
    pub(super) async fn task_executor(
        &self,
        task: &Task,
    ) -> Result<Result<Option<Arc<dyn Executor>>, Refusal>, StoreError> {
        let spec = &task.spec;
        let port = self.environment_port();
        let Some(inline) = &spec.inline_environment else {
            if let Some(executor) = self.executors.get(&spec.environment) {
                return Ok(Ok(Some(Arc::clone(executor))));
            }
            let found = match port {
                Some(port) => port.find(&spec.environment).await,
                None => Ok(None),
            };
            return Ok(match found {
                Ok(Some(executor)) => Ok(Some(executor)),
                Ok(None) => Err((
                    FailureCode::EnvironmentMissing,
                    format!("environment {:?} no longer exists", spec.environment),
                )),
                Err(reason) => Err((
                    FailureCode::EnvironmentMissing,
                    format!("environment {:?}: {reason}", spec.environment),
                )),
            });
        };
        let Some(port) = port else {
            return Ok(Err((
                FailureCode::EnvironmentMissing,
                format!(
                    "environment {:?} was defined in the request, and this server has no environment builder",
                    inline.name
                ),
            )));
        };
        match self.build_for(task, port, inline).await? {
            Some(Ok(())) => {}
            Some(Err(error)) => {
                let reason = format!(
                    "could not build environment {:?} ({}): {error}",
                    inline.name, inline.build
                );
                return Ok(Err((FailureCode::EnvironmentBuildFailed, reason)));
            }
            None => return Ok(Ok(None)),
        }
        Ok(port
            .executor(inline)
            .await
            .map(Some)
            .map_err(|reason| (FailureCode::EnvironmentBuildFailed, reason)))
    }

    /// Builds `inline` (or joins its build in progress), storing its progress as the task's
    /// events; `None` when the task was stopped meanwhile.
    async fn build_for(
        &self,
        task: &Task,
        port: &Arc<dyn EnvironmentPort>,
        inline: &InlineEnvironment,
    ) -> Result<Option<Result<(), String>>, StoreError> {
        let (mut lines, mut done, joined) = self.join_build(port, inline);
        if joined {
            self.emit_build(
                task,
                format!(
                    "environment {}: waiting for the build of {} another task started\n",
                    inline.name, inline.build
                ),
            )
            .await?;
        }
        let mut stored = 0usize;
        loop {
            let outcome = done.borrow_and_update().clone();
            if let Some(outcome) = outcome {
                // Every line was sent before the outcome: take what is left.
                let mut rest = Vec::new();
                while let Ok(line) = lines.try_recv() {
                    rest.push(line);
                }
                self.store_lines(task, rest, &mut stored).await?;
                return Ok(Some(outcome));
            }
            tokio::select! {
                line = lines.recv() => match line {
                    Ok(line) => {
                        let mut batch = vec![line];
                        while batch.len() < 64 {
                            match lines.try_recv() {
                                Ok(line) => batch.push(line),
                                Err(_) => break,
                            }
                        }
                        self.store_lines(task, batch, &mut stored).await?;
                    }
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        self.store_lines(task, vec![format!("… {skipped} lines of the build skipped")], &mut stored).await?;
                    }
                    // The build is over; its outcome follows.
                    Err(broadcast::error::RecvError::Closed) => {
                        if done.changed().await.is_err() && done.borrow().is_none() {
                            return Ok(Some(Err("the build stopped without an outcome".to_owned())));
                        }
                    }
                },
                changed = done.changed() => {
                    if changed.is_err() && done.borrow().is_none() {
                        return Ok(Some(Err("the build stopped without an outcome".to_owned())));
                    }
                }
                () = tokio::time::sleep(CANCEL_CHECK) => {}
            }
            if self.stopped(task.id) {
                return Ok(None);
            }
        }
    }

    /// Subscribes to the build of `inline`, starting it when none is in progress; whether it
    /// joined one another task started.
    fn join_build(
        &self,
        port: &Arc<dyn EnvironmentPort>,
        inline: &InlineEnvironment,
    ) -> (broadcast::Receiver<String>, watch::Receiver<Outcome>, bool) {
        let builds = &self.builds;
        let mut in_flight = builds
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(build) = in_flight.get(&inline.build) {
            return (build.lines.subscribe(), build.done.clone(), true);
        }
        let (lines, receiver) = broadcast::channel(PROGRESS_BUFFER);
        let (finished, done) = watch::channel(None);
        in_flight.insert(
            inline.build.clone(),
            InFlight {
                lines: lines.clone(),
                done: done.clone(),
            },
        );
        drop(in_flight);
        let port = Arc::clone(port);
        let inline = inline.clone();
        let sender = lines.clone();
        let builds = Arc::clone(&self.builds);
        tokio::spawn(async move {
            let progress = Box::new(move |line: String| {
                let _ = sender.send(line);
            });
            let outcome = port.build(&inline, progress).await;
            if let Err(error) = &outcome {
                tracing::warn!(environment = %inline.build, %error, "building an environment failed");
            }
            // The outcome first: a task joining now still gets it; one coming after the
            // removal starts a build that finds the result cached (or tries again).
            let _ = finished.send(Some(outcome));
            builds
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&inline.build);
            drop(lines);
        });
        (receiver, done, false)
    }

    /// Stores build lines as one `environment_build` event, up to the per-task limit.
    async fn store_lines(
        &self,
        task: &Task,
        lines: Vec<String>,
        stored: &mut usize,
    ) -> Result<(), StoreError> {
        if lines.is_empty() || *stored > MAX_STORED_LINES {
            return Ok(());
        }
        let room = MAX_STORED_LINES - *stored;
        let mut text = String::new();
        for line in lines.iter().take(room) {
            text.push_str(line);
            text.push('\n');
        }
        *stored += lines.len().min(room);
        if lines.len() > room {
            *stored = MAX_STORED_LINES + 1;
            text.push_str("… the rest of the build's output is not stored\n");
        }
        self.emit_build(task, text).await
    }

    async fn emit_build(&self, task: &Task, text: String) -> Result<(), StoreError> {
        self.emit(task.id, TaskEventKind::EnvironmentBuild { text })
            .await
    }
}
