//! Environments beyond the ones the server started with, through a port the caller provides
//! ([`EnvironmentPort`]; the CLI implements it with `conductor-envs` and its executor factory,
//! so the server depends on neither): environments a task defines in its request (seed 001's
//! `environments: [{name, dockerfile}]`), translated at submission and built before the task's
//! first command, and environments built (`conductor env build`) after the server started,
//! found when a task names them.
//!
//! [`resolve_request`] is the submission side; `scheduler/builds.rs` the run side.

use std::sync::Arc;

use async_trait::async_trait;
use conductor_core::{Executor, DEFAULT_ENVIRONMENT};
use conductor_types::{EnvironmentDefinition, InlineEnvironment, TaskRequest};

use crate::scheduler::AdmissionError;
use crate::Scheduler;

/// Most environments one request may define.
pub const MAX_DEFINITIONS: usize = 16;

/// Receives the lines of a build's progress (`step 2/4: …`, the build's output), without a
/// trailing newline.
pub type Progress = Box<dyn Fn(String) + Send + Sync>;

/// What the server asks of whoever builds environments and makes their executors.
#[async_trait]
pub trait EnvironmentPort: Send + Sync + std::fmt::Debug {
    /// Translates a definition from a request and decides the build it names (its content
    /// hash names it, or it is an existing environment of that name with the same content).
    /// No build, no network: at most the saved spec of an environment of the same name is read.
    fn define(&self, definition: &EnvironmentDefinition) -> Result<InlineEnvironment, DefineError>;

    /// The executor of the environment `name` when it is built now (say, built after the
    /// server started); `Ok(None)` when it is not.
    async fn find(&self, name: &str) -> Result<Option<Arc<dyn Executor>>, String>;

    /// The executor a defined environment runs on (its executor as configured for its name),
    /// whether or not it is built yet.
    async fn executor(&self, inline: &InlineEnvironment) -> Result<Arc<dyn Executor>, String>;

    /// Builds `inline` unless a build of its content exists, reporting through `progress`.
    /// Runs the blocking work off the runtime; the error is the build's, for the task.
    async fn build(&self, inline: &InlineEnvironment, progress: Progress) -> Result<(), String>;

    /// The names of the environments built now, for messages.
    async fn built_names(&self) -> Vec<String>;
}

/// Why a definition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefineError {
    /// The name or the Dockerfile is invalid or outside the supported subset (422
    /// `invalid_dockerfile`); the message names the line and what is supported.
    #[error("{0}")]
    Invalid(String),
    /// The name is an existing environment's with other content, or reserved (409
    /// `environment_conflict`).
    #[error("{0}")]
    Conflict(String),
}

/// What a request's environment turned out to be at submission.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    /// Names to accept besides the server's own environments (the defined one, or one built
    /// after start), or, when the named one is unknown, every built one (for the message).
    pub extra_names: Vec<String>,
    /// The definition the task uses.
    pub inline: Option<InlineEnvironment>,
    /// The executor the task will run on, when known.
    pub executor: Option<Arc<dyn Executor>>,
}

/// Takes the request's `environments` out, checks every definition and resolves the one the
/// task names; also finds an environment built after the server started.
///
/// Defining environments needs an admin token (`admin`): a build runs the Dockerfile's `RUN`
/// steps as root on the server, in a chroot with the host's network — not in a sandbox.
pub(crate) async fn resolve_request(
    scheduler: &Scheduler,
    request: &mut TaskRequest,
    admin: bool,
) -> Result<Resolved, AdmissionError> {
    let definitions = request.environments.take().unwrap_or_default();
    let wanted = request
        .environment
        .as_deref()
        .unwrap_or(DEFAULT_ENVIRONMENT);
    let port = scheduler.environment_port();
    if definitions.is_empty() {
        return resolve_named(scheduler, wanted).await;
    }
    if !admin {
        return Err(AdmissionError::Forbidden(
            "environments: defining an environment needs an admin token: its RUN steps run as root on the server while it is built (in a chroot, not a sandbox); have it built with `conductor env build NAME --dockerfile PATH` and name it in `environment`".to_owned(),
        ));
    }
    let Some(port) = port else {
        return Err(AdmissionError::NotSupported {
            field: "environments".to_owned(),
            message: "environments defined in a request are not supported yet by this server (it has no environment builder)".to_owned(),
        });
    };
    if definitions.len() > MAX_DEFINITIONS {
        return Err(AdmissionError::InvalidField {
            field: "environments".to_owned(),
            message: format!("at most {MAX_DEFINITIONS} environments per request"),
        });
    }
    let mut inline = None;
    for (index, definition) in definitions.iter().enumerate() {
        let field = format!("environments[{index}]");
        if definitions[..index]
            .iter()
            .any(|d| d.name == definition.name)
        {
            return Err(AdmissionError::InvalidField {
                field,
                message: format!("environment {:?} is defined twice", definition.name),
            });
        }
        if definition.name == DEFAULT_ENVIRONMENT {
            return Err(AdmissionError::EnvironmentConflict {
                field,
                message: format!(
                    "environment name {DEFAULT_ENVIRONMENT:?} is reserved (the host's own filesystem): give the definition another name"
                ),
            });
        }
        let defined = port.define(definition).map_err(|error| match error {
            DefineError::Invalid(message) => AdmissionError::InvalidDockerfile {
                field: field.clone(),
                message,
            },
            DefineError::Conflict(message) => AdmissionError::EnvironmentConflict {
                field: field.clone(),
                message,
            },
        })?;
        if definition.name == wanted {
            inline = Some(defined);
        }
    }
    let Some(inline) = inline else {
        // Defined but not used: the task names another environment, resolved as usual.
        return resolve_named(scheduler, wanted).await;
    };
    let executor = port
        .executor(&inline)
        .await
        .map_err(|reason| AdmissionError::InvalidField {
            field: "environment".to_owned(),
            message: reason,
        })?;
    Ok(Resolved {
        extra_names: vec![inline.name.clone()],
        executor: Some(executor),
        inline: Some(inline),
    })
}

/// An environment the request names without defining it: the server's own, or one built
/// after the server started.
async fn resolve_named(scheduler: &Scheduler, wanted: &str) -> Result<Resolved, AdmissionError> {
    if let Some(executor) = scheduler.executor(wanted) {
        return Ok(Resolved {
            executor: Some(Arc::clone(executor)),
            ..Resolved::default()
        });
    }
    let Some(port) = scheduler.environment_port() else {
        return Ok(Resolved::default());
    };
    match port.find(wanted).await {
        Ok(Some(executor)) => Ok(Resolved {
            extra_names: vec![wanted.to_owned()],
            executor: Some(executor),
            inline: None,
        }),
        // Unknown: core refuses it, listing these too.
        Ok(None) => Ok(Resolved {
            extra_names: port.built_names().await,
            ..Resolved::default()
        }),
        Err(reason) => Err(AdmissionError::InvalidField {
            field: "environment".to_owned(),
            message: reason,
        }),
    }
}
