//! Wakes followers (`logs?follow=true`, SSE) when something was stored. Carries no data: a
//! follower re-reads the store after its last event id, so nothing is lost between wake-ups and
//! a slow follower never holds memory.

use std::sync::Arc;

use tokio::sync::watch;

/// A generation counter bumped after every stored event.
#[derive(Debug, Clone)]
pub struct EventBus {
    generation: Arc<watch::Sender<u64>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            generation: Arc::new(watch::channel(0).0),
        }
    }
}

impl EventBus {
    /// Says that events were stored.
    pub fn bump(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// A receiver whose `changed()` resolves after the next bump.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
