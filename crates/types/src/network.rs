//! What network a sandbox may reach.

use std::fmt;
use std::net::Ipv4Addr;
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

/// The private IPv4 range `full` sandboxes take their /30s from (`10.200.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullNetworkRange {
    base: Ipv4Addr,
    prefix: u8,
}

impl Default for FullNetworkRange {
    fn default() -> Self {
        Self {
            base: Ipv4Addr::new(10, 200, 0, 0),
            prefix: 16,
        }
    }
}

impl fmt::Display for FullNetworkRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl FromStr for FullNetworkRange {
    type Err = String;

    /// `A.B.C.D/N` with N from 8 to 28 and no host bits set.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not an IPv4 range such as 10.200.0.0/16 (/8 to /28)");
        let (base, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        let base: Ipv4Addr = base.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=28).contains(&prefix) || u32::from(base) & !mask(prefix) != 0 {
            return Err(bad());
        }
        Ok(Self { base, prefix })
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl FullNetworkRange {
    /// How many /30s the range holds.
    pub fn slots(&self) -> u32 {
        1 << (30 - u32::from(self.prefix))
    }

    /// The host end's and the sandbox's addresses of `slot`.
    pub fn addresses(&self, slot: u32) -> (Ipv4Addr, Ipv4Addr) {
        let network = u32::from(self.base) + 4 * (slot % self.slots());
        (Ipv4Addr::from(network + 1), Ipv4Addr::from(network + 2))
    }

    /// Whether `address` is in the range.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & mask(self.prefix) == u32::from(self.base)
    }

    /// Whether the range and `other/prefix` share an address.
    pub fn overlaps(&self, other: Ipv4Addr, prefix: u8) -> bool {
        let shorter = prefix.min(self.prefix);
        u32::from(other) & mask(shorter) == u32::from(self.base) & mask(shorter)
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
    fn full_network_ranges_parse_and_give_a_30_per_slot() {
        let range: FullNetworkRange = "10.200.0.0/16".parse().unwrap();
        assert_eq!(range, FullNetworkRange::default());
        assert_eq!(range.to_string(), "10.200.0.0/16");
        assert_eq!(range.slots(), 16384);
        assert_eq!(
            range.addresses(16383),
            (
                Ipv4Addr::new(10, 200, 255, 253),
                Ipv4Addr::new(10, 200, 255, 254)
            )
        );
        assert!(range.contains(Ipv4Addr::new(10, 200, 3, 4)));
        assert!(!range.contains(Ipv4Addr::new(10, 201, 0, 1)));
        for bad in [
            "10.200.0.1/16",
            "10.200.0.0",
            "10.200.0.0/30",
            "x/16",
            "10.0.0.0/4",
        ] {
            assert!(bad.parse::<FullNetworkRange>().is_err(), "{bad}");
        }
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
