//! The gateway's Prometheus metrics, rendered as text the server appends to its `/metrics`:
//! `conductor_llm_tokens_total{model,kind}`, `conductor_llm_requests_total{status}`,
//! `conductor_llm_request_duration_seconds` and `conductor_llm_upstream_retries_total`. Model
//! names come from the upstream's answer; keys and tokens never enter a label.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use conductor_types::Usage;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Everything the gateway counts.
#[derive(Debug, Default)]
pub struct Metrics {
    tokens: Mutex<BTreeMap<(String, &'static str), u64>>,
    requests: Mutex<BTreeMap<String, u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    retries: AtomicU64,
}

impl Metrics {
    /// Counts one finished request: its status label, tokens and latency.
    pub fn request(&self, status: &str, model: &str, usage: &Usage, latency: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(status.to_owned())
            .or_default() += 1;
        let kinds = [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_input_tokens),
            ("cache_write", usage.cache_creation_input_tokens),
        ];
        if kinds.iter().any(|(_, n)| *n > 0) {
            let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
            for (kind, n) in kinds {
                *tokens.entry((model.to_owned(), kind)).or_default() += n;
            }
        }
        let seconds = latency.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts one retry of an upstream request.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the Prometheus text.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP conductor_llm_tokens_total Tokens counted from upstream responses.\n# TYPE conductor_llm_tokens_total counter");
        for ((model, kind), n) in self
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let model = escape(model);
            let _ = writeln!(
                out,
                "conductor_llm_tokens_total{{model=\"{model}\",kind=\"{kind}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP conductor_llm_requests_total Requests answered by the gateway, by status.\n# TYPE conductor_llm_requests_total counter");
        for (status, n) in self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "conductor_llm_requests_total{{status=\"{status}\"}} {n}"
            );
        }
        let name = "conductor_llm_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Gateway requests from arrival to the body's end.\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
        let retries = self.retries.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP conductor_llm_upstream_retries_total Upstream requests retried after 429/503/529 or a failed connection.\n# TYPE conductor_llm_upstream_retries_total counter\nconductor_llm_upstream_retries_total {retries}");
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_tokens_by_model_and_kind_requests_by_status_and_latency() {
        let metrics = Metrics::default();
        let usage = Usage {
            input_tokens: 10,
            output_tokens: 5,
            cache_read_input_tokens: 0,
            cache_creation_input_tokens: 2,
            requests: 1,
            cost_usd: 0.0,
        };
        metrics.request("200", "claude-\"x\"", &usage, Duration::from_millis(7));
        metrics.request("200", "claude-\"x\"", &usage, Duration::from_millis(70));
        metrics.request("401", "", &Usage::default(), Duration::from_millis(1));
        metrics.retry();
        let mut out = String::new();
        metrics.render(&mut out);
        for line in [
            "conductor_llm_tokens_total{model=\"claude-\\\"x\\\"\",kind=\"input\"} 20",
            "conductor_llm_tokens_total{model=\"claude-\\\"x\\\"\",kind=\"cache_write\"} 4",
            "conductor_llm_tokens_total{model=\"claude-\\\"x\\\"\",kind=\"cache_read\"} 0",
            "conductor_llm_requests_total{status=\"200\"} 2",
            "conductor_llm_requests_total{status=\"401\"} 1",
            "conductor_llm_request_duration_seconds_bucket{le=\"0.005\"} 1",
            "conductor_llm_request_duration_seconds_bucket{le=\"0.01\"} 2",
            "conductor_llm_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "conductor_llm_request_duration_seconds_count 3",
            "conductor_llm_upstream_retries_total 1",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line} in\n{out}");
        }
    }
}
