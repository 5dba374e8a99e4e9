//! One task on one agent: workspace, secrets, each command on the executor in order (the next
//! step decided by `core::next_step`), output stored as redacted, bounded events, the outcome
//! recorded through the state machine, retries, and the agent freed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use conductor_core::{
    can_retry, command_argv, next_step, LineAssembler, OutputBudget, Redactor, Step, StoreError,
    Transition, CWD_FILE,
};
use conductor_types::{
    AgentState, CommandResult, ExecEvent, ExecutionRequest, ExecutionStats, FailureCode,
    OutputStream, Task, TaskEventKind, TaskId, TaskStatus, Timestamp,
};
use conductor_workspace::{clone_at, diff_against, Checkout, GitOptions, QuotaFs};
use tokio::time::Instant;

use super::Scheduler;

/// How a task's status reason starts when it filled its disk quota (its `failure_code` is
/// [`FailureCode::DiskQuotaExceeded`]).
pub const DISK_QUOTA_EXCEEDED: &str = "disk_quota_exceeded";

/// Output events buffered between an executor and the store.
const OUTPUT_EVENT_BUFFER: usize = 64;
/// Longest line kept whole for redaction.
const MAX_LINE: usize = 16 * 1024;

impl Scheduler {
    pub(super) async fn run_task(self: Arc<Self>, task: Task) {
        let id = task.id;
        let agent = task.state.agent_id.clone().unwrap_or_default();
        self.record_agent(&agent, AgentState::Busy, Some(id));
        if let Err(error) = self.drive(&task).await {
            tracing::error!(task = %id, %error, "running a task failed");
            let interrupted = self.lock().running.get(&id).is_some_and(|r| r.interrupted);
            if !interrupted {
                let reason = format!("the orchestrator failed while running it: {error}");
                let finish = Transition::Finish {
                    status: TaskStatus::Failed,
                    exit_code: None,
                    reason: Some(reason),
                    code: Some(FailureCode::OrchestratorError),
                    at: Timestamp::now(),
                };
                let _ = self.store.transition(id, finish).await;
                self.events.bump();
            }
        }
        if let Some(agent) = self.release(id) {
            self.record_agent(&agent, AgentState::Idle, None);
        }
        // A fresh workspace is the task's alone (named after it): the agent need not wait for
        // its removal, which can take milliseconds on a filesystem that discards freed blocks.
        if let Some(name) = task.spec.workspace.clone() {
            // Measured off the agent's time: a named workspace's size is what the task left.
            let dir = self.workspace_dir(&task);
            let scheduler = Arc::clone(&self);
            tokio::spawn(async move {
                let workspace = match scheduler.store.find_workspace(&name).await {
                    Ok(Some(workspace)) => workspace,
                    Ok(None) => return,
                    Err(error) => {
                        tracing::warn!(workspace = %name, %error, "could not read the workspace");
                        return;
                    }
                };
                // `delete`: removed now that its task is over (unless another one uses it).
                if workspace.cleanup == "delete" {
                    if let Err(error) = scheduler.sweep_workspaces().await {
                        tracing::error!(%error, "sweeping workspaces failed");
                    }
                    return;
                }
                match tokio::task::spawn_blocking(move || conductor_workspace::tree_size(&dir))
                    .await
                {
                    Ok(Ok(bytes)) => {
                        let recorded = scheduler
                            .store
                            .set_workspace_size(&workspace.id, bytes)
                            .await;
                        if let Err(error) = recorded {
                            tracing::warn!(workspace = %name, %error, "could not record the workspace's size");
                        }
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(workspace = %name, %error, "could not measure the workspace")
                    }
                    Err(error) => {
                        tracing::warn!(workspace = %name, %error, "could not measure the workspace")
                    }
                }
            });
        } else {
            let dir = self.workspace_dir(&task);
            let image = self.quota_image(&task);
            tokio::task::spawn_blocking(move || {
                // A disk quota is unmounted and its image removed before the directory goes.
                if image.exists() {
                    let destroyed = conductor_workspace::QuotaFs::open(&image, &dir)
                        .and_then(conductor_workspace::QuotaFs::destroy);
                    if let Err(error) = destroyed {
                        tracing::warn!(image = %image.display(), %error, "could not remove a disk-quota image");
                    }
                }
                // A task-made tree: removed at any depth (std's remove_dir_all recurses).
                if let Err(error) = conductor_workspace::remove_tree(&dir) {
                    tracing::warn!(path = %dir.display(), %error, "could not remove a workspace");
                }
            });
        }
    }

    /// A named workspace is shared by the tasks that name it (`named/<name>`); a fresh one lives
    /// under the workspace root of the agent running the task (`agents/<agent>/<task id>`).
    fn workspace_dir(&self, task: &Task) -> PathBuf {
        match &task.spec.workspace {
            Some(name) => self.named_workspace_dir(name),
            None => self
                .agent_root(task.state.agent_id.as_deref().unwrap_or("unassigned"))
                .join(task.id.to_string()),
        }
    }

    /// Where the disk-quota image of the task's fresh workspace is.
    fn quota_image(&self, task: &Task) -> PathBuf {
        super::quota_image(
            &self.config.workspace_root,
            task.state.agent_id.as_deref().unwrap_or("unassigned"),
            task.id,
        )
    }

    /// Mounts a filesystem of `disk` bytes on the task's fresh (empty) workspace.
    async fn mount_quota(&self, task: &Task, disk: u64) -> Result<QuotaFs, String> {
        let image = self.quota_image(task);
        let mountpoint = self.workspace_dir(task);
        tokio::task::spawn_blocking(move || {
            if let Some(parent) = image.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            QuotaFs::create(&image, &mountpoint, disk).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Records what the task changed against its checkout (before its workspace goes); a
    /// failure is logged, and the diff endpoint then says none was recorded.
    async fn record_diff(
        &self,
        id: TaskId,
        workspace: &std::path::Path,
        repository: &str,
        checkout: &Checkout,
    ) {
        let path = crate::gitdiff::diff_path(&self.config.workspace_root, id);
        let (workspace, repository, checkout) = (
            workspace.to_owned(),
            repository.to_owned(),
            checkout.clone(),
        );
        let recorded = tokio::task::spawn_blocking(move || {
            // The shell's working-directory note is the orchestrator's, not the task's change.
            let _ = std::fs::remove_file(workspace.join(CWD_FILE));
            let diff = diff_against(&workspace, &checkout.commit, &GitOptions::default())
                .map_err(|e| e.to_string())?;
            let view = crate::gitdiff::TaskDiffView::new(&repository, &checkout, diff);
            crate::gitdiff::write_diff(&path, &view).map_err(|e| e.to_string())
        })
        .await;
        match recorded {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(task = %id, %error, "could not record the git diff"),
            Err(error) => tracing::warn!(task = %id, %error, "could not record the git diff"),
        }
    }

    /// Runs the task's commands and records the outcome.
    async fn drive(&self, task: &Task) -> Result<(), StoreError> {
        let id = task.id;
        let spec = &task.spec;
        let attempt = task.state.attempt;
        // Built first when the request defined it and no build of its content exists.
        let executor = match self.task_executor(task).await? {
            Ok(Some(executor)) => executor,
            Ok(None) => return Ok(()),
            Err((code, reason)) => return self.fail(task, code, reason).await,
        };
        let secrets = if spec.secret_names.is_empty() {
            BTreeMap::new()
        } else {
            self.store.task_secrets(id).await?
        };
        let redactor = Redactor::new(secrets.values().cloned());
        let workspace = self.workspace_dir(task);
        // One or two mkdirs: cheaper inline than a hop to the blocking pool on the start path.
        if let Err(error) = std::fs::create_dir_all(&workspace) {
            let reason = format!(
                "could not create workspace {}: {error}",
                workspace.display()
            );
            return self
                .fail(task, FailureCode::WorkspaceUnavailable, reason)
                .await;
        }
        // `resources.disk` on a fresh workspace: its own filesystem of that size.
        let quota = match spec.resources.disk {
            Some(disk) if self.config.disk_quotas && spec.workspace.is_none() => {
                match self.mount_quota(task, disk.get()).await {
                    Ok(quota) => Some((quota, disk)),
                    Err(error) => {
                        let reason = format!("could not set up the disk quota: {error}");
                        return self
                            .fail(task, FailureCode::WorkspaceUnavailable, reason)
                            .await;
                    }
                }
            }
            _ => None,
        };
        // A named workspace with a disk quota: its filesystem, mounted (again, after a restart)
        // before the sandbox is built; the API made sure the task's `resources.disk` fits it.
        let quota = match (&spec.workspace, quota) {
            (Some(name), None) => match self.store.find_workspace(name).await? {
                Some(named) => match (named.disk, self.workspaces().prepare_dir(&named).await) {
                    (Some(disk), Ok(Some(fs))) => Some((fs, disk)),
                    (_, Ok(_)) => None,
                    (_, Err(error)) => {
                        let reason = format!("could not prepare workspace {name}: {error}");
                        return self
                            .fail(task, FailureCode::WorkspaceUnavailable, reason)
                            .await;
                    }
                },
                None => None,
            },
            (_, quota) => quota,
        };
        // `git`: cloned into the fresh workspace before the commands.
        let checkout = match &spec.git {
            Some(git) => {
                let (source, dest) = (git.clone(), workspace.clone());
                let options = self.config.git.clone_options();
                let cloned = tokio::task::spawn_blocking(move || {
                    clone_at(
                        &source.repository,
                        source.reference.as_deref(),
                        &dest,
                        &options?,
                    )
                    .map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|cloned| cloned);
                match cloned {
                    Ok(checkout) => Some((git.repository.clone(), checkout)),
                    Err(error) => {
                        let reason = format!("could not clone {}: {error}", git.repository);
                        return self.fail(task, FailureCode::GitCloneFailed, reason).await;
                    }
                }
            }
            None => None,
        };
        // A named workspace may hold the directory a previous task ended in: start at the root.
        if let Some(name) = &spec.workspace {
            if let Err(error) = self.store.touch_workspace(name, Timestamp::now()).await {
                tracing::warn!(workspace = %name, %error, "could not record the workspace's use");
            }
            if let Err(error) = tokio::fs::remove_file(workspace.join(CWD_FILE)).await {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(%error, "could not reset the task's working directory");
                }
            }
        }
        // Services: healthy before the first command, stopped when the task is over.
        let mut services = match super::services::Services::start(&executor, task).await {
            Ok(services) => services,
            Err(reason) => {
                let reason = redactor.redact(&reason);
                return self.fail(task, FailureCode::ServicesFailed, reason).await;
            }
        };
        let deadline = spec.timeout.map(|t| Instant::now() + t);
        let mut budget = OutputBudget::new(self.config.stored_output_limit.get());
        let mut results: Vec<CommandResult> = Vec::new();
        // The last command's result, stored with the task's end in one transaction.
        let mut last: Option<CommandResult> = None;
        loop {
            let index = match next_step(spec.commands.len(), spec.continue_on_error, &results) {
                Step::Run(index) => index,
                Step::Finish {
                    status,
                    exit_code,
                    reason,
                } => {
                    if let Some(services) = services.take() {
                        services.stop().await;
                    }
                    if let Some((repository, checkout)) = &checkout {
                        self.record_diff(id, &workspace, repository, checkout).await;
                    }
                    let full = match &quota {
                        Some((fs, disk)) if status != TaskStatus::Succeeded => {
                            let fs = fs.clone();
                            let full = tokio::task::spawn_blocking(move || fs.is_full())
                                .await
                                .map(|full| full.unwrap_or(false))
                                .unwrap_or(false);
                            full.then_some(*disk)
                        }
                        _ => None,
                    };
                    if let Some(disk) = full {
                        let failure = (
                            FailureCode::DiskQuotaExceeded,
                            format!(
                                "{DISK_QUOTA_EXCEEDED}: the task filled its workspace's disk quota of {disk}{}",
                                reason.map(|r| format!(" ({r})")).unwrap_or_default()
                            ),
                        );
                        let (code, reason) = failure;
                        return self
                            .record_finish(
                                task,
                                status,
                                exit_code,
                                Some(code),
                                Some(reason),
                                last.as_ref(),
                            )
                            .await;
                    }
                    return self
                        .record_finish(task, status, exit_code, None, reason, last.as_ref())
                        .await;
                }
            };
            if self.stopped(id) {
                return Ok(());
            }
            let command = spec.commands[index].clone();
            let index_u32 = index as u32;
            let started_event = TaskEventKind::CommandStarted {
                index: index_u32,
                command: command.clone(),
            };
            let started_at = Timestamp::now();
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let mut result = CommandResult {
                index: index_u32,
                attempt,
                command: command.clone(),
                exit_code: None,
                signal: None,
                timed_out: false,
                oom_killed: false,
                error: None,
                executor: None,
                stats: ExecutionStats::default(),
                started_at,
                finished_at: started_at,
            };
            if remaining.is_some_and(|r| r.is_zero()) {
                self.emit(id, started_event).await?;
                result.timed_out = true;
                result.exit_code = Some(124);
            } else {
                let carry_cwd = spec.commands.len() > 1;
                let mut request =
                    ExecutionRequest::new(command_argv(&command, carry_cwd), workspace.clone());
                request.env = spec.env.clone();
                request.env.extend(secrets.clone());
                request.limits = spec.resources.clone();
                if quota.is_some() {
                    // Enforced here, by the workspace's own filesystem.
                    request.limits.disk = None;
                }
                request.network = spec.network.clone();
                if let Some(services) = &services {
                    services.join(&mut request);
                }
                request.timeout = remaining;
                request.output_limit = self.config.output_limit;
                request.spool_limit = self.config.spool_limit;
                let execution_id = request.id.clone();
                {
                    let mut slots = self.lock();
                    if let Some(running) = slots.running.get_mut(&id) {
                        running.execution = Some((execution_id.clone(), Arc::clone(&executor)));
                    }
                }
                let (sender, receiver) = tokio::sync::mpsc::channel(OUTPUT_EVENT_BUFFER);
                // The executor starts while `command_started` is stored; output waits for it in
                // the channel, so the event order holds without a write on the start path.
                let budget = &mut budget;
                let redactor = &redactor;
                let forwarder = async move {
                    self.emit(id, started_event).await?;
                    self.forward_output(id, index_u32, receiver, redactor, budget)
                        .await
                };
                let (outcome, forwarded) =
                    tokio::join!(executor.execute(request, sender), forwarder);
                // Its output is stored (as events): the spool files have no reader.
                remove_spools(
                    self.config.spool_dir.as_deref(),
                    &execution_id,
                    outcome.as_ref().ok(),
                )
                .await;
                forwarded?;
                if let Some(running) = self.lock().running.get_mut(&id) {
                    running.execution = None;
                }
                match outcome {
                    Ok(done) => {
                        if done.executor != executor.name() {
                            tracing::warn!(task = %id, environment = %spec.environment, configured = executor.name(), ran = %done.executor, "ran on the fallback executor");
                        }
                        result.executor = Some(done.executor);
                        result.exit_code = Some(done.exit_code);
                        result.signal = done.signal;
                        result.timed_out = done.timed_out;
                        result.oom_killed = done.oom_killed;
                        result.stats = done.stats;
                    }
                    Err(error) => {
                        self.metrics.executor_error(&spec.environment);
                        result.error = Some(redactor.redact(&error.to_string()));
                    }
                }
            }
            result.finished_at = Timestamp::now();
            results.push(result);
            let done = matches!(
                next_step(spec.commands.len(), spec.continue_on_error, &results),
                Step::Finish { .. }
            );
            if done && !self.stopped(id) {
                // Recorded with the task's end (one commit instead of two per task).
                last = results.last().cloned();
                continue;
            }
            if let Some(result) = results.last() {
                self.store.record_result(id, result).await?;
                self.events.bump();
            }
            if self.stopped(id) {
                return Ok(());
            }
        }
    }

    /// Whether the task was cancelled (already recorded by the API) or interrupted by shutdown.
    pub(super) fn stopped(&self, id: TaskId) -> bool {
        self.lock()
            .running
            .get(&id)
            .is_some_and(|r| r.cancelled || r.interrupted)
    }

    /// Records the outcome, with a failure's code and reason.
    /// Ends `task` as failed before any command ran, with `code` and `reason`.
    async fn fail(&self, task: &Task, code: FailureCode, reason: String) -> Result<(), StoreError> {
        self.finish(task, TaskStatus::Failed, None, Some((code, reason)))
            .await
    }

    async fn finish(
        &self,
        task: &Task,
        status: TaskStatus,
        exit_code: Option<i32>,
        failure: Option<(FailureCode, String)>,
    ) -> Result<(), StoreError> {
        let (code, reason) =
            failure.map_or((None, None), |(code, reason)| (Some(code), Some(reason)));
        self.record_finish(task, status, exit_code, code, reason, None)
            .await
    }

    /// Records the outcome, with the last command's result when it is not stored yet (then
    /// both in one transaction; the result stands even when the end is refused).
    async fn record_finish(
        &self,
        task: &Task,
        status: TaskStatus,
        exit_code: Option<i32>,
        code: Option<FailureCode>,
        reason: Option<String>,
        last: Option<&CommandResult>,
    ) -> Result<(), StoreError> {
        let at = Timestamp::now();
        let finish = Transition::Finish {
            status,
            exit_code,
            reason,
            code,
            at,
        };
        let finished = match last {
            Some(result) => match self
                .store
                .record_result_and_finish(task.id, result, finish)
                .await?
            {
                Ok(state) => state,
                // Cancelled or interrupted meanwhile; that status stands (the result is stored).
                Err(_) => {
                    self.events.bump();
                    return Ok(());
                }
            },
            None => match self.store.transition(task.id, finish).await {
                Ok(finished) => finished.state,
                // Cancelled or interrupted meanwhile; that status stands.
                Err(StoreError::Transition(_)) => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        self.events.bump();
        if let (Some(started), Some(ended)) = (finished.started_at, finished.finished_at) {
            let ran = ended.millis_since(started);
            self.metrics
                .run_duration
                .observe(Duration::from_millis(ran));
        }
        if can_retry(&finished, task.spec.retries) {
            self.store
                .transition(task.id, Transition::Retry { at })
                .await?;
            self.events.bump();
        }
        Ok(())
    }

    pub(super) async fn emit(&self, id: TaskId, kind: TaskEventKind) -> Result<(), StoreError> {
        self.store.append_event(id, Timestamp::now(), &kind).await?;
        self.events.bump();
        Ok(())
    }

    /// Stores the executor's output as whole, redacted lines. Each stream keeps its order
    /// exactly; across the two streams, lines are stored in the order the executor read them
    /// (two pipes cannot say more: a command that needs the exact interleaving writes `2>&1`).
    async fn forward_output(
        &self,
        id: TaskId,
        index: u32,
        mut receiver: tokio::sync::mpsc::Receiver<ExecEvent>,
        redactor: &Redactor,
        budget: &mut OutputBudget,
    ) -> Result<(), StoreError> {
        let mut stdout = LineAssembler::new(MAX_LINE);
        let mut stderr = LineAssembler::new(MAX_LINE);
        while let Some(first) = receiver.recv().await {
            // Coalesce whatever else is already waiting into one event per stream, so chatty
            // commands cost one insert per batch rather than per chunk.
            let mut batch = vec![first];
            while batch.len() < OUTPUT_EVENT_BUFFER {
                match receiver.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            // Whole lines in the order they were read, across both streams: consecutive lines of
            // one stream become one event, a switch to the other stream starts the next one.
            let mut runs: Vec<(OutputStream, String)> = Vec::new();
            for event in batch {
                if let ExecEvent::Output { stream, data, .. } = event {
                    let lines = match stream {
                        OutputStream::Stdout => &mut stdout,
                        OutputStream::Stderr => &mut stderr,
                    };
                    let Some(text) = lines.push(&data) else {
                        continue;
                    };
                    match runs.last_mut() {
                        Some((last, run)) if *last == stream => run.push_str(&text),
                        _ => runs.push((stream, text)),
                    }
                }
            }
            for (stream, text) in runs {
                self.emit_output(id, index, stream, redactor, budget, text)
                    .await?;
            }
        }
        for (stream, lines) in [
            (OutputStream::Stdout, &mut stdout),
            (OutputStream::Stderr, &mut stderr),
        ] {
            if let Some(text) = lines.finish() {
                self.emit_output(id, index, stream, redactor, budget, text)
                    .await?;
            }
        }
        Ok(())
    }

    async fn emit_output(
        &self,
        id: TaskId,
        index: u32,
        stream: OutputStream,
        redactor: &Redactor,
        budget: &mut OutputBudget,
        text: String,
    ) -> Result<(), StoreError> {
        let Some(text) = budget.admit(redactor.redact(&text)) else {
            return Ok(());
        };
        self.emit(
            id,
            TaskEventKind::Output {
                index,
                stream,
                text,
            },
        )
        .await
    }
}

/// Deletes an execution's spool files: those its result names, and the whole
/// `<spool_dir>/<execution id>` when the spool directory is known (also after a failed
/// execution, which names none).
async fn remove_spools(
    spool_dir: Option<&std::path::Path>,
    execution: &conductor_types::ExecutionId,
    done: Option<&conductor_types::ExecutionResult>,
) {
    let mut named: Vec<std::path::PathBuf> = Vec::new();
    if let Some(done) = done {
        named.extend(done.stdout_info.spool_path.iter().cloned());
        named.extend(done.stderr_info.spool_path.iter().cloned());
    }
    for path in &named {
        if let Err(error) = tokio::fs::remove_file(path).await {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), %error, "removing a spool file");
            }
        }
        if let Some(dir) = path.parent() {
            let _ = tokio::fs::remove_dir(dir).await;
        }
    }
    if let Some(dir) = spool_dir.map(|dir| dir.join(execution.to_string())) {
        if let Err(error) = tokio::fs::remove_dir_all(&dir).await {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %dir.display(), %error, "removing a spool directory");
            }
        }
    }
}
