//! Ending a request's accounting, exactly once, however the request ends (body finished, client
//! gone, refused locally): usage priced and added to the task and its session, the budget's
//! reservation and the rate-limit slot released, metrics counted, the audit record sent. A
//! [`Settlement`] dropped without being finished settles with what it knows.

use std::sync::Arc;
use std::time::Instant;

use crate::grant::TaskGrant;
use crate::record::RequestRecord;
use crate::usage::Metered;
use crate::Gateway;

/// Stream error types that mean the upstream, not the request, failed.
const UNAVAILABLE_ERRORS: [&str; 3] = ["overloaded_error", "api_error", "rate_limit_error"];

/// A request whose accounting is still open.
#[derive(Debug)]
pub struct Settlement {
    open: Option<Open>,
}

#[derive(Debug)]
struct Open {
    gateway: Arc<Gateway>,
    grant: Arc<TaskGrant>,
    path: &'static str,
    model: String,
    started: Instant,
    /// The budget reservation, when the ledger admitted the request.
    reserved: Option<(u64, f64)>,
    /// Input tokens the request body may hold (its bytes / 4): what it is charged for when its
    /// response never reported its usage.
    input_estimate: u64,
    slot: Option<u64>,
    status: u16,
    retries: u32,
    upstream: bool,
    request_body: Option<String>,
}

/// How the response ended, for [`Settlement::finish`].
#[derive(Debug, Default)]
pub struct Ending {
    /// What the meter read.
    pub metered: Metered,
    /// The response body, when bodies are logged.
    pub response_body: Option<String>,
    /// The upstream's stream broke off.
    pub broken: bool,
}

impl Settlement {
    /// Opens the accounting of a request to `path` by `grant`'s task.
    pub fn open(
        gateway: Arc<Gateway>,
        grant: Arc<TaskGrant>,
        path: &'static str,
        started: Instant,
        request_body: Option<String>,
    ) -> Self {
        Self {
            open: Some(Open {
                gateway,
                grant,
                path,
                model: String::new(),
                started,
                reserved: None,
                input_estimate: 0,
                slot: None,
                status: 499,
                retries: 0,
                upstream: false,
                request_body,
            }),
        }
    }

    /// The request's model, budget reservation and estimated input tokens.
    pub fn admitted(&mut self, model: String, reserved: (u64, f64), input_estimate: u64) {
        if let Some(open) = &mut self.open {
            open.model = model;
            open.reserved = Some(reserved);
            open.input_estimate = input_estimate;
        }
    }

    /// The request's model, for a request outside the budget (`count_tokens`).
    pub fn model(&mut self, model: String) {
        if let Some(open) = &mut self.open {
            open.model = model;
        }
    }

    /// The upstream answered with `status` after `retries` (or the gateway answered `status`
    /// itself when `slot` is `None`).
    pub fn answered(&mut self, status: u16, slot: Option<u64>, retries: u32) {
        if let Some(open) = &mut self.open {
            open.status = status;
            open.upstream = slot.is_some();
            open.slot = slot;
            open.retries = retries;
        }
    }

    /// Closes the accounting.
    pub fn finish(&mut self, ending: Ending) {
        if let Some(open) = self.open.take() {
            open.finish(ending);
        }
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        self.finish(Ending::default());
    }
}

impl Open {
    fn finish(self, ending: Ending) {
        let gateway = &self.gateway;
        let model = ending.metered.model.clone().unwrap_or(self.model);
        let (price, known) = gateway.config.prices.price(&model);
        let mut usage = ending.metered.usage;
        let answered = self.upstream && (200..300).contains(&self.status);
        if answered && !ending.metered.complete {
            // The client left (or the stream broke) before the final usage: the upstream may
            // have generated, and billed, everything it was allowed. Charge that, so hanging up
            // early never spends less of the budget than the request could have cost.
            let reserved_output = self.reserved.map_or(0, |(tokens, _)| tokens);
            usage.output_tokens = usage.output_tokens.max(reserved_output);
            usage.input_tokens = usage.input_tokens.max(self.input_estimate);
        }
        usage.requests = u64::from(self.upstream);
        usage.cost_usd = price.cost(&usage);
        let counted = usage.budget_tokens() + usage.cache_read_input_tokens > 0;
        let unavailable = ending.broken
            || ending
                .metered
                .stream_error
                .as_deref()
                .is_some_and(|kind| UNAVAILABLE_ERRORS.contains(&kind));
        {
            let mut state = self.grant.lock();
            match self.reserved {
                Some(reserved) => state.ledger.settle(reserved, &usage),
                None => state.ledger.record(&usage),
            }
            if !known && counted && !state.report.default_priced.contains(&model) {
                state.report.default_priced.push(model.clone());
            }
            state.report.upstream_unavailable |= unavailable;
        }
        self.grant.settled.notify_waiters();
        if let Some(session) = &self.grant.session {
            gateway.grants.add_to_session(session, &usage);
        }
        if let Some(slot) = self.slot {
            gateway
                .limiter(self.grant.provider)
                .settle(slot, usage.budget_tokens());
        }
        let latency = self.started.elapsed();
        let status = self.status.to_string();
        gateway.metrics.request(&status, &model, &usage, latency);
        gateway.sink.record(RequestRecord {
            task: self.grant.task,
            session: self.grant.session.clone(),
            provider: self.grant.provider,
            path: self.path.to_owned(),
            model,
            usage,
            default_price: !known,
            status: self.status,
            latency,
            retries: self.retries,
            request_body: self.request_body,
            response_body: ending.response_body,
        });
    }
}

/// Whether an upstream status means the upstream is unavailable (5xx, 429) or
/// refused the request (other 4xx); `None` for success.
pub fn classify(status: u16) -> Option<bool> {
    match status {
        429 | 500..=599 => Some(true),
        400..=499 => Some(false),
        _ => None,
    }
}
