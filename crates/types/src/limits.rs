//! Resource limits a request asks for.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::Bytes;

/// Limits for one execution. `None` means "no limit of our own" (the host's still apply).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// CPU bandwidth in cores (0.5 = half of one core), enforced as a CFS quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
    /// Memory ceiling; swap is not allowed on top of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
    /// Maximum number of processes and threads alive at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    /// Disk space the workspace may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Bytes>,
    /// Per-process rlimits, applied on top of the executor's defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<Rlimit>,
}

/// Most memory a task may ask for: 4 TiB (more is a typo, and the kernel would refuse it late).
pub const MAX_MEMORY: Bytes = Bytes(4 * 1024 * Bytes::GIB);
/// Most disk a task may ask for: 64 TiB.
pub const MAX_DISK: Bytes = Bytes(64 * 1024 * Bytes::GIB);
/// Most pids a task may ask for: the kernel's `PID_MAX_LIMIT`.
pub const MAX_PIDS: u32 = 4 * 1024 * 1024;

/// One limit the server fills in from its defaults when a task names none (the task's
/// `defaults_applied` lists them).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitName {
    /// `resources.memory`.
    Memory,
    /// `resources.cpus`.
    Cpus,
    /// `resources.pids`.
    Pids,
    /// `resources.disk`.
    Disk,
    /// `timeout`.
    Timeout,
}

impl LimitName {
    /// Every limit, in the order they are listed.
    pub const ALL: [LimitName; 5] = [
        Self::Memory,
        Self::Cpus,
        Self::Pids,
        Self::Disk,
        Self::Timeout,
    ];

    /// The name in `defaults_applied` and in the config's `[limits.*]` tables.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Cpus => "cpus",
            Self::Pids => "pids",
            Self::Disk => "disk",
            Self::Timeout => "timeout",
        }
    }

    /// The field of a task request that sets it.
    pub const fn field(self) -> &'static str {
        match self {
            Self::Memory => "resources.memory",
            Self::Cpus => "resources.cpus",
            Self::Pids => "resources.pids",
            Self::Disk => "resources.disk",
            Self::Timeout => "timeout",
        }
    }
}

impl fmt::Display for LimitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A CPU allowance in cores: `0.5`, `2`, `1.25`. Always finite and greater than zero.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Cpus(f64);

impl Cpus {
    /// Validates a core count: finite, above 0.01 and at most 1024.
    pub fn new(cores: f64) -> Result<Self, ParseCpusError> {
        if !cores.is_finite() || !(0.01..=1024.0).contains(&cores) {
            return Err(ParseCpusError {
                input: cores.to_string(),
            });
        }
        Ok(Self(cores))
    }

    /// The number of cores.
    pub fn get(self) -> f64 {
        self.0
    }

    /// The CFS quota in microseconds for the given period.
    pub fn quota_us(self, period_us: u64) -> u64 {
        ((self.0 * period_us as f64).round() as u64).max(1000)
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A CPU count that is not a positive number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid cpus {input:?}: expected a number of cores between 0.01 and 1024, such as 0.5 or 2"
)]
pub struct ParseCpusError {
    /// What was given.
    pub input: String,
}

impl FromStr for Cpus {
    type Err = ParseCpusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseCpusError {
            input: s.to_owned(),
        };
        let cores: f64 = s.trim().parse().map_err(|_| err())?;
        Self::new(cores).map_err(|_| err())
    }
}

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Self::new(n).map_err(serde::de::Error::custom),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// One `setrlimit` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    /// Which limit.
    pub resource: RlimitResource,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit (must be at least `soft`).
    pub hard: u64,
}

/// The rlimits a request may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RlimitResource {
    /// Address space (RLIMIT_AS).
    As,
    /// Core dump size (RLIMIT_CORE).
    Core,
    /// CPU seconds (RLIMIT_CPU).
    Cpu,
    /// Data segment (RLIMIT_DATA).
    Data,
    /// Largest file that may be written (RLIMIT_FSIZE).
    Fsize,
    /// Locked memory (RLIMIT_MEMLOCK).
    Memlock,
    /// Open file descriptors (RLIMIT_NOFILE).
    Nofile,
    /// Processes of the user (RLIMIT_NPROC).
    Nproc,
    /// Stack size (RLIMIT_STACK).
    Stack,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_parse_and_convert_to_quota() {
        let half: Cpus = "0.5".parse().unwrap();
        assert_eq!(half.quota_us(100_000), 50_000);
        assert_eq!("2".parse::<Cpus>().unwrap().quota_us(100_000), 200_000);
        for bad in ["0", "-1", "abc", "NaN", "inf", "2000"] {
            assert!(bad.parse::<Cpus>().is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_deserialise_from_human_json() {
        let limits: ResourceLimits =
            serde_json::from_str(r#"{"cpus": 0.5, "memory": "256m", "pids": 64}"#).unwrap();
        assert_eq!(
            limits,
            ResourceLimits {
                cpus: Some(Cpus::new(0.5).unwrap()),
                memory: Some(Bytes::mib(256)),
                pids: Some(64),
                disk: None,
                rlimits: vec![],
            }
        );
        assert!(serde_json::from_str::<ResourceLimits>(r#"{"memroy": "1g"}"#).is_err());
    }
}
