//! `[limits.default]` and `[limits.max]` in the config file: raw tables of optional values,
//! resolved over the built-in defaults into a `conductor_core::LimitPolicy`.
//!
//! ```toml
//! [limits.default]   # what a task that names none gets (built in: 2g, 1 cpu, 512 pids, 10g disk, 1h)
//! memory = "1g"
//! [limits.max]       # the most a task may ask for (none built in); also the default where
//! memory = "8g"      # [limits.default] leaves a limit out
//! timeout = "6h"
//! ```
//!
//! `none = ["disk"]` in `[limits.default]` takes the built-in default of those limits away: tasks
//! that name none then run without them (on a root server, no quota image per fresh workspace).

use conductor_core::{LimitPolicy, LimitSet, MAX_TIMEOUT};
use conductor_types::{parse_duration, Bytes, Cpus, LimitName, MAX_DISK, MAX_MEMORY, MAX_PIDS};
use serde::{Deserialize, Serialize};

/// `[limits]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// `[limits.default]`: over the built-in defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<RawLimitSet>,
    /// `[limits.max]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<RawLimitSet>,
}

/// One of `[limits.default]` and `[limits.max]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimitSet {
    /// Memory (`2g`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
    /// CPU cores (`1`, `0.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
    /// Processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    /// Disk space of a task's fresh workspace (`10g`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Bytes>,
    /// Time for the whole task (`1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// `[limits.default]` only: limits with no default at all (`["disk"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub none: Vec<LimitName>,
}

/// Resolves `raw` over the built-in policy; the error names the table and key.
pub fn resolve(raw: &RawLimits) -> Result<LimitPolicy, String> {
    let mut policy = LimitPolicy::builtin();
    if let Some(default) = &raw.default {
        let set = parse_set("[limits.default]", default)?;
        let builtin = policy.default;
        policy.default = LimitSet {
            memory: set.memory.or(builtin.memory),
            cpus: set.cpus.or(builtin.cpus),
            pids: set.pids.or(builtin.pids),
            disk: set.disk.or(builtin.disk),
            timeout: set.timeout.or(builtin.timeout),
        };
        for name in &default.none {
            if set.is_given(*name) {
                return Err(format!(
                    "[limits.default] {name} is both given and listed in none: keep one"
                ));
            }
            policy.default.clear(*name);
        }
    }
    if let Some(max) = &raw.max {
        if !max.none.is_empty() {
            return Err(
                "[limits.max] none: only [limits.default] has it (a maximum left out is none)"
                    .to_owned(),
            );
        }
        policy.max = parse_set("[limits.max]", max)?;
    }
    if let Some(error) = policy.inconsistent() {
        return Err(format!(
            "[limits.default] {} is {}, above [limits.max] {} = {}",
            error.limit, error.asked, error.limit, error.max
        ));
    }
    Ok(policy)
}

fn parse_set(table: &str, raw: &RawLimitSet) -> Result<LimitSet, String> {
    let out_of_range = |key: &str, range: String| format!("{table} {key}: must be {range}");
    if raw
        .memory
        .is_some_and(|m| m < Bytes::mib(4) || m > MAX_MEMORY)
    {
        return Err(out_of_range(
            "memory",
            format!("between 4m and {MAX_MEMORY}"),
        ));
    }
    if raw.disk.is_some_and(|d| d < Bytes::mib(1) || d > MAX_DISK) {
        return Err(out_of_range("disk", format!("between 1m and {MAX_DISK}")));
    }
    if raw.pids.is_some_and(|p| p == 0 || p > MAX_PIDS) {
        return Err(out_of_range("pids", format!("between 1 and {MAX_PIDS}")));
    }
    let timeout = match &raw.timeout {
        Some(text) => {
            let timeout = parse_duration(text).map_err(|e| format!("{table} timeout: {e}"))?;
            if timeout.is_zero() || timeout > MAX_TIMEOUT {
                return Err(out_of_range(
                    "timeout",
                    "longer than zero and at most 7 days".into(),
                ));
            }
            Some(timeout)
        }
        None => None,
    };
    Ok(LimitSet {
        memory: raw.memory,
        cpus: raw.cpus,
        pids: raw.pids,
        disk: raw.disk,
        timeout,
    })
}

/// `policy` as the config file writes it (every value spelt out).
pub fn to_raw(policy: &LimitPolicy) -> RawLimits {
    let set = |set: &LimitSet| RawLimitSet {
        memory: set.memory,
        cpus: set.cpus,
        pids: set.pids,
        disk: set.disk,
        timeout: set
            .timeout
            .map(|t| humantime::format_duration(t).to_string()),
        none: Vec::new(),
    };
    let max = set(&policy.max);
    let mut default = set(&policy.default);
    default.none = LimitName::ALL
        .into_iter()
        .filter(|name| !policy.default.is_given(*name))
        .collect();
    RawLimits {
        default: Some(default),
        max: (max != RawLimitSet::default()).then_some(max),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> Result<LimitPolicy, String> {
        let raw: RawLimits = toml::from_str(text).map_err(|e| e.to_string())?;
        resolve(&raw)
    }

    #[test]
    fn tables_override_the_builtin_defaults() {
        let policy =
            parse("[default]\nmemory = \"1g\"\n[max]\nmemory = \"8g\"\ntimeout = \"6h\"\n")
                .unwrap();
        assert_eq!(
            policy,
            LimitPolicy {
                default: LimitSet {
                    memory: Some(Bytes(Bytes::GIB)),
                    ..LimitPolicy::builtin().default
                },
                max: LimitSet {
                    memory: Some(Bytes(8 * Bytes::GIB)),
                    timeout: Some(Duration::from_secs(6 * 3600)),
                    ..LimitSet::default()
                },
            }
        );
        assert_eq!(resolve(&to_raw(&policy)).unwrap(), policy);
    }

    #[test]
    fn none_takes_a_builtin_default_away_and_survives_a_round_trip() {
        let policy = parse("[default]\nnone = [\"disk\", \"timeout\"]\n").unwrap();
        assert_eq!(
            policy.default,
            LimitSet {
                disk: None,
                timeout: None,
                ..LimitPolicy::builtin().default
            }
        );
        let raw = to_raw(&policy);
        assert_eq!(
            raw.default.as_ref().map(|d| d.none.clone()),
            Some(vec![LimitName::Disk, LimitName::Timeout])
        );
        assert_eq!(resolve(&raw).unwrap(), policy);
        assert_eq!(
            parse("[default]\ndisk = \"1g\"\nnone = [\"disk\"]\n").unwrap_err(),
            "[limits.default] disk is both given and listed in none: keep one"
        );
        assert_eq!(
            parse("[max]\nnone = [\"disk\"]\n").unwrap_err(),
            "[limits.max] none: only [limits.default] has it (a maximum left out is none)"
        );
        assert!(parse("[default]\nnone = [\"swap\"]\n").is_err());
    }

    #[test]
    fn bad_values_name_the_table_and_key() {
        let cases = [
            (
                "[default]\npids = 0\n",
                "[limits.default] pids: must be between 1 and 4194304",
            ),
            (
                "[max]\nmemory = \"1k\"\n",
                "[limits.max] memory: must be between 4m and 4t",
            ),
            (
                "[max]\ndisk = 9223372036854775807\n",
                "[limits.max] disk: must be between 1m and 64t",
            ),
            (
                "[default]\ntimeout = \"8d\"\n",
                "[limits.default] timeout: must be longer than zero and at most 7 days",
            ),
            (
                "[max]\npids = 100\n",
                "[limits.default] pids is 512, above [limits.max] pids = 100",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text).unwrap_err(), expected, "{text}");
        }
        assert!(parse("[default]\nmemroy = \"1g\"\n")
            .unwrap_err()
            .contains("unknown field `memroy`"));
    }
}
