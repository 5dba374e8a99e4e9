//! Which executor runs something: the `--executor` flag of `conductor exec`, the server's
//! `executor` and `fallback` keys (global and per environment) — one set of choices.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An executor by kind. Written in lowercase everywhere (flags, config files, JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// The namespace executor where this machine can run it, else the host executor (with a
    /// warning).
    #[default]
    Auto,
    /// Directly on the host: own session and cgroup, host filesystem and network.
    Host,
    /// Linux namespaces: own root filesystem, network, pids, hostname, user mapping, seccomp.
    Namespace,
    /// Docker containers of the environment's image (Docker Engine API on /run/docker.sock).
    Docker,
    /// Podman containers of the environment's image (Podman's API on /run/podman/podman.sock).
    Podman,
}

impl ExecutorKind {
    /// Every kind, in the order help texts list them.
    pub const ALL: [Self; 5] = [
        Self::Auto,
        Self::Host,
        Self::Namespace,
        Self::Docker,
        Self::Podman,
    ];

    /// The name in flags, config files and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Host => "host",
            Self::Namespace => "namespace",
            Self::Docker => "docker",
            Self::Podman => "podman",
        }
    }

    /// Whether it runs containers of an image (Docker or Podman).
    pub const fn is_container(self) -> bool {
        matches!(self, Self::Docker | Self::Podman)
    }
}

impl fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an [`ExecutorKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not an executor: use \"auto\", \"host\", \"namespace\", \"docker\" or \"podman\""
)]
pub struct ParseExecutorKindError {
    /// What was given.
    pub input: String,
}

impl FromStr for ExecutorKind {
    type Err = ParseExecutorKindError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| ParseExecutorKindError {
                input: text.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for kind in ExecutorKind::ALL {
            assert_eq!(kind.as_str().parse::<ExecutorKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<ExecutorKind>(&json).unwrap(), kind);
        }
        assert_eq!(" host ".parse::<ExecutorKind>(), Ok(ExecutorKind::Host));
    }

    #[test]
    fn refuses_other_names_and_lists_the_choices() {
        assert_eq!(
            "kvm".parse::<ExecutorKind>().unwrap_err().to_string(),
            "\"kvm\" is not an executor: use \"auto\", \"host\", \"namespace\", \"docker\" or \"podman\""
        );
        assert!("Host".parse::<ExecutorKind>().is_err());
    }
}
