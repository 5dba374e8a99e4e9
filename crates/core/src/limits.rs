//! Server-wide limits: the defaults a task gets for every limit it names none of, and the maxima
//! a request may not exceed. Pure: the caller says which limits the task's executor can enforce.

use std::time::Duration;

use conductor_types::{Bytes, Cpus, LimitName, TaskSpec};

/// A value for each limit; `None` leaves it unset.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LimitSet {
    /// `resources.memory`.
    pub memory: Option<Bytes>,
    /// `resources.cpus`.
    pub cpus: Option<Cpus>,
    /// `resources.pids`.
    pub pids: Option<u32>,
    /// `resources.disk`.
    pub disk: Option<Bytes>,
    /// `timeout`.
    pub timeout: Option<Duration>,
}

/// A limit's value, of whichever kind it is.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
enum Value {
    Bytes(Bytes),
    Cpus(f64),
    Count(u32),
    Time(Duration),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(bytes) => bytes.fmt(f),
            Self::Cpus(cores) => cores.fmt(f),
            Self::Count(count) => count.fmt(f),
            Self::Time(time) => humantime::format_duration(*time).fmt(f),
        }
    }
}

impl LimitSet {
    fn get(&self, limit: LimitName) -> Option<Value> {
        match limit {
            LimitName::Memory => self.memory.map(Value::Bytes),
            LimitName::Cpus => self.cpus.map(|c| Value::Cpus(c.get())),
            LimitName::Pids => self.pids.map(Value::Count),
            LimitName::Disk => self.disk.map(Value::Bytes),
            LimitName::Timeout => self.timeout.map(Value::Time),
        }
    }

    /// Whether `limit` has a value here.
    pub fn is_given(&self, limit: LimitName) -> bool {
        self.get(limit).is_some()
    }

    /// Takes `limit`'s value away (no default, or no maximum, for it).
    pub fn clear(&mut self, limit: LimitName) {
        self.take(&LimitSet::default(), limit);
    }

    /// The limits `spec` asks for.
    pub fn of(spec: &TaskSpec) -> Self {
        Self {
            memory: spec.resources.memory,
            cpus: spec.resources.cpus,
            pids: spec.resources.pids,
            disk: spec.resources.disk,
            timeout: spec.timeout,
        }
    }

    /// Copies `limit` from `other` into `self`.
    fn take(&mut self, other: &LimitSet, limit: LimitName) {
        match limit {
            LimitName::Memory => self.memory = other.memory,
            LimitName::Cpus => self.cpus = other.cpus,
            LimitName::Pids => self.pids = other.pids,
            LimitName::Disk => self.disk = other.disk,
            LimitName::Timeout => self.timeout = other.timeout,
        }
    }
}

/// `[limits.default]` and `[limits.max]`, resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitPolicy {
    /// What a task gets for a limit it names none of (where its executor can enforce it).
    pub default: LimitSet,
    /// What a task may ask for at most; a limit with a maximum and no default gets the maximum.
    pub max: LimitSet,
}

impl LimitPolicy {
    /// Built-in default memory: 2 GiB.
    pub const DEFAULT_MEMORY: Bytes = Bytes(2 * Bytes::GIB);
    /// Built-in default pids: 512.
    pub const DEFAULT_PIDS: u32 = 512;
    /// Built-in default disk (where the scheduler or the executor can enforce it): 10 GiB.
    pub const DEFAULT_DISK: Bytes = Bytes(10 * Bytes::GIB);
    /// Built-in default timeout: one hour.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

    /// The built-in policy: 2 GiB, 1 CPU, 512 pids, 10 GiB of disk, 1 h; no maxima.
    pub fn builtin() -> Self {
        Self {
            default: LimitSet {
                memory: Some(Self::DEFAULT_MEMORY),
                cpus: Cpus::new(1.0).ok(),
                pids: Some(Self::DEFAULT_PIDS),
                disk: Some(Self::DEFAULT_DISK),
                timeout: Some(Self::DEFAULT_TIMEOUT),
            },
            max: LimitSet::default(),
        }
    }

    /// Nothing by default, no maxima: what `conductor exec` and tests of other things use.
    pub fn unlimited() -> Self {
        Self {
            default: LimitSet::default(),
            max: LimitSet::default(),
        }
    }

    /// The first limit whose default is above its maximum (a config that cannot be applied).
    pub fn inconsistent(&self) -> Option<LimitError> {
        LimitName::ALL.into_iter().find_map(|limit| {
            match (self.default.get(limit), self.max.get(limit)) {
                (Some(default), Some(max)) if default > max => Some(LimitError {
                    limit,
                    asked: default.to_string(),
                    max: max.to_string(),
                }),
                _ => None,
            }
        })
    }
}

impl Default for LimitPolicy {
    fn default() -> Self {
        Self::builtin()
    }
}

/// A request above a server maximum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} asks for {asked}, above the server's maximum of {max} ([limits.max] {limit})", limit.field())]
pub struct LimitError {
    /// Which limit.
    pub limit: LimitName,
    /// What was asked for.
    pub asked: String,
    /// The maximum.
    pub max: String,
}

/// Checks `spec`'s limits against `policy.max`, then fills in each limit it names none of from
/// the policy (its default, else its maximum) where `enforceable(limit)` says the task's executor
/// (or the scheduler) can enforce it. Returns the limits filled in, in [`LimitName::ALL`] order.
pub fn apply_limits(
    spec: &mut TaskSpec,
    policy: &LimitPolicy,
    enforceable: impl Fn(LimitName) -> bool,
) -> Result<Vec<LimitName>, LimitError> {
    let mut asked = LimitSet::of(spec);
    for limit in LimitName::ALL {
        if let (Some(value), Some(max)) = (asked.get(limit), policy.max.get(limit)) {
            if value > max {
                return Err(LimitError {
                    limit,
                    asked: value.to_string(),
                    max: max.to_string(),
                });
            }
        }
    }
    let mut applied = Vec::new();
    for limit in LimitName::ALL {
        if asked.get(limit).is_some() || !enforceable(limit) {
            continue;
        }
        let source = if policy.default.get(limit).is_some() {
            &policy.default
        } else {
            &policy.max
        };
        if source.get(limit).is_some() {
            asked.take(source, limit);
            applied.push(limit);
        }
    }
    spec.resources.memory = asked.memory;
    spec.resources.cpus = asked.cpus;
    spec.resources.pids = asked.pids;
    spec.resources.disk = asked.disk;
    spec.timeout = asked.timeout;
    Ok(applied)
}

/// The limits `spec` leaves unlimited (for `conductor exec` to say so).
pub fn unlimited(spec: &LimitSet) -> Vec<LimitName> {
    LimitName::ALL
        .into_iter()
        .filter(|limit| spec.get(*limit).is_none())
        .collect()
}

#[cfg(test)]
mod tests {
    use conductor_types::{TaskRequest, TaskSpec};

    use super::*;

    fn spec(json: &str) -> TaskSpec {
        let request: TaskRequest = serde_json::from_str(json).unwrap();
        crate::validate_request(request, &["host"]).unwrap().spec
    }

    #[test]
    fn defaults_fill_what_the_task_names_none_of() {
        let mut task = spec(r#"{"commands": ["true"], "resources": {"memory": "256m"}}"#);
        let applied = apply_limits(&mut task, &LimitPolicy::builtin(), |_| true).unwrap();
        assert_eq!(
            applied,
            [
                LimitName::Cpus,
                LimitName::Pids,
                LimitName::Disk,
                LimitName::Timeout
            ]
        );
        assert_eq!(
            LimitSet::of(&task),
            LimitSet {
                memory: Some(Bytes::mib(256)),
                cpus: Cpus::new(1.0).ok(),
                pids: Some(512),
                disk: Some(Bytes(10 * Bytes::GIB)),
                timeout: Some(Duration::from_secs(3600)),
            }
        );
    }

    #[test]
    fn only_enforceable_limits_get_a_default() {
        let mut task = spec(r#"{"commands": ["true"]}"#);
        let applied = apply_limits(&mut task, &LimitPolicy::builtin(), |limit| {
            limit == LimitName::Timeout
        })
        .unwrap();
        assert_eq!(applied, [LimitName::Timeout]);
        assert_eq!(
            LimitSet::of(&task),
            LimitSet {
                timeout: Some(Duration::from_secs(3600)),
                ..LimitSet::default()
            }
        );
    }

    #[test]
    fn a_maximum_refuses_more_and_serves_as_the_default() {
        let policy = LimitPolicy {
            default: LimitSet::default(),
            max: LimitSet {
                memory: Some(Bytes::mib(512)),
                timeout: Some(Duration::from_secs(600)),
                ..LimitSet::default()
            },
        };
        let mut task = spec(r#"{"commands": ["true"], "resources": {"memory": "1g"}}"#);
        assert_eq!(
            apply_limits(&mut task, &policy, |_| true)
                .unwrap_err()
                .to_string(),
            "resources.memory asks for 1g, above the server's maximum of 512m ([limits.max] memory)"
        );
        let mut task = spec(r#"{"commands": ["true"], "timeout": "2h"}"#);
        assert_eq!(
            apply_limits(&mut task, &policy, |_| true)
                .unwrap_err()
                .to_string(),
            "timeout asks for 2h, above the server's maximum of 10m ([limits.max] timeout)"
        );
        let mut task = spec(r#"{"commands": ["true"], "resources": {"memory": "512m"}}"#);
        let applied = apply_limits(&mut task, &policy, |_| true).unwrap();
        assert_eq!(applied, [LimitName::Timeout]);
        assert_eq!(task.timeout, Some(Duration::from_secs(600)));
        assert_eq!(task.resources.memory, Some(Bytes::mib(512)));
    }

    #[test]
    fn a_default_above_its_maximum_is_inconsistent() {
        let mut policy = LimitPolicy::builtin();
        policy.max.pids = Some(100);
        assert_eq!(
            policy.inconsistent().map(|e| e.to_string()),
            Some(
                "resources.pids asks for 512, above the server's maximum of 100 ([limits.max] pids)"
                    .to_owned()
            )
        );
        assert_eq!(LimitPolicy::builtin().inconsistent(), None);
    }

    #[test]
    fn unlimited_names_what_is_unset() {
        let set = LimitSet {
            memory: Some(Bytes::mib(64)),
            ..LimitSet::default()
        };
        assert_eq!(
            unlimited(&set),
            [
                LimitName::Cpus,
                LimitName::Pids,
                LimitName::Disk,
                LimitName::Timeout
            ]
        );
    }
}
