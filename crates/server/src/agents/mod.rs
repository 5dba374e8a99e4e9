//! What agent tasks need from the server (issue 12), apart from the HTTP handlers and the run
//! stages: the LLM gateway and its socket, where sessions keep their agent's private home and
//! where each task's raw agent stream is kept, the prompt templates, and the audit sink that
//! stores one record per gateway request.
//!
//! The sandbox never holds the provider key: a task's run gets a per-task token from
//! [`AgentRuntime::gateway`], and its sandbox reaches the gateway through a port bridged on its
//! own loopback ([`GATEWAY_PORT`]) to [`AgentRuntime::socket`] on the host.

mod home;
pub(crate) mod sessions;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use conductor_core::{PromptTemplates, Store};
use conductor_gateway::{Gateway, RequestRecord, UsageSink};
use conductor_types::{LlmRequest, SessionId, TaskId, Timestamp};

pub(crate) use home::{prepare_home, HomeMount, HOME_QUOTA};

/// The port on each sandbox's own loopback where the gateway answers.
pub const GATEWAY_PORT: u16 = 4141;
/// The uid agent CLIs run as inside sandboxes that map more than one uid.
pub const AGENT_UID: u32 = 1000;

/// The gateway and the places agent tasks use on the host.
#[derive(Clone)]
pub struct AgentRuntime {
    /// Holds the provider keys, meters and budgets every request.
    pub gateway: Arc<Gateway>,
    /// The gateway's Unix socket (0600, in a 0700 directory), bridged into sandboxes.
    pub socket: PathBuf,
    /// `<home>/sessions/<session id>/home`: each session's agent home.
    pub sessions: PathBuf,
    /// `<home>/agent-streams/<task id>.jsonl`: each task's raw agent stream, redacted.
    pub streams: PathBuf,
    /// Prompts of the seed's agent task types.
    pub templates: PromptTemplates,
}

impl std::fmt::Debug for AgentRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRuntime")
            .field("socket", &self.socket)
            .field("sessions", &self.sessions)
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

impl AgentRuntime {
    /// The directories under `home` (made 0700), the gateway on `home/run/llm.sock`.
    pub fn new(
        home: &Path,
        gateway: Arc<Gateway>,
        templates: PromptTemplates,
    ) -> std::io::Result<Self> {
        let run = home.join("run");
        let sessions = home.join("sessions");
        let streams = home.join("agent-streams");
        crate::hostdirs::make_private(&[run.clone(), sessions.clone(), streams.clone()])?;
        Ok(Self {
            gateway,
            socket: run.join("llm.sock"),
            sessions,
            streams,
            templates,
        })
    }

    /// Where task `id`'s raw agent stream is kept.
    pub fn stream_file(&self, id: TaskId) -> PathBuf {
        self.streams.join(format!("{id}.jsonl"))
    }

    /// Serves the gateway on its socket until the process ends.
    pub fn serve(&self) {
        let gateway = Arc::clone(&self.gateway);
        let socket = self.socket.clone();
        tokio::spawn(async move {
            if let Err(error) = gateway.serve_unix(&socket).await {
                tracing::error!(%error, "the LLM gateway stopped");
            }
        });
    }
}

/// Stores each gateway request's audit record (in the background: the request is not held up).
#[derive(Debug)]
pub struct StoreSink {
    store: Arc<dyn Store>,
}

impl StoreSink {
    /// Records into `store`.
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self { store })
    }
}

impl UsageSink for StoreSink {
    fn record(&self, record: RequestRecord) {
        let request = LlmRequest {
            task_id: record.task,
            session_id: record
                .session
                .as_deref()
                .and_then(|s| s.parse::<SessionId>().ok()),
            model: record.model,
            status: record.status,
            usage: record.usage,
            latency_ms: u64::try_from(record.latency.as_millis()).unwrap_or(u64::MAX),
            at: Timestamp::now(),
        };
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            if let Err(error) = store.record_llm_request(&request).await {
                tracing::warn!(task = %request.task_id, %error, "recording an LLM request failed");
            }
        });
    }
}
