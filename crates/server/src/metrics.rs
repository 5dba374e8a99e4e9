//! Prometheus metrics: HTTP requests and latency, task phase latencies, executor errors, and at
//! scrape time tasks by state and the queue depth (read from the store). Hand-rolled on atomics:
//! a few counters and fixed-bucket histograms do not justify a metrics framework yet.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use conductor_types::TaskStatus;

use crate::AppState;

/// Upper bounds of histogram buckets, in seconds.
const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A histogram with [`BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(value.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Everything the service counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Submit (queued_at) to process start, per task start.
    pub dispatch_latency: Histogram,
    /// Start to finish of each attempt.
    pub run_duration: Histogram,
    /// Executor errors by environment.
    executor_errors: Mutex<BTreeMap<String, u64>>,
    /// HTTP requests by (method, route, status).
    http_requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// HTTP latency, all routes.
    pub http_latency: Histogram,
}

impl Metrics {
    /// Counts an executor error.
    pub fn executor_error(&self, environment: &str) {
        let mut errors = self
            .executor_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *errors.entry(environment.to_owned()).or_default() += 1;
    }

    fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let mut requests = self
            .http_requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        drop(requests);
        self.http_latency.observe(elapsed);
    }

    /// The Prometheus text exposition, with the given task counts and running tasks.
    pub fn render(&self, tasks: &BTreeMap<TaskStatus, u64>, running_here: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP conductor_tasks Tasks by state.\n# TYPE conductor_tasks gauge\n");
        for (status, count) in tasks {
            let _ = writeln!(out, "conductor_tasks{{state=\"{status}\"}} {count}");
        }
        let queued = tasks.get(&TaskStatus::Queued).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "# HELP conductor_queue_depth Tasks waiting for a slot.\n# TYPE conductor_queue_depth gauge\nconductor_queue_depth {queued}"
        );
        let _ = writeln!(
            out,
            "# HELP conductor_slots_busy Slots running a task.\n# TYPE conductor_slots_busy gauge\nconductor_slots_busy {running_here}"
        );
        // The same under the slots' old name, kept one release.
        let _ = writeln!(
            out,
            "# HELP conductor_agents_busy Deprecated: conductor_slots_busy.\n# TYPE conductor_agents_busy gauge\nconductor_agents_busy {running_here}"
        );
        out.push_str("# HELP conductor_task_dispatch_seconds From submission to start.\n# TYPE conductor_task_dispatch_seconds histogram\n");
        self.dispatch_latency
            .render(&mut out, "conductor_task_dispatch_seconds", "");
        out.push_str("# HELP conductor_task_run_seconds From start to finish of an attempt.\n# TYPE conductor_task_run_seconds histogram\n");
        self.run_duration
            .render(&mut out, "conductor_task_run_seconds", "");
        out.push_str("# HELP conductor_executor_errors_total Commands an executor could not run.\n# TYPE conductor_executor_errors_total counter\n");
        let errors = self
            .executor_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (environment, count) in errors {
            let _ = writeln!(
                out,
                "conductor_executor_errors_total{{environment=\"{environment}\"}} {count}"
            );
        }
        out.push_str("# HELP conductor_http_requests_total HTTP requests.\n# TYPE conductor_http_requests_total counter\n");
        let requests = self
            .http_requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for ((method, route, status), count) in requests {
            let _ = writeln!(
                out,
                "conductor_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str("# HELP conductor_http_request_seconds HTTP request latency (until the response head).\n# TYPE conductor_http_request_seconds histogram\n");
        self.http_latency
            .render(&mut out, "conductor_http_request_seconds", "");
        out
    }
}

/// Middleware: counts every request by its route pattern (never the raw path, so ids do not
/// explode the label set).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    state.scheduler().metrics().http_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_millis(20));
        let mut out = String::new();
        histogram.render(&mut out, "x", "");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "x_bucket{le=\"0.001\"} 0");
        assert_eq!(lines[2], "x_bucket{le=\"0.005\"} 1");
        assert_eq!(lines[4], "x_bucket{le=\"0.025\"} 2");
        assert_eq!(lines[16], "x_bucket{le=\"+Inf\"} 2");
        assert_eq!(lines[17], "x_sum 0.023");
        assert_eq!(lines[18], "x_count 2");
    }
}
