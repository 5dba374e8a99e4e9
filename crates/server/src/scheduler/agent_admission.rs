//! What an agent task must pass besides a command task's checks (issue 12): the server has an
//! LLM gateway (a provider key), the environment's executor can host an agent (a port bridge to
//! the gateway, a late-mounted home), and the environment has the agent's CLI (probed once per
//! environment and kind). Then the task opens a session, and a task that names no workspace
//! works in the session's own persistent one.

use conductor_agents::adapter;
use conductor_core::Executor;
use conductor_types::{
    AgentKind, Capability, ExecEvent, ExecutionRequest, NetworkPolicy, Session, SessionId,
    TaskSpec, Timestamp, Usage,
};

use super::admission::AdmissionError;
use super::Scheduler;

fn refused(field: &str, message: String) -> AdmissionError {
    AdmissionError::NotSupported {
        field: field.to_owned(),
        message,
    }
}

impl Scheduler {
    /// Checks an agent task and gives it a new session (and the session's workspace when it
    /// names none). The session is stored by [`Scheduler::open_session`] with the task.
    pub(super) async fn admit_agent(
        &self,
        spec: &mut TaskSpec,
        executor: Option<&dyn Executor>,
    ) -> Result<(), AdmissionError> {
        let Some(agent) = spec.agent.clone() else {
            return Ok(());
        };
        if self.config.agents.is_none() {
            return Err(refused(
                "task_type",
                "agent tasks need the LLM gateway, and this server has no provider key: start it with ANTHROPIC_API_KEY (or ANTHROPIC_API_KEY_FILE, or [llm] api_key_file in config.toml)".into(),
            ));
        }
        let Some(executor) = executor else {
            return Err(refused(
                "environment",
                format!("environment {:?} has no executor here", spec.environment),
            ));
        };
        let capabilities = executor.capabilities();
        for (capability, what) in [
            (Capability::PortBridge, "a port bridge to the LLM gateway"),
            (Capability::HomeMount, "a home of its own for the agent"),
        ] {
            if !capabilities.supports(capability) {
                return Err(refused(
                    "environment",
                    format!(
                        "the {} executor of environment {:?} cannot run agents: it has no {what} (agents run on the namespace, docker and podman executors)",
                        executor.name(),
                        spec.environment
                    ),
                ));
            }
        }
        self.check_agent_cli(&spec.environment, agent.kind, executor)
            .await?;
        // `[llm.budget]`: the server's default where the task names none, never above its max.
        let policy = self
            .config
            .agents
            .as_ref()
            .map(|runtime| runtime.gateway.budget_policy())
            .unwrap_or_default();
        let budget = policy
            .apply(spec.budget)
            .map_err(|message| AdmissionError::InvalidField {
                field: "budget".into(),
                message,
            })?;
        spec.budget = (budget != conductor_types::Budget::default()).then_some(budget);
        let session = SessionId::random();
        if spec.workspace.is_none() {
            // Every turn of the session sees the previous turns' files.
            spec.workspace = Some(session.to_string());
        }
        spec.session_id = Some(session);
        Ok(())
    }

    /// Stores the session an agent task's first turn opened.
    pub(super) async fn open_session(&self, spec: &TaskSpec) -> Result<(), AdmissionError> {
        let (Some(id), Some(agent), None) = (&spec.session_id, &spec.agent, spec.parent_id) else {
            return Ok(());
        };
        let session = Session {
            id: id.clone(),
            kind: agent.kind,
            workspace: spec.workspace.clone().unwrap_or_default(),
            cli_session: None,
            turns: Vec::new(),
            usage: Usage::default(),
            created_at: Timestamp::now(),
        };
        self.store.create_session(&session).await?;
        Ok(())
    }

    /// Refuses an environment without the agent's CLI, naming what to build.
    async fn check_agent_cli(
        &self,
        environment: &str,
        kind: AgentKind,
        executor: &dyn Executor,
    ) -> Result<(), AdmissionError> {
        let key = (environment.to_owned(), kind);
        if self.lock_agent_clis().get(&key).copied() == Some(true) {
            return Ok(());
        }
        let why = match self.probe_cli(kind, executor).await {
            Ok(()) => {
                self.lock_agent_clis().insert(key, true);
                return Ok(());
            }
            Err(why) => why,
        };
        let adapter = adapter(kind);
        Err(refused(
            "environment",
            format!(
                "environment {environment:?} has no {} CLI (`{}` {why}): build the {preset} environment (`conductor env build {preset}`) and name it in `environment`",
                kind.as_str(),
                adapter.probe_argv().join(" "),
                preset = adapter.preset()
            ),
        ))
    }

    /// Whether the CLI's probe runs and exits 0 in the environment (in an empty directory,
    /// without network); `Err`: what happened instead.
    async fn probe_cli(&self, kind: AgentKind, executor: &dyn Executor) -> Result<(), String> {
        let Some(runtime) = &self.config.agents else {
            return Err("was not run: the server has no LLM gateway".into());
        };
        let dir = runtime.sessions.join(".probe");
        std::fs::create_dir_all(&dir).map_err(|e| format!("was not run: {e}"))?;
        let mut request = ExecutionRequest::new(adapter(kind).probe_argv(), dir);
        request.network = NetworkPolicy::None;
        request.timeout = Some(std::time::Duration::from_secs(30));
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<ExecEvent>(16);
        let drain = tokio::spawn(async move { while receiver.recv().await.is_some() {} });
        let outcome = executor.execute(request, sender).await;
        drain.abort();
        match outcome {
            Ok(done) if done.exit_code == 0 => Ok(()),
            Ok(done) => Err(match done.stderr.lines().next() {
                Some(said) => format!(
                    "did not run there: exit {}, {}",
                    done.exit_code,
                    said.trim()
                ),
                None => format!("did not run there: exit {}", done.exit_code),
            }),
            Err(error) => Err(format!("could not be run there: {error}")),
        }
    }

    fn lock_agent_clis(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<(String, AgentKind), bool>> {
        self.agent_clis
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
