//! A task's service sidecars: started on its environment's executor before the first command,
//! stopped when the task is over (however it ends: the guard's drop stops them).

use std::sync::Arc;

use conductor_core::{Executor, ServiceSet};
use conductor_types::Task;

/// The started services of one task; dropping it stops and removes them.
#[derive(Debug)]
pub(super) struct Services {
    executor: Arc<dyn Executor>,
    set: Option<ServiceSet>,
}

impl Services {
    /// Starts `task`'s services on `executor`; `Ok(None)` when it names none. The error is the
    /// reason recorded on the task.
    pub(super) async fn start(
        executor: &Arc<dyn Executor>,
        task: &Task,
    ) -> Result<Option<Self>, String> {
        let names = &task.spec.services;
        if names.is_empty() {
            return Ok(None);
        }
        let Some(runner) = executor.services() else {
            return Err(format!(
                "services are not supported by the {} executor (environment {:?}): run the environment on docker or podman",
                executor.name(),
                task.spec.environment
            ));
        };
        let started = std::time::Instant::now();
        let set = runner
            .start(&task.id.to_string(), names)
            .await
            .map_err(|error| {
                format!("could not start the services {}: {error}", names.join(", "))
            })?;
        tracing::info!(
            task = %task.id,
            network = %set.network,
            ms = started.elapsed().as_millis() as u64,
            "services healthy"
        );
        Ok(Some(Self {
            executor: Arc::clone(executor),
            set: Some(set),
        }))
    }

    /// The started set: its network and the variables that locate the services.
    pub(super) fn set(&self) -> Option<&ServiceSet> {
        self.set.as_ref()
    }

    /// Stops and removes them now (dropping does it in the background).
    pub(super) async fn stop(mut self) {
        if let (Some(set), Some(runner)) = (self.set.take(), self.executor.services()) {
            runner.stop(&set).await;
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        let Some(set) = self.set.take() else {
            return;
        };
        let executor = Arc::clone(&self.executor);
        let stop = async move {
            if let Some(runner) = executor.services() {
                runner.stop(&set).await;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(stop);
            }
            Err(_) => tracing::warn!("no runtime to stop a task's services on"),
        }
    }
}
