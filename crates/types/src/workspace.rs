//! Workspaces as an API resource: a named, persistent directory that tasks run in, with its
//! cleanup policy and usage. The policy is kept here as text (`delete`, `keep`, `ttl:7d`); the
//! server parses it with `conductor_workspace::CleanupPolicy` before storing it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Bytes, Timestamp};

/// Text that is not a workspace id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid workspace id {input:?}: expected ws_ and 32 lowercase hex digits")]
pub struct ParseWorkspaceIdError {
    /// What was given.
    pub input: String,
}

/// A workspace's id: `ws_` and 32 lowercase hex digits. No workspace name has this form, so a
/// task's `"workspace"` can hold either.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = String, example = "ws_0f4c1d3b9a8e4f6b8d2c7a1e5b3f9d0c"))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkspaceId(String);

impl WorkspaceId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(format!("ws_{}", uuid::Uuid::new_v4().simple()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for WorkspaceId {
    type Err = ParseWorkspaceIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.strip_prefix("ws_").is_some_and(|hex| {
            hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseWorkspaceIdError {
                input: s.to_owned(),
            })
        }
    }
}

impl TryFrom<String> for WorkspaceId {
    type Error = ParseWorkspaceIdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<WorkspaceId> for String {
    fn from(id: WorkspaceId) -> Self {
        id.0
    }
}

/// A workspace as stored and listed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    /// Its id (`ws_…`).
    pub id: WorkspaceId,
    /// Its unique name; tasks may name it by this or by id.
    pub name: String,
    /// When it is removed: `delete`, `keep` or `ttl:<duration>`.
    pub cleanup: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When a task last started in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Timestamp>,
    /// Bytes of its files, when measured (after a task in it, or a snapshot of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Who created it: the id (`tok_…`) of the token that created it, or that submitted the
    /// task whose first use of the name created it. Absent for workspaces created before owners
    /// were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Its disk quota in bytes, when it has one: its directory is a filesystem of that size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub disk: Option<Bytes>,
}

/// `POST /api/v1/workspaces` body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceRequest {
    /// 1 to 64 letters, digits, `-`, `_` or `.`, not starting with `.` (and not of the id form).
    pub name: String,
    /// `delete` (after the task that uses it), `keep` (the default) or `ttl:<duration>` (such as
    /// `ttl:7d`: removed once unused that long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<String>,
    /// A disk quota (`1g`, `512m` or bytes): the workspace is then a filesystem of its own of
    /// that size, and a task in it may ask for `resources.disk` up to it. Needs a server
    /// running as root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "1g"))]
    pub disk: Option<Bytes>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_refuse_other_forms() {
        let id = WorkspaceId::random();
        assert_eq!(id.to_string().parse::<WorkspaceId>(), Ok(id.clone()));
        assert_eq!(id.as_str().len(), 35);
        for bad in [
            "",
            "ws_",
            "repo",
            "ws_0F4C1D3B9A8E4F6B8D2C7A1E5B3F9D0C",
            "ws_0f4c1d3b9a8e4f6b8d2c7a1e5b3f9d0",
            "xs_0f4c1d3b9a8e4f6b8d2c7a1e5b3f9d0c",
        ] {
            assert!(bad.parse::<WorkspaceId>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&id).unwrap_or_default();
        assert_eq!(json, format!("\"{id}\""));
        assert!(serde_json::from_str::<WorkspaceId>("\"repo\"").is_err());
    }
}
