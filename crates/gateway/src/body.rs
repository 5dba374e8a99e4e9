//! The response body on its way to the client: each upstream chunk is passed on as it arrives
//! and shown to the usage meter; when the body ends (or the client leaves) the request settles.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

use crate::settle::{Ending, Settlement};
use crate::usage::UsageMeter;

/// At most this much of a response body goes into an audit record.
const MAX_LOGGED: usize = 1 << 20;

/// An upstream body stream.
pub type Upstream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Forwards an upstream body and settles its request at the end.
pub struct MeteredBody {
    inner: Upstream,
    meter: Option<UsageMeter>,
    logged: Option<Vec<u8>>,
    settlement: Settlement,
    broken: bool,
}

impl std::fmt::Debug for MeteredBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredBody")
            .field("meter", &self.meter)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl MeteredBody {
    /// Wraps `inner`; `meter` is `None` for bodies that carry no usage; `log` keeps the body.
    pub fn new(
        inner: Upstream,
        meter: Option<UsageMeter>,
        log: bool,
        settlement: Settlement,
    ) -> Self {
        Self {
            inner,
            meter,
            logged: log.then(Vec::new),
            settlement,
            broken: false,
        }
    }

    fn settle(&mut self) {
        let metered = self
            .meter
            .take()
            .map(UsageMeter::finish)
            .unwrap_or_default();
        let response_body = self
            .logged
            .take()
            .map(|body| String::from_utf8_lossy(&body).into_owned());
        self.settlement.finish(Ending {
            metered,
            response_body,
            broken: self.broken,
        });
    }
}

impl Stream for MeteredBody {
    type Item = reqwest::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let next = this.inner.as_mut().poll_next(cx);
        match &next {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(meter) = &mut this.meter {
                    meter.feed(chunk);
                }
                if let Some(logged) = &mut this.logged {
                    let room = MAX_LOGGED.saturating_sub(logged.len());
                    logged.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.broken = true;
                this.settle();
            }
            Poll::Ready(None) => this.settle(),
            Poll::Pending => {}
        }
        next
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.settle();
    }
}
