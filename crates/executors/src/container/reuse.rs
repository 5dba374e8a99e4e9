//! Running an execution in a resident warm container (see `resident` for the agent and the
//! reset): the limits, the workspace and the script sent, the status read back, the container
//! reset and given back to the pool, or removed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_core::{EventSender, ExecutorError};
use conductor_sandbox::cgroup::{CgroupLimits, CgroupStats};
use conductor_types::{ExecPlan, ExecutionRequest, ExecutionResult, IsolationLevel};
use tokio::net::unix::pipe;
use tokio_util::sync::CancellationToken;

use super::api;
use super::exit::{exit_of, OUTPUT_GRACE};
use super::guard::ContainerGuard;
use super::idle::{Warm, WarmKind};
use super::inner::Inner;
use super::oom::OomWatch;
use super::pool::{send, Slot};
use super::scripts::{frame, resident_script};
use super::spec::command;
use crate::run::{supervise, Ending, Finished, Measurements, OutputCapture};

impl Inner {
    /// Runs `request` in the resident container `warm` (taken from the pool), then resets it
    /// and gives it back, or removes it (see the module docs).
    pub(crate) async fn run_resident(
        inner: &Arc<Self>,
        warm: Warm,
        request: &ExecutionRequest,
        plan: &ExecPlan,
        events: EventSender,
        cancel: &CancellationToken,
    ) -> Result<ExecutionResult, ExecutorError> {
        let Warm {
            guard,
            id,
            oom,
            kind,
        } = warm;
        let WarmKind::Resident(mut agent) = kind else {
            inner.retire(guard, false).await;
            return Err(inner.setup("taking a resident container", "it is not one"));
        };
        let Some(slot) = guard.slot().cloned() else {
            inner.retire(guard, false).await;
            return Err(inner.setup("taking a resident container", "it has no slot"));
        };
        let begun = Instant::now();
        let bridges = match inner.open_bridges(&id, request).await {
            Ok(bridges) => bridges,
            Err(e) => {
                inner.retire(guard, false).await;
                return Err(e);
            }
        };
        let prepared = match inner.prepare_resident(&guard, &slot, request, plan).await {
            Ok(prepared) => prepared,
            Err((e, bound)) => {
                inner.retire(guard, bound).await;
                return Err(e);
            }
        };
        let Prepared {
            baseline,
            peak_reset,
            stdout,
            stderr,
        } = prepared;
        let started = Instant::now();
        let output = inner.started(request, &events, stdout, stderr).await;
        let kill = || inner.kill(&id);
        let (ending, status) = supervise(agent.exit_status(), plan.timeout, cancel, kill).await;
        let duration = started.elapsed();
        // Gone before the container can serve another execution.
        drop(bridges);
        // What the command left running would hold the output open: gone before it is read.
        let reusable = ending == Ending::Exited && status.is_some();
        if reusable {
            agent = match tokio::task::spawn_blocking(move || {
                agent.kill_leftovers().map(|()| agent)
            })
            .await
            {
                Ok(Ok(agent)) => agent,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, container = %id, "resetting a resident container; removing it");
                    return inner
                        .finish_removed(
                            guard, ending, status, &id, output, duration, request, &oom, baseline,
                            peak_reset,
                        )
                        .await;
                }
                Err(e) => return Err(inner.setup("resetting a resident container", e)),
            };
        }
        let (stdout, stderr) = output.finish(OUTPUT_GRACE).await?;
        let measurements = inner
            .measure(&guard, &oom, baseline.as_ref(), peak_reset)
            .await;
        let exit = match status {
            Some(code) => exit_of(code),
            None => exit_of(
                api::container_state(inner.engine.socket(), &id)
                    .await
                    .ok()
                    .and_then(|state| state.exit_code)
                    .unwrap_or(-1),
            ),
        };
        let home = request.home.is_some();
        let unbound = tokio::task::spawn_blocking(move || slot.unbind(home)).await;
        let unbound = matches!(unbound, Ok(Ok(())));
        agent.uses += 1;
        let reuse = reusable && unbound && agent.uses < inner.config.warm_reuse;
        let warm = Warm {
            guard,
            id,
            oom,
            kind: WarmKind::Resident(agent),
        };
        if reuse {
            let pool = Arc::clone(inner);
            tokio::spawn(async move { pool.reset_and_give_back(warm).await });
        } else {
            inner.retire(warm.guard, false).await;
        }
        tracing::debug!(
            launch_ms = (started - begun).as_secs_f64() * 1e3,
            run_ms = duration.as_secs_f64() * 1e3,
            "resident container execution"
        );
        Ok(Finished {
            execution_id: request.id.clone(),
            executor: inner.config.engine.name(),
            isolation_level: IsolationLevel::Container,
            ending,
            exit,
            stdout,
            stderr,
            duration,
            measurements,
        }
        .into_result())
    }

    /// Everything up to sending the command: the limits, the workspace bound, the output
    /// FIFOs opened, the script sent. On error, whether the workspace was bound.
    async fn prepare_resident(
        &self,
        guard: &ContainerGuard,
        slot: &Slot,
        request: &ExecutionRequest,
        plan: &ExecPlan,
    ) -> Result<Prepared, (ExecutorError, bool)> {
        let unbound = |e| (e, false);
        let cgroup = guard.cgroup().ok_or_else(|| {
            unbound(self.setup("taking a resident container", "it has no cgroup"))
        })?;
        let limits = CgroupLimits {
            cpus: plan.limits.cpus,
            memory: plan.limits.memory,
            pids: plan.limits.pids,
        };
        let manager = self.cgroups().map_err(unbound)?.manager();
        let (baseline, peak_reset) = tokio::task::spawn_blocking(move || {
            manager.replace_limits(&cgroup, &limits)?;
            let peak_reset = cgroup.reset_peak_memory()?;
            Ok::<_, conductor_sandbox::cgroup::CgroupError>((cgroup.stats().ok(), peak_reset))
        })
        .await
        .map_err(|e| unbound(self.setup("limiting a resident container", e)))?
        .map_err(|e| unbound(self.setup("limiting a resident container", e)))?;
        let cmd = command(plan, self.config.engine.name()).map_err(unbound)?;
        let text = frame(&resident_script(
            self.config.user,
            &plan.cwd.display().to_string(),
            &cmd,
        ));
        self.bind_workspace(slot, request).await.map_err(unbound)?;
        let bound = |e| (e, true);
        let open = |path: PathBuf| {
            pipe::OpenOptions::new()
                .open_receiver(&path)
                .map_err(|e| bound(self.setup("opening a resident container's output FIFO", e)))
        };
        let stdout = open(slot.stdout())?;
        let stderr = open(slot.stderr())?;
        let writer = slot
            .open_writer()
            .map_err(|e| bound(self.setup("sending the command to a resident container", e)))?;
        tokio::task::spawn_blocking(move || send(writer, &text))
            .await
            .map_err(|e| bound(self.setup("sending the command to a resident container", e)))?
            .map_err(|e| bound(self.setup("sending the command to a resident container", e)))?;
        Ok(Prepared {
            baseline,
            peak_reset,
            stdout,
            stderr,
        })
    }

    /// The execution's measurements: the cgroup's figures minus those before it started; the
    /// peak memory only where it was reset.
    async fn measure(
        &self,
        guard: &ContainerGuard,
        oom: &Option<OomWatch>,
        baseline: Option<&CgroupStats>,
        peak_reset: bool,
    ) -> Measurements {
        let mut now = guard.measurements().await;
        if let Some(before) = baseline.map(Measurements::from) {
            let less = |now: Option<u64>, before: Option<u64>| match (now, before) {
                (Some(now), Some(before)) => Some(now.saturating_sub(before)),
                _ => None,
            };
            now.cpu_time_us = less(now.cpu_time_us, before.cpu_time_us);
            now.disk_read_bytes = less(now.disk_read_bytes, before.disk_read_bytes);
            now.disk_write_bytes = less(now.disk_write_bytes, before.disk_write_bytes);
            now.oom_kills = now.oom_kills.saturating_sub(before.oom_kills);
        }
        if !peak_reset {
            now.peak_memory_bytes = None;
        }
        if let Some(watch) = oom {
            now.oom_kills += watch.take_count();
        }
        now
    }

    /// The result of an execution whose container could not be reset: removed, not reused.
    #[allow(clippy::too_many_arguments)]
    async fn finish_removed(
        self: &Arc<Self>,
        guard: ContainerGuard,
        ending: Ending,
        status: Option<i64>,
        id: &str,
        output: OutputCapture,
        duration: Duration,
        request: &ExecutionRequest,
        oom: &Option<OomWatch>,
        baseline: Option<CgroupStats>,
        peak_reset: bool,
    ) -> Result<ExecutionResult, ExecutorError> {
        let measurements = self
            .measure(&guard, oom, baseline.as_ref(), peak_reset)
            .await;
        let slot = guard.slot().cloned();
        self.retire(guard, slot.is_some()).await;
        let (stdout, stderr) = output.finish(OUTPUT_GRACE).await?;
        tracing::debug!(container = %id, "resident container removed after a failed reset");
        Ok(Finished {
            execution_id: request.id.clone(),
            executor: self.config.engine.name(),
            isolation_level: IsolationLevel::Container,
            ending,
            exit: exit_of(status.unwrap_or(-1)),
            stdout,
            stderr,
            duration,
            measurements,
        }
        .into_result())
    }

    /// Removes a resident container (unbinding the workspace and any home first when `bound`)
    /// and lets the pool make another.
    async fn retire(self: &Arc<Self>, guard: ContainerGuard, bound: bool) {
        if bound {
            if let Some(slot) = guard.slot().cloned() {
                // The slot goes with the container: its own home mount may go too.
                let _ = tokio::task::spawn_blocking(move || slot.unbind(true)).await;
            }
        }
        guard.finish().await;
        self.give_back(None);
        Inner::refill(self);
    }

    /// Resets `warm` (see the module docs) and offers it again, or removes it.
    async fn reset_and_give_back(self: Arc<Self>, warm: Warm) {
        let reset = tokio::task::spawn_blocking(move || {
            let outcome = match &warm.kind {
                WarmKind::Resident(agent) => agent.reset(),
                WarmKind::Once(_) => Err("not a resident container".to_owned()),
            };
            (warm, outcome)
        })
        .await;
        match reset {
            Ok((warm, Ok(()))) => self.give_back(Some(warm)),
            Ok((warm, Err(e))) => {
                tracing::warn!(error = %e, container = %warm.id, "resetting a resident container; removing it");
                self.retire(warm.guard, false).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "resetting a resident container");
                self.give_back(None);
            }
        }
    }
}

/// What [`Inner::prepare_resident`] readied.
struct Prepared {
    baseline: Option<CgroupStats>,
    peak_reset: bool,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
}
