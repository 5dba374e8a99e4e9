//! What the warm pool holds (see `pool` for what a warm container is): an idle warm container,
//! what waits in it, and the pool's counts. Kept apart from `warm` (which keeps the pool) and
//! `reuse` (which runs resident containers) so both use it without using each other.

use super::guard::ContainerGuard;
use super::oom::OomWatch;
use super::resident::Resident;

/// An idle warm container: started, its shell waiting on the FIFO.
#[derive(Debug)]
pub(crate) struct Warm {
    pub(crate) guard: ContainerGuard,
    pub(crate) id: String,
    pub(crate) oom: Option<OomWatch>,
    pub(crate) kind: WarmKind,
}

/// What waits in a warm container.
#[derive(Debug)]
pub(crate) enum WarmKind {
    /// A shell that `exec`s one command: the FIFO's write end, opened once it was waiting.
    Once(std::fs::File),
    /// The agent of a container reset and reused (see `resident`).
    Resident(Resident),
}

/// The idle containers, how many are being made, and how many resident ones are out serving
/// an execution (they come back).
#[derive(Debug, Default)]
pub(crate) struct PoolState {
    pub(crate) idle: Vec<Warm>,
    pub(crate) filling: usize,
    pub(crate) lent: usize,
}
