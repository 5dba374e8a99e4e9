//! What network a sandbox may reach.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Network access for one execution.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkPolicy {
    /// A private network namespace with only its own loopback.
    #[default]
    None,
    /// Its own loopback plus services listening on the host's loopback; nothing beyond.
    Localhost,
    /// Only the listed hosts (names or addresses).
    Allowlist(Vec<String>),
    /// Outbound internet through a network namespace of its own (NAT): never the host's
    /// loopback, abstract sockets or addresses, link-local metadata, or other sandboxes.
    Full,
    /// The host's own network, unisolated: only the host executor gives it (it can enforce
    /// nothing else); every sandboxing executor refuses it.
    Host,
}

impl NetworkPolicy {
    /// The policy's name as the CLI and API spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Localhost => "localhost",
            Self::Allowlist(_) => "allowlist",
            Self::Full => "full",
            Self::Host => "host",
        }
    }
}

impl fmt::Display for NetworkPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allowlist(hosts) => write!(f, "allowlist:{}", hosts.join(",")),
            other => f.write_str(other.name()),
        }
    }
}

/// A network policy the CLI did not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid network {input:?}: expected none, localhost, full, host or allowlist:HOST[,HOST…]"
)]
pub struct ParseNetworkError {
    /// What was given.
    pub input: String,
}

impl FromStr for NetworkPolicy {
    type Err = ParseNetworkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseNetworkError {
            input: s.to_owned(),
        };
        match s.trim() {
            "none" => Ok(Self::None),
            "localhost" => Ok(Self::Localhost),
            "full" => Ok(Self::Full),
            "host" => Ok(Self::Host),
            other => {
                let hosts = other.strip_prefix("allowlist:").ok_or_else(err)?;
                let hosts: Vec<String> = hosts
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned)
                    .collect();
                if hosts.is_empty() {
                    return Err(err());
                }
                Ok(Self::Allowlist(hosts))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cli_forms() {
        assert_eq!("none".parse(), Ok(NetworkPolicy::None));
        assert_eq!("full".parse(), Ok(NetworkPolicy::Full));
        // `host` was once an alias of `full`; `full` no longer shares the host's network.
        assert_eq!("host".parse(), Ok(NetworkPolicy::Host));
        assert_eq!(
            "allowlist:a.example, b.example".parse(),
            Ok(NetworkPolicy::Allowlist(vec![
                "a.example".into(),
                "b.example".into()
            ]))
        );
        assert!("allowlist:".parse::<NetworkPolicy>().is_err());
        assert!("internet".parse::<NetworkPolicy>().is_err());
    }

    #[test]
    fn serialises_as_snake_case() {
        assert_eq!(
            serde_json::to_string(&NetworkPolicy::None).unwrap(),
            "\"none\""
        );
        assert_eq!(
            serde_json::to_string(&NetworkPolicy::Allowlist(vec!["x".into()])).unwrap(),
            r#"{"allowlist":["x"]}"#
        );
    }
}
