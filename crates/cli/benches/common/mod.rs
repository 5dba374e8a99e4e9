//! What the bench binaries share.

use std::time::Duration;

// Only the benches that drive a real server use it.
#[allow(dead_code)]
pub mod server;

/// The `pct`th percentile of `samples` (sorted in place); zero for no samples.
pub fn percentile(samples: &mut [Duration], pct: usize) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let index = (samples.len() * pct / 100).min(samples.len() - 1);
    samples[index]
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
