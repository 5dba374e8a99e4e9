//! What happens to a workspace when nothing uses it: the cleanup policy, and the pure decision
//! the server's sweeper takes from it (no clock, no I/O: `now` is an argument).
//!
//! A policy is written as one string, in the API and in the CLI alike: `"delete"`, `"keep"`,
//! or `"ttl:<duration>"` (`"ttl:7d"`, `"ttl:12h"`, `"ttl:90m"`; the duration syntax of
//! [`conductor_types::parse_duration`]) — the same `kind:argument` shape as the network
//! policy's `allowlist:…`.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// When a workspace is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CleanupPolicy {
    /// As soon as no task uses it (the default for a task's own workspace).
    #[default]
    Delete,
    /// Never by the sweeper; only an explicit delete (for debugging, or named workspaces).
    Keep,
    /// Once unused for this long after its last use.
    Ttl(Duration),
}

/// A policy string that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cleanup policy {input:?}: {reason} (expected delete, keep or ttl:DURATION such as ttl:7d)")]
pub struct ParsePolicyError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for CleanupPolicy {
    type Err = ParsePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| ParsePolicyError {
            input: s.to_owned(),
            reason,
        };
        match s.trim() {
            "delete" => Ok(Self::Delete),
            "keep" => Ok(Self::Keep),
            other => {
                let ttl = other
                    .strip_prefix("ttl:")
                    .ok_or_else(|| error("unknown policy".into()))?;
                conductor_types::parse_duration(ttl)
                    .map(Self::Ttl)
                    .map_err(|e| error(e.reason))
            }
        }
    }
}

impl fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Delete => f.write_str("delete"),
            Self::Keep => f.write_str("keep"),
            Self::Ttl(ttl) => write!(f, "ttl:{}", compact(*ttl)),
        }
    }
}

/// `7d`, `12h`, `90m`, `45s` or `1500ms`: the largest unit that divides the duration exactly,
/// so the text parses back to the same value.
fn compact(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= len && ms.is_multiple_of(len) {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{ms}ms")
}

impl Serialize for CleanupPolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CleanupPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The sweeper's verdict on one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Remove it now.
    Now,
    /// Not yet; look again at this time (if still unused).
    At(SystemTime),
    /// Not while the policy stays as it is (`keep`), or not while a task uses it.
    Never,
}

/// Whether a workspace with `policy`, last used at `last_used`, is due for removal at `now`.
/// A workspace in use is never due. A `last_used` in the future (clock moved back) counts as
/// `now`, so a TTL is never cut short.
pub fn due(policy: CleanupPolicy, last_used: SystemTime, now: SystemTime, in_use: bool) -> Due {
    if in_use {
        return Due::Never;
    }
    match policy {
        CleanupPolicy::Keep => Due::Never,
        CleanupPolicy::Delete => Due::Now,
        CleanupPolicy::Ttl(ttl) => {
            let since = last_used.min(now);
            match since.checked_add(ttl) {
                Some(expiry) if expiry <= now => Due::Now,
                Some(expiry) => Due::At(expiry),
                None => Due::Never,
            }
        }
    }
}

/// One workspace as the sweeper sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepCandidate<K> {
    /// The caller's key (a workspace id).
    pub key: K,
    /// Its policy.
    pub policy: CleanupPolicy,
    /// When a task last used it (or when it was created).
    pub last_used: SystemTime,
    /// Whether a task uses it now.
    pub in_use: bool,
}

/// What one sweep should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepPlan<K> {
    /// Remove these now, in the candidates' order.
    pub remove: Vec<K>,
    /// The earliest time another workspace becomes due (sleep until then, or until a workspace
    /// changes); `None` when nothing is waiting on a TTL.
    pub next: Option<SystemTime>,
}

/// Decides a whole sweep at `now`.
pub fn plan_sweep<K: Clone>(candidates: &[SweepCandidate<K>], now: SystemTime) -> SweepPlan<K> {
    let mut plan = SweepPlan {
        remove: Vec::new(),
        next: None,
    };
    for c in candidates {
        match due(c.policy, c.last_used, now, c.in_use) {
            Due::Now => plan.remove.push(c.key.clone()),
            Due::At(at) => plan.next = Some(plan.next.map_or(at, |n| n.min(at))),
            Due::Never => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn policies_parse_print_and_serialize_as_one_string() {
        let cases = [
            ("delete", CleanupPolicy::Delete),
            ("keep", CleanupPolicy::Keep),
            ("ttl:7d", CleanupPolicy::Ttl(7 * DAY)),
            (
                "ttl:12h",
                CleanupPolicy::Ttl(Duration::from_secs(12 * 3600)),
            ),
            ("ttl:90m", CleanupPolicy::Ttl(Duration::from_secs(90 * 60))),
            ("ttl:45s", CleanupPolicy::Ttl(Duration::from_secs(45))),
            (
                "ttl:1500ms",
                CleanupPolicy::Ttl(Duration::from_millis(1500)),
            ),
        ];
        for (text, policy) in cases {
            assert_eq!(text.parse::<CleanupPolicy>(), Ok(policy), "{text}");
            assert_eq!(policy.to_string(), text);
            let json = serde_json::to_string(&policy).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(
                serde_json::from_str::<CleanupPolicy>(&json).unwrap(),
                policy
            );
        }
        // Other spellings parse, and print canonically.
        assert_eq!(
            "ttl:1h 30m".parse::<CleanupPolicy>().unwrap().to_string(),
            "ttl:90m"
        );
        assert_eq!(
            "ttl:3600".parse(),
            Ok(CleanupPolicy::Ttl(Duration::from_secs(3600)))
        );
    }

    #[test]
    fn bad_policies_say_what_is_expected() {
        for bad in [
            "", "forever", "ttl:", "ttl:0", "ttl:-1d", "ttl:soon", "TTL:7d",
        ] {
            let err = bad.parse::<CleanupPolicy>().unwrap_err();
            assert!(
                err.to_string().contains("expected delete, keep or ttl:"),
                "{err}"
            );
        }
        assert_eq!(
            "forever".parse::<CleanupPolicy>().unwrap_err().to_string(),
            "invalid cleanup policy \"forever\": unknown policy (expected delete, keep or \
             ttl:DURATION such as ttl:7d)"
        );
        assert!(serde_json::from_str::<CleanupPolicy>(r#"{"ttl":"7d"}"#).is_err());
    }

    #[test]
    fn due_follows_the_policy_and_never_removes_what_is_in_use() {
        let t0 = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let ttl = CleanupPolicy::Ttl(7 * DAY);
        assert_eq!(due(CleanupPolicy::Delete, t0, t0, false), Due::Now);
        assert_eq!(due(CleanupPolicy::Delete, t0, t0, true), Due::Never);
        assert_eq!(
            due(CleanupPolicy::Keep, t0, t0 + 10_000 * DAY, false),
            Due::Never
        );
        assert_eq!(due(ttl, t0, t0 + DAY, false), Due::At(t0 + 7 * DAY));
        assert_eq!(due(ttl, t0, t0 + 7 * DAY, false), Due::Now);
        assert_eq!(due(ttl, t0, t0 + 8 * DAY, false), Due::Now);
        assert_eq!(due(ttl, t0, t0 + 8 * DAY, true), Due::Never);
        // Last use in the future: counted from now, not removed early.
        assert_eq!(due(ttl, t0 + 3 * DAY, t0, false), Due::At(t0 + 7 * DAY));
        // A TTL past the end of time never expires.
        assert_eq!(
            due(CleanupPolicy::Ttl(Duration::MAX), t0, t0, false),
            Due::Never
        );
    }

    #[test]
    fn a_sweep_removes_the_due_and_says_when_to_look_again() {
        let t0 = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let c = |key: &'static str, policy, last_used, in_use| SweepCandidate {
            key,
            policy,
            last_used,
            in_use,
        };
        let candidates = [
            c("task-done", CleanupPolicy::Delete, t0, false),
            c("task-running", CleanupPolicy::Delete, t0, true),
            c("debug", CleanupPolicy::Keep, t0 - 100 * DAY, false),
            c("old", CleanupPolicy::Ttl(DAY), t0 - 2 * DAY, false),
            c("fresh", CleanupPolicy::Ttl(DAY), t0 - DAY / 2, false),
            c("fresher", CleanupPolicy::Ttl(2 * DAY), t0, false),
            c("old-busy", CleanupPolicy::Ttl(DAY), t0 - 2 * DAY, true),
        ];
        assert_eq!(
            plan_sweep(&candidates, t0),
            SweepPlan {
                remove: vec!["task-done", "old"],
                next: Some(t0 + DAY / 2),
            }
        );
        assert_eq!(
            plan_sweep(&candidates[..3], t0),
            SweepPlan {
                remove: vec!["task-done"],
                next: None
            }
        );
    }
}
