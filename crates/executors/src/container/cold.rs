//! A cold start: the execution's cgroup made, its container created (the create body from
//! `spec`), attached to and started; and what a refused create means.

use conductor_core::ExecutorError;
use conductor_types::{ExecPlan, ExecutionRequest};

use super::guard::ContainerGuard;
use super::inner::{Inner, Launched};
use super::services;
use super::spec::create_body;

impl Inner {
    /// Creates, attaches to and starts a container for the request.
    pub(crate) async fn launch_cold(
        &self,
        request: &ExecutionRequest,
        plan: &ExecPlan,
    ) -> Result<Launched, ExecutorError> {
        let (mut guard, oom, cgroup_parent) = match self.config.rootless {
            Some(_) => (
                ContainerGuard::without_cgroup(self.engine.clone()),
                None,
                None,
            ),
            None => {
                let cgroups = self.cgroups()?;
                let (cgroup, oom) = cgroups.create(&request.id.to_string(), plan).await?;
                let cgroup_parent = cgroups.parent(&cgroup)?;
                let engine_dirs = cgroups.engine_dirs(&cgroup, &cgroup_parent);
                let guard = ContainerGuard::new(self.engine.clone(), cgroup, engine_dirs);
                (guard, oom, Some(cgroup_parent))
            }
        };
        let user = self.user();
        let workspace = request.workspace.display().to_string();
        let home = request.home.as_ref().map(|home| home.display().to_string());
        let mut settings = self.settings(
            &request.id.to_string(),
            &user,
            cgroup_parent.as_deref(),
            &workspace,
        );
        settings.home = home.as_deref();
        if let Some(network) = &request.service_network {
            settings.service_network = Some(network);
            settings.extra_hosts = services::hosts(&self.engine, network).await?;
        }
        let mut body = create_body(plan, &settings)?;
        if let (Some(_), Some(host_config)) = (self.config.rootless, body.host_config.as_mut()) {
            // No cgroup of ours holds the memory limit: the engine gets it (memory = + swap).
            let memory = plan
                .limits
                .memory
                .map(|m| i64::try_from(m.get()).unwrap_or(i64::MAX));
            host_config.memory = memory;
            host_config.memory_swap = memory;
        }
        self.seccomp.write().await?;
        let name = format!("conductor-{}", request.id);
        let id = match self.engine.create(&name, body).await {
            Ok(id) => id,
            Err(e) => return Err(self.create_error(e).await),
        };
        guard.set_container(id.clone());
        let attached = self.attach(&id).await?;
        self.engine
            .start(&id)
            .await
            .map_err(|e| self.setup("starting the container", e))?;
        Ok(Launched {
            guard,
            id,
            attached,
            oom,
            warm: false,
            bridges: None,
        })
    }

    /// Attaches to the container's stdout and stderr.
    pub(crate) async fn attach(
        &self,
        id: &str,
    ) -> Result<bollard::container::AttachContainerResults, ExecutorError> {
        self.engine
            .attach(id)
            .await
            .map_err(|e| self.setup("attaching to the container", e))
    }

    /// What a failed create means. A 404 is a missing image; any other refusal may be the
    /// engine's `systemd` cgroup driver refusing a cgroupfs parent, asked of `/info` only then.
    pub(crate) async fn create_error(&self, error: bollard::errors::Error) -> ExecutorError {
        let name = self.config.engine.name();
        if let bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        } = &error
        {
            return ExecutorError::Unavailable {
                executor: name,
                reason: format!(
                    "image {} is not in {name}: build and import it with `conductor env build NAME`",
                    self.config.image
                ),
            };
        }
        match self.engine.cgroup_driver().await {
            Ok(Some(driver)) if driver != "cgroupfs" => ExecutorError::Unsupported {
                executor: name,
                what: format!("an engine with the {driver} cgroup driver (use cgroupfs)"),
            },
            _ => self.setup("creating the container", error),
        }
    }
}
