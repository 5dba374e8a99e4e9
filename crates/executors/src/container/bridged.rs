//! Port bridges on docker and podman (rootful engines, as root): the listeners are bound from
//! a thread that joins the container's network namespace ([`listen_in_namespace_of`]), then
//! served on the host by [`Bridges`]; no process of ours runs in the container.
//!
//! The listener must be up before the command starts, and a cold container starts its command
//! the moment it starts. So a bridged execution always runs in a waiting container: an idle warm
//! one, or one made on demand the same way (a shell waiting on its FIFO, or a resident
//! container's agent), which only fits requests a warm container can run (network `none`, the
//! default rlimits, no services). The bridges are bound after the container is taken and before
//! the command is sent, and dropped when the command has ended — before a resident container
//! serves its next execution.

use conductor_core::ExecutorError;
use conductor_types::{ExecPlan, ExecutionRequest};

use super::api;
use super::idle::Warm;
use super::inner::Inner;
use crate::bridge::{listen_in_namespace_of, Bridges};

impl Inner {
    /// `taken`, or for a bridged request that found no idle container, one made now; refuses
    /// a bridged request no waiting container can run.
    pub(crate) async fn waiting_for_bridges(
        &self,
        taken: Option<Warm>,
        request: &ExecutionRequest,
        plan: &ExecPlan,
    ) -> Result<Option<Warm>, ExecutorError> {
        if request.bridges.is_empty() || taken.is_some() {
            return Ok(taken);
        }
        if !self.fits(request, plan) {
            return Err(ExecutorError::Unsupported {
                executor: self.config.engine.name(),
                what: "a port bridge with a network other than none, custom rlimits or services"
                    .to_owned(),
            });
        }
        self.make_lent().await.map(Some)
    }

    /// Listens on the request's bridged ports in container `id`'s network namespace and
    /// serves them; `None` without bridges.
    pub(crate) async fn open_bridges(
        &self,
        id: &str,
        request: &ExecutionRequest,
    ) -> Result<Option<Bridges>, ExecutorError> {
        if request.bridges.is_empty() {
            return Ok(None);
        }
        let stage = "listening on the bridged ports in the container";
        let pid = api::container_state(self.engine.socket(), id)
            .await
            .map_err(|e| self.setup(stage, e))?
            .pid
            .filter(|pid| *pid != 0)
            .ok_or_else(|| self.setup(stage, "the container has no process"))?;
        let ports = request.bridges.iter().map(|bridge| bridge.port).collect();
        let listeners = tokio::task::spawn_blocking(move || listen_in_namespace_of(pid, ports))
            .await
            .map_err(|e| self.setup(stage, e))?
            .map_err(|e| self.setup(stage, e))?;
        Ok(Some(Bridges::serve_now(request.bridges.clone(), listeners)))
    }
}
