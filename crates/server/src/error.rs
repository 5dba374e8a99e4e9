//! The one error type of the HTTP API. Every failure becomes `{ "error": { "code", "message" } }`
//! with a stable code here, and only here; internal details are logged, never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use conductor_core::{SpecError, StoreError};
use conductor_types::{ApiError, ApiErrorBody};

use crate::scheduler::AdmissionError;
use crate::workspaces::domain::WorkspaceError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A message to an agent session that cannot become its next turn now (409, with the
    /// reason's code: `turn_in_progress`, `not_latest_turn`).
    #[error("{message}")]
    TurnConflict {
        /// Stable code.
        code: &'static str,
        /// What to do instead.
        message: String,
    },
    /// A message sent to a task that is not an agent task (422).
    #[error("{0}")]
    NotAnAgentTask(String),
    /// The body is not JSON (400).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// A field has a bad value or is unknown (422).
    #[error("{field}: {message}")]
    InvalidField {
        /// The field's path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Valid, but not built yet (422).
    #[error("{field}: {message}")]
    NotSupported {
        /// The field's path.
        field: String,
        /// What is not supported.
        message: String,
    },
    /// A Dockerfile in the request's `environments` that cannot be translated (422).
    #[error("{field}: {message}")]
    InvalidDockerfile {
        /// The definition (`environments[0]`).
        field: String,
        /// What is wrong, with the line and what is supported.
        message: String,
    },
    /// An environment defined in the request under the name of another one (409).
    #[error("{field}: {message}")]
    EnvironmentConflict {
        /// The definition (`environments[0]`).
        field: String,
        /// Which environment and why.
        message: String,
    },
    /// A limit above the server's maximum (422 `limit_exceeded`).
    #[error("{error}")]
    LimitExceeded {
        /// Which limit, what was asked and the maximum.
        error: conductor_core::LimitError,
    },
    /// A task's `git.repository` that may not be cloned here: a transport other than
    /// https/http/git/ssh, or a local path outside `[git] allow_local` (422).
    #[error("git.repository: {0}")]
    RepositoryNotAllowed(String),
    /// A query parameter or path segment is wrong (400).
    #[error("{message}")]
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No or a bad token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The token may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Nothing there (404).
    #[error("{0}")]
    NotFound(String),
    /// A known path, another method (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The resource's state forbids it (409).
    #[error("{0}")]
    Conflict(String),
    /// A conditional request's precondition does not hold: the file changed since its `ETag`
    /// was read, or exists where `If-None-Match: *` asked for none (412).
    #[error("{0}")]
    PreconditionFailed(String),
    /// The body is over the limit (413).
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// An endpoint that is not built yet (501).
    #[error("{0}")]
    NotImplemented(String),
    /// A dependency is down (503).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a failing database (500); the detail is logged only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// The HTTP status and the stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::TurnConflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::NotAnAgentTask(_) => (StatusCode::UNPROCESSABLE_ENTITY, "not_an_agent_task"),
            Self::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            Self::InvalidField { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            Self::NotSupported { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "not_supported"),
            Self::InvalidDockerfile { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_dockerfile")
            }
            Self::EnvironmentConflict { .. } => (StatusCode::CONFLICT, "environment_conflict"),
            Self::LimitExceeded { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
            Self::RepositoryNotAllowed(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "repository_not_allowed")
            }
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "not_supported"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<crate::agents::sessions::SessionError> for AppError {
    fn from(error: crate::agents::sessions::SessionError) -> Self {
        use crate::agents::sessions::SessionError as E;
        use conductor_core::TurnError;
        let text = error.to_string();
        match error {
            E::TaskNotFound(_) | E::NotFound(_) => Self::NotFound(text),
            E::Turn(TurnError::NotAnAgentTask(_)) => Self::NotAnAgentTask(text),
            E::Turn(TurnError::NotLatestTurn { .. }) => Self::TurnConflict {
                code: "not_latest_turn",
                message: text,
            },
            E::Turn(TurnError::TurnInProgress(..)) => Self::TurnConflict {
                code: "turn_in_progress",
                message: text,
            },
            E::Turn(TurnError::InvalidContent(_)) => Self::InvalidField {
                field: "content".into(),
                message: text.trim_start_matches("content ").to_owned(),
            },
            E::Store(error) => error.into(),
        }
    }
}

impl From<SpecError> for AppError {
    fn from(error: SpecError) -> Self {
        if error.not_supported {
            Self::NotSupported {
                field: error.field,
                message: error.reason,
            }
        } else {
            Self::InvalidField {
                field: error.field,
                message: error.reason,
            }
        }
    }
}

impl From<conductor_core::LimitError> for AppError {
    fn from(error: conductor_core::LimitError) -> Self {
        Self::LimitExceeded { error }
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::TaskNotFound(_) | StoreError::WorkspaceNotFound(_) => {
                Self::NotFound(error.to_string())
            }
            StoreError::Transition(_)
            | StoreError::NotFinished { .. }
            | StoreError::WorkspaceExists(_)
            | StoreError::WorkspaceInUse { .. } => Self::Conflict(error.to_string()),
            StoreError::InvalidCursor(_) => Self::BadRequest {
                code: "invalid_cursor",
                message: error.to_string(),
            },
            StoreError::Backend { .. } | StoreError::Corrupt { .. } => {
                Self::Internal(error.to_string())
            }
        }
    }
}

impl From<WorkspaceError> for AppError {
    fn from(error: WorkspaceError) -> Self {
        match error {
            WorkspaceError::InvalidField { field, message } => {
                Self::InvalidField { field, message }
            }
            WorkspaceError::NotSupported { field, message } => {
                Self::NotSupported { field, message }
            }
            WorkspaceError::LimitExceeded(error) => Self::LimitExceeded { error },
            WorkspaceError::Store(error) => error.into(),
            setup @ WorkspaceError::Setup { .. } => Self::Internal(setup.to_string()),
        }
    }
}

impl From<AdmissionError> for AppError {
    fn from(error: AdmissionError) -> Self {
        use AdmissionError as E;
        // The typed checks' messages leave their field out: it is named here.
        let text = error.to_string();
        let invalid = |field: &str| Self::InvalidField {
            field: field.to_owned(),
            message: text.clone(),
        };
        match error {
            E::Forbidden(message) => Self::Forbidden(message),
            E::InvalidField { field, message } => Self::InvalidField { field, message },
            E::NotSupported { field, message } => Self::NotSupported { field, message },
            E::InvalidDockerfile { field, message } => Self::InvalidDockerfile { field, message },
            E::EnvironmentConflict { field, message } => {
                Self::EnvironmentConflict { field, message }
            }
            E::Spec(error) => error.into(),
            E::Limit(error) => error.into(),
            E::RepositoryNotAllowed(message) => Self::RepositoryNotAllowed(message),
            E::Unsupported { field, .. } => Self::NotSupported {
                field: field.to_owned(),
                message: text,
            },
            E::DiskBelowMinimum { .. } => invalid("resources.disk"),
            E::CpusOverBudget { .. } => invalid("resources.cpus"),
            E::MemoryOverBudget { .. } => invalid("resources.memory"),
            E::Workspace(error) => error.into(),
            E::Store(error) => error.into(),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            Self::Internal(detail) => {
                tracing::error!(%detail, "request failed");
                "internal error: the server logged the details".to_owned()
            }
            other => other.to_string(),
        };
        let body = ApiErrorBody {
            error: ApiError {
                code: code.to_owned(),
                message,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
