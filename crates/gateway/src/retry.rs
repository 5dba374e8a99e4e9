//! Which upstream answers are retried, and after how long: 429 (rate limited), 529 (overloaded)
//! and 503, honouring `retry-after` (seconds or an HTTP date), else exponential backoff; always
//! bounded by the policy's longest delay.

use std::time::{Duration, SystemTime};

use crate::config::RetryPolicy;

/// Whether an upstream status is worth retrying before the client sees anything.
pub fn retryable(status: u16) -> bool {
    matches!(status, 429 | 503 | 529)
}

/// The delay before retry number `retry` (1 for the first retry), given the upstream's
/// `retry-after` header if it sent one.
pub fn delay(
    policy: &RetryPolicy,
    retry: u32,
    retry_after: Option<&str>,
    now: SystemTime,
) -> Duration {
    let backoff = policy
        .base_delay
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16));
    let wanted = retry_after
        .and_then(|value| parse_retry_after(value, now))
        .unwrap_or(backoff);
    wanted.min(policy.max_delay)
}

/// `retry-after`: delta seconds or an HTTP date.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }

    #[test]
    fn backoff_doubles_and_retry_after_wins_within_the_bound() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let policy = policy();
        assert_eq!(delay(&policy, 1, None, now), Duration::from_millis(100));
        assert_eq!(delay(&policy, 3, None, now), Duration::from_millis(400));
        assert_eq!(delay(&policy, 30, None, now), Duration::from_secs(5));
        assert_eq!(delay(&policy, 1, Some("2"), now), Duration::from_secs(2));
        assert_eq!(
            delay(&policy, 1, Some("0.25"), now),
            Duration::from_millis(250)
        );
        assert_eq!(delay(&policy, 1, Some("600"), now), Duration::from_secs(5));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(3));
        assert_eq!(delay(&policy, 1, Some(&date), now), Duration::from_secs(3));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(3));
        assert_eq!(delay(&policy, 1, Some(&past), now), Duration::ZERO);
        assert_eq!(
            delay(&policy, 2, Some("soon"), now),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        assert!(retryable(429) && retryable(529) && retryable(503));
        assert!(!retryable(400) && !retryable(401) && !retryable(500) && !retryable(200));
    }
}
