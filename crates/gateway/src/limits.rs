//! Per-account rate limits: requests and tokens per minute over a sliding window. A request over
//! a limit waits until the window has room; it never fails for it. Each admitted request holds
//! its estimate in the window until it settles with the real count.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::RateLimits;

const WINDOW: Duration = Duration::from_secs(60);

/// The window of one upstream account: pure bookkeeping, the caller owns the clock.
#[derive(Debug, Default)]
pub struct Window {
    limits: RateLimits,
    /// (admitted at, slot id, tokens), oldest first.
    entries: VecDeque<(Instant, u64, u64)>,
    next_id: u64,
}

impl Window {
    /// An empty window under `limits`.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Admits a request estimated at `tokens` at `now` and returns its slot, or says how long to
    /// wait before asking again. A request larger than the whole `tpm` is admitted into an
    /// empty window rather than never.
    pub fn try_admit(&mut self, now: Instant, tokens: u64) -> Result<u64, Duration> {
        while let Some((at, _, _)) = self.entries.front() {
            if now.duration_since(*at) >= WINDOW {
                self.entries.pop_front();
            } else {
                break;
            }
        }
        let oldest = self.entries.front().map(|(at, _, _)| *at);
        let wait = || oldest.map_or(Duration::ZERO, |at| WINDOW - now.duration_since(at));
        if let Some(rpm) = self.limits.rpm {
            if self.entries.len() >= rpm as usize {
                return Err(wait());
            }
        }
        if let Some(tpm) = self.limits.tpm {
            let held: u64 = self.entries.iter().map(|(_, _, t)| t).sum();
            if !self.entries.is_empty() && held.saturating_add(tokens) > tpm {
                return Err(self.tokens_wait(now, tpm, tokens));
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push_back((now, id, tokens));
        Ok(id)
    }

    /// Replaces a slot's estimate with the tokens it really used.
    pub fn settle(&mut self, slot: u64, tokens: u64) {
        if let Some(entry) = self.entries.iter_mut().find(|(_, id, _)| *id == slot) {
            entry.2 = tokens;
        }
    }

    /// How long until enough old entries leave the window for `tokens` to fit.
    fn tokens_wait(&self, now: Instant, tpm: u64, tokens: u64) -> Duration {
        let mut held: u64 = self.entries.iter().map(|(_, _, t)| t).sum();
        for (at, _, t) in &self.entries {
            held -= t;
            if held.saturating_add(tokens) <= tpm {
                return WINDOW - now.duration_since(*at);
            }
        }
        self.entries.back().map_or(Duration::ZERO, |(at, _, _)| {
            WINDOW - now.duration_since(*at)
        })
    }
}

/// A [`Window`] behind a lock, with the waiting done.
#[derive(Debug)]
pub struct Limiter {
    window: Mutex<Window>,
}

impl Limiter {
    /// A limiter under `limits`.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            window: Mutex::new(Window::new(limits)),
        }
    }

    /// Waits until a request of `tokens` fits, and returns its slot.
    pub async fn admit(&self, tokens: u64) -> u64 {
        loop {
            let decision = self
                .window
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .try_admit(Instant::now(), tokens);
            match decision {
                Ok(slot) => return slot,
                Err(wait) => tokio::time::sleep(wait.max(Duration::from_millis(1))).await,
            }
        }
    }

    /// Settles a slot with the tokens really used.
    pub fn settle(&self, slot: u64, tokens: u64) {
        self.window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .settle(slot, tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_per_minute_wait_for_the_oldest_to_leave() {
        let mut window = Window::new(RateLimits {
            rpm: Some(2),
            tpm: None,
        });
        let t0 = Instant::now();
        assert_eq!(window.try_admit(t0, 0), Ok(0));
        assert_eq!(window.try_admit(t0 + Duration::from_secs(10), 0), Ok(1));
        assert_eq!(
            window.try_admit(t0 + Duration::from_secs(20), 0),
            Err(Duration::from_secs(40))
        );
        assert_eq!(window.try_admit(t0 + Duration::from_secs(60), 0), Ok(2));
    }

    #[test]
    fn tokens_per_minute_count_settled_usage_and_let_a_huge_request_through_alone() {
        let mut window = Window::new(RateLimits {
            rpm: None,
            tpm: Some(1000),
        });
        let t0 = Instant::now();
        let first = window.try_admit(t0, 900);
        assert_eq!(first, Ok(0));
        assert_eq!(
            window.try_admit(t0 + Duration::from_secs(1), 200),
            Err(Duration::from_secs(59))
        );
        window.settle(0, 700);
        assert_eq!(window.try_admit(t0 + Duration::from_secs(1), 200), Ok(1));
        let later = t0 + Duration::from_secs(120);
        assert_eq!(window.try_admit(later, 5000), Ok(2));
        assert_eq!(window.try_admit(later, 1), Err(Duration::from_secs(60)));
    }
}
