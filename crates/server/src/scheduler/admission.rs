//! Admission: what a task request must pass to be queued, apart from HTTP. The environment it
//! names or defines is resolved (`environments::resolve_request`), the request validated by
//! core, the server's limits applied, then the checks in [`check`] — the executor's
//! capabilities (a probe request), the services, the smallest disk quota, the CPU and memory
//! budgets — and last its named workspace resolved (a new name creates it, so a refused request
//! creates nothing). [`Scheduler::submit`] runs it all and queues the task; every refusal is an
//! [`AdmissionError`], which the API translates once.

use std::collections::BTreeMap;

use conductor_core::{
    apply_limits, missing_capability, validate_request_with, Executor, ExecutorError, LimitError,
    SpecError, StoreError,
};
use conductor_types::{
    AgentKind, Bytes, Capability, ExecutionRequest, LimitName, Task, TaskId, TaskRequest, TaskSpec,
    Timestamp, TokenInfo,
};

use super::{Scheduler, SchedulerConfig};
use crate::workspaces::domain::WorkspaceError;

/// Why a task request is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdmissionError {
    /// The caller may not do what the request asks (403).
    #[error("{0}")]
    Forbidden(String),
    /// A field has a bad value (422 `invalid_field`).
    #[error("{field}: {message}")]
    InvalidField {
        /// The field's path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Valid, but not something this server can do (422 `not_supported`).
    #[error("{field}: {message}")]
    NotSupported {
        /// The field's path.
        field: String,
        /// What is not supported.
        message: String,
    },
    /// A Dockerfile in `environments` outside the supported subset (422).
    #[error("{field}: {message}")]
    InvalidDockerfile {
        /// The definition (`environments[0]`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An environment defined under the name of another one (409).
    #[error("{field}: {message}")]
    EnvironmentConflict {
        /// The definition (`environments[0]`).
        field: String,
        /// Which environment and why.
        message: String,
    },
    /// Core refused the request.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A limit above `[limits.max]`.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// `git.repository` may not be cloned here.
    #[error("git.repository: {0}")]
    RepositoryNotAllowed(String),
    /// The task's executor cannot enforce what the task asks for (`field`: `network` or
    /// `resources`). The messages of this and the variants below leave the field out: the API
    /// error names it.
    #[error("{error} (environment {environment:?})")]
    Unsupported {
        /// `network` or `resources`.
        field: &'static str,
        /// The task's environment.
        environment: String,
        /// What the executor said.
        error: ExecutorError,
    },
    /// `resources.disk` below the smallest quota filesystem.
    #[error(
        "{disk} is below the smallest disk quota, {}",
        Bytes(conductor_workspace::MIN_QUOTA_BYTES)
    )]
    DiskBelowMinimum {
        /// What was asked.
        disk: Bytes,
    },
    /// More cores than the server hands out.
    #[error("asks for {asked} cores but the server hands out at most {budget}")]
    CpusOverBudget {
        /// What was asked (as written).
        asked: String,
        /// `cpus_budget`.
        budget: f64,
    },
    /// More memory than the server hands out.
    #[error("asks for {asked} but the server hands out at most {budget}")]
    MemoryOverBudget {
        /// What was asked.
        asked: Bytes,
        /// `memory_budget`.
        budget: Bytes,
    },
    /// The named workspace refused the task, or could not be made.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Scheduler {
    /// Admits `request` from `caller` and queues it: the task as stored (committed before this
    /// returns), or why it is refused.
    pub(crate) async fn submit(
        &self,
        request: TaskRequest,
        caller: &TokenInfo,
    ) -> Result<Task, AdmissionError> {
        let (spec, secrets) = self.admit(request, caller).await?;
        self.open_session(&spec).await?;
        let task = self
            .store
            .create_task(TaskId::random(), &spec, &secrets, Timestamp::now())
            .await?;
        self.events.bump();
        self.submitted(&task);
        Ok(task)
    }

    /// The spec and secrets `request` becomes, or why it is refused.
    async fn admit(
        &self,
        mut request: TaskRequest,
        caller: &TokenInfo,
    ) -> Result<(TaskSpec, BTreeMap<String, String>), AdmissionError> {
        let config = &self.config;
        let agent_task = request.task_type.is_some_and(|t| t.is_agent());
        if agent_task && request.environment.is_none() {
            // The executor is the one of the agent's own environment: name it before choosing.
            let kind = request
                .agent
                .as_ref()
                .map_or(AgentKind::ClaudeCode, |a| a.kind);
            request.environment = Some(conductor_core::agent::default_environment(kind).into());
        }
        // `environments` defined in the request, or one built since the server started.
        let resolved =
            crate::environments::resolve_request(self, &mut request, caller.admin).await?;
        let mut known = self.environments();
        for name in &resolved.extra_names {
            if !known.contains(&name.as_str()) {
                known.push(name);
            }
        }
        if request.network.is_none() && !agent_task {
            let environment = request
                .environment
                .as_deref()
                .unwrap_or(conductor_core::DEFAULT_ENVIRONMENT);
            request.network = Some(config.default_network.of(environment));
        }
        // An agent reaches its gateway through a bridge: it needs no network (`none` unless asked).
        let templates = config.agents.as_ref().map(|a| a.templates.clone());
        let validated = validate_request_with(request, &known, &templates.unwrap_or_default())?;
        let mut spec = validated.spec;
        if let Some(git) = &spec.git {
            conductor_workspace::check_source(&git.repository, &config.git.allow_local)
                .map_err(|e| AdmissionError::RepositoryNotAllowed(e.to_string()))?;
        }
        spec.inline_environment = resolved.inline;
        if spec.workspace.is_none() {
            spec.workspace.clone_from(&config.default_workspace);
        }
        let executor = resolved.executor.as_deref();
        // Server limits: refuse what is above `[limits.max]`, fill in `[limits.default]`.
        spec.defaults_applied = server_limits(&mut spec, config, executor)?;
        check(&spec, config, executor)?;
        self.admit_agent(&mut spec, executor).await?;
        self.resolve_workspace(&mut spec, &caller.id).await?;
        Ok((spec, validated.secrets))
    }

    /// A task names its workspace by id or name (a new name creates it, `keep`, owned by the
    /// caller, with the task's disk quota); the spec keeps the name, which is its directory.
    async fn resolve_workspace(
        &self,
        spec: &mut TaskSpec,
        owner: &str,
    ) -> Result<(), WorkspaceError> {
        let Some(given) = spec.workspace.take() else {
            return Ok(());
        };
        let disk = spec.resources.disk.filter(|_| self.config.disk_quotas);
        let found = self
            .workspaces()
            .resolve_for_task("workspace", &given, owner, disk)
            .await?;
        spec.workspace = Some(found.name);
        // What bounds the task's disk is its workspace's quota: say so in the task.
        if let (None, Some(quota)) = (spec.resources.disk, found.disk) {
            spec.resources.disk = Some(quota);
            spec.defaults_applied.push(LimitName::Disk);
        }
        Ok(())
    }
}

/// Applies the server's limit policy to `spec`: a default only where the task's executor (or,
/// for the disk of a fresh workspace, the scheduler's quotas) can enforce it.
pub(crate) fn server_limits(
    spec: &mut TaskSpec,
    config: &SchedulerConfig,
    executor: Option<&dyn Executor>,
) -> Result<Vec<LimitName>, LimitError> {
    let capabilities = executor.map(|e| e.capabilities());
    let supports = |capability| {
        capabilities
            .as_ref()
            .is_some_and(|c| c.supports(capability))
    };
    let fresh_workspace = spec.workspace.is_none();
    let enforceable = |limit| match limit {
        LimitName::Memory => supports(Capability::MemoryLimit),
        LimitName::Cpus => supports(Capability::CpuLimit),
        LimitName::Pids => supports(Capability::PidsLimit),
        // A named workspace has its own quota, set when it was made.
        LimitName::Disk => {
            fresh_workspace && (config.disk_quotas || supports(Capability::DiskLimit))
        }
        LimitName::Timeout => true,
    };
    apply_limits(spec, &config.limits, enforceable)
}

/// The checks a validated spec (its limits applied) must pass on this server, in order: its
/// executor can enforce what it asks for, its services can run there, its disk is at least
/// the smallest quota (when the server makes quotas), its CPUs and memory fit the budgets.
pub(crate) fn check(
    spec: &TaskSpec,
    config: &SchedulerConfig,
    executor: Option<&dyn Executor>,
) -> Result<(), AdmissionError> {
    if let Some(executor) = executor {
        check_capabilities(spec, config, executor)?;
    }
    if !spec.services.is_empty() {
        check_services(spec, executor)?;
    }
    if let (true, Some(disk)) = (config.disk_quotas, spec.resources.disk) {
        if disk.get() < conductor_workspace::MIN_QUOTA_BYTES {
            return Err(AdmissionError::DiskBelowMinimum { disk });
        }
    }
    if let (Some(budget), Some(cpus)) = (config.cpus_budget, spec.resources.cpus) {
        if cpus.get() > budget {
            let asked = cpus.to_string();
            return Err(AdmissionError::CpusOverBudget { asked, budget });
        }
    }
    if let (Some(budget), Some(asked)) = (config.memory_budget, spec.resources.memory) {
        if asked > budget {
            return Err(AdmissionError::MemoryOverBudget { asked, budget });
        }
    }
    Ok(())
}

/// A probe request with the task's limits and network against the executor's capabilities.
fn check_capabilities(
    spec: &TaskSpec,
    config: &SchedulerConfig,
    executor: &dyn Executor,
) -> Result<(), AdmissionError> {
    let mut probe = ExecutionRequest::new(vec!["true".into()], "/".into());
    probe.limits = spec.resources.clone();
    if config.disk_quotas {
        // The scheduler enforces it, whatever the executor.
        probe.limits.disk = None;
    }
    probe.network = spec.network.clone();
    let Some((capability, what)) = missing_capability(&probe, &executor.capabilities()) else {
        return Ok(());
    };
    let field = match capability {
        Capability::NetworkNone
        | Capability::NetworkLocalhost
        | Capability::NetworkAllowlist
        | Capability::NetworkFull
        | Capability::NetworkHost => "network",
        _ => "resources",
    };
    Err(AdmissionError::Unsupported {
        field,
        environment: spec.environment.clone(),
        error: ExecutorError::Unsupported {
            executor: executor.name(),
            what: what.to_owned(),
        },
    })
}

/// The task's services against the executor's service runner.
fn check_services(spec: &TaskSpec, executor: Option<&dyn Executor>) -> Result<(), AdmissionError> {
    let field = || "services".to_owned();
    match executor.and_then(|e| e.services()) {
        Some(runner) => runner
            .check(&spec.services)
            .map_err(|error| AdmissionError::InvalidField {
                field: field(),
                message: error.to_string(),
            }),
        None => Err(AdmissionError::NotSupported {
            field: field(),
            message: format!(
                "services are not supported by the {} executor of environment {:?}: run it on docker or podman ([environments.{}] executor = \"docker\")",
                executor.map_or("missing", |e| e.name()),
                spec.environment,
                spec.environment
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use async_trait::async_trait;
    use conductor_core::EventSender;
    use conductor_types::{
        ExecutionId, ExecutionResult, ExecutorCapabilities, IsolationLevel, NetworkPolicy,
    };

    use super::*;
    use crate::AppError;

    /// Declares `supported` and runs nothing.
    #[derive(Debug)]
    struct Declares(BTreeSet<Capability>);

    #[async_trait]
    impl Executor for Declares {
        fn name(&self) -> &'static str {
            "declares"
        }
        fn isolation_level(&self) -> IsolationLevel {
            IsolationLevel::None
        }
        fn capabilities(&self) -> ExecutorCapabilities {
            ExecutorCapabilities {
                isolation_level: IsolationLevel::None,
                platform: "test".into(),
                supported: self.0.clone(),
            }
        }
        async fn health_check(&self) -> Result<(), ExecutorError> {
            Ok(())
        }
        async fn warmup(&self) -> Result<(), ExecutorError> {
            Ok(())
        }
        async fn execute(
            &self,
            request: ExecutionRequest,
            _: EventSender,
        ) -> Result<ExecutionResult, ExecutorError> {
            Ok(ExecutionResult::exited(
                request.id,
                "declares",
                IsolationLevel::None,
                0,
            ))
        }
        async fn cancel(&self, _: &ExecutionId) -> Result<bool, ExecutorError> {
            Ok(false)
        }
    }

    fn spec(json: serde_json::Value) -> TaskSpec {
        let request: TaskRequest = serde_json::from_value(json).unwrap();
        conductor_core::validate_request(request, &["host"])
            .unwrap()
            .spec
    }

    fn config() -> SchedulerConfig {
        SchedulerConfig::new(PathBuf::from("/nonexistent/workspaces"))
    }

    fn api(error: AdmissionError) -> (String, String) {
        let error = AppError::from(error);
        (error.status_and_code().1.to_owned(), error.to_string())
    }

    #[test]
    fn a_limit_the_executor_cannot_enforce_is_refused_on_resources_before_the_network() {
        let executor = Declares(BTreeSet::from([Capability::NetworkNone]));
        let mut both =
            spec(serde_json::json!({"commands": ["true"], "resources": {"memory": "64m"}}));
        both.network = NetworkPolicy::Full;
        let refused = check(&both, &config(), Some(&executor)).unwrap_err();
        assert_eq!(
            api(refused),
            (
                "not_supported".to_owned(),
                "resources: a memory limit is not supported yet by the declares executor (environment \"host\")"
                    .to_owned()
            )
        );
        both.resources.memory = None;
        let refused = check(&both, &config(), Some(&executor)).unwrap_err();
        assert_eq!(
            api(refused),
            (
                "not_supported".to_owned(),
                "network: network policy full is not supported yet by the declares executor (environment \"host\")"
                    .to_owned()
            )
        );
        both.network = NetworkPolicy::None;
        assert!(check(&both, &config(), Some(&executor)).is_ok());
    }

    #[test]
    fn services_need_an_executor_that_runs_them() {
        let executor = Declares(BTreeSet::from([Capability::NetworkNone]));
        let task = spec(serde_json::json!({"commands": ["true"], "services": ["postgres:16"]}));
        let refused = check(&task, &config(), Some(&executor)).unwrap_err();
        assert!(
            matches!(&refused, AdmissionError::NotSupported { field, .. } if field == "services")
        );
        let (code, message) = api(refused);
        assert_eq!(code, "not_supported");
        assert!(message.starts_with("services: services are not supported by the declares executor of environment \"host\""), "{message}");
    }

    #[test]
    fn a_disk_below_the_smallest_quota_is_refused_only_where_quotas_are_made() {
        let task = spec(serde_json::json!({"commands": ["true"], "resources": {"disk": "1m"}}));
        let mut config = config();
        assert!(check(&task, &config, None).is_ok());
        config.disk_quotas = true;
        let refused = check(&task, &config, None).unwrap_err();
        let min = Bytes(conductor_workspace::MIN_QUOTA_BYTES);
        assert_eq!(
            api(refused),
            (
                "invalid_field".to_owned(),
                format!("resources.disk: 1m is below the smallest disk quota, {min}")
            )
        );
    }

    #[test]
    fn cpus_and_memory_must_fit_the_budgets() {
        let task = spec(
            serde_json::json!({"commands": ["true"], "resources": {"cpus": 3, "memory": "2g"}}),
        );
        let mut config = config();
        config.cpus_budget = Some(2.0);
        let refused = check(&task, &config, None).unwrap_err();
        assert_eq!(
            api(refused),
            (
                "invalid_field".to_owned(),
                "resources.cpus: asks for 3 cores but the server hands out at most 2".to_owned()
            )
        );
        config.cpus_budget = Some(4.0);
        config.memory_budget = Some(Bytes::mib(1024));
        let refused = check(&task, &config, None).unwrap_err();
        assert!(matches!(refused, AdmissionError::MemoryOverBudget { .. }));
        config.memory_budget = Some(Bytes::mib(4096));
        assert!(check(&task, &config, None).is_ok());
    }
}
