//! Identifiers: of a task ([`TaskId`]), of one execution ([`ExecutionId`]), of an event in the
//! global log ([`EventId`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Identifies one execution of one request on one executor (cancel uses it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExecutionId(uuid::Uuid);

impl ExecutionId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// A short form (first 12 hex digits) for names with length limits: cgroups, hostnames.
    pub fn short(&self) -> String {
        self.0.simple().to_string()[..12].to_owned()
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Identifies one task for its whole life, across retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(uuid::Uuid);

impl TaskId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Identifies an event; increases monotonically across all tasks (SSE `id:` and `Last-Event-ID`).
pub type EventId = i64;

/// Error for an id that is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id {input:?}: expected a UUID such as 67e55044-10b1-426f-9247-bb680e5fe0c8")]
pub struct ParseIdError {
    /// What was given.
    pub input: String,
}

/// `text` as a UUID, or the error that names it.
fn parse_uuid(text: &str) -> Result<uuid::Uuid, ParseIdError> {
    uuid::Uuid::parse_str(text).map_err(|_| ParseIdError {
        input: text.to_owned(),
    })
}

impl FromStr for TaskId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_uuid(s).map(Self)
    }
}

impl FromStr for ExecutionId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_uuid(s).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_display() {
        let id = ExecutionId::random();
        assert_eq!(id.to_string().parse::<ExecutionId>(), Ok(id.clone()));
        assert_eq!(id.short().len(), 12);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            "nope".parse::<ExecutionId>(),
            Err(ParseIdError {
                input: "nope".into()
            })
        );
    }
}
