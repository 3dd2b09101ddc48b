//! The daemon's agents: the default [`DelayAgent`], and [`Recording`], which notes every run
//! request for the journal whatever the agent.
//!
//! The default agent stands in for a real model call: each run takes a configurable delay on
//! the [`Clock`] and succeeds, except every `n`th run when told to fail some. What a delivered
//! run said is written to the deliveries file by the journal when the gateway records the run's
//! success, not by the agent: the shell aborts a run the core cancels (a timeout, a stop), and
//! an agent that wrote its own delivery line could record a run the gateway then runs again.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::clock::Clock;
use crate::event::RunId;
use crate::shell::{Agent, RunRequest};

/// An agent whose runs wait `delay_ms` on the clock, then succeed, except every
/// `fail_every`th run it starts (counting from 1 in each process), which fails.
///
/// Deterministic: which runs fail depends only on the order in which the gateway starts them.
#[derive(Clone, Debug)]
pub struct DelayAgent<C> {
    clock: C,
    delay_ms: u64,
    fail_every: Option<NonZeroU64>,
    started: u64,
}

impl<C: Clock + Clone + 'static> DelayAgent<C> {
    /// An agent whose runs take `delay_ms` and all succeed.
    pub fn new(clock: C, delay_ms: u64) -> Self {
        Self { clock, delay_ms, fail_every: None, started: 0 }
    }

    /// Makes every `n`th run fail (`n` = 1: every run).
    pub fn failing_every(self, n: NonZeroU64) -> Self {
        Self { fail_every: Some(n), ..self }
    }
}

impl<C: Clock + Clone + 'static> Agent for DelayAgent<C> {
    fn run(&mut self, request: RunRequest) -> impl Future<Output = bool> + Send + 'static {
        self.started += 1;
        let fails = self.fail_every.is_some_and(|n| self.started.is_multiple_of(n.get()));
        if fails {
            tracing::debug!(run = request.run, "agent fails this run as told");
        }

        let (clock, delay_ms) = (self.clock.clone(), self.delay_ms);
        async move {
            let until_ms = clock.now_ms().saturating_add(delay_ms);
            clock.sleep_until(until_ms).await;
            !fails
        }
    }
}

/// The requests of the runs in progress, by run: the agent side writes them, the journal
/// takes them when their runs end. Clones share one book.
#[derive(Clone, Debug, Default)]
pub struct RunBook {
    runs: Arc<Mutex<BTreeMap<RunId, RunRequest>>>,
}

impl RunBook {
    /// Notes a run the gateway started.
    pub fn insert(&self, request: RunRequest) {
        self.lock().insert(request.run, request);
    }

    /// Takes the request of a run that ended; `None` if it was never started by an agent (a
    /// stop can end a run within the input that started it).
    pub fn take(&self, run: RunId) -> Option<RunRequest> {
        self.lock().remove(&run)
    }

    /// Every change is one map operation, so a poisoned lock still holds a whole map.
    fn lock(&self) -> MutexGuard<'_, BTreeMap<RunId, RunRequest>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Wraps any agent so that every request is noted in a [`RunBook`] before the agent sees it.
#[derive(Debug)]
pub struct Recording<A> {
    inner: A,
    book: RunBook,
}

impl<A: Agent> Recording<A> {
    /// Notes `inner`'s requests in `book`.
    pub fn new(inner: A, book: RunBook) -> Self {
        Self { inner, book }
    }
}

impl<A: Agent> Agent for Recording<A> {
    fn run(&mut self, request: RunRequest) -> impl Future<Output = bool> + Send + 'static {
        self.book.insert(request.clone());
        self.inner.run(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::TokioClock;

    fn request(run: RunId) -> RunRequest {
        RunRequest { run, session: "s".into(), attempt: 1, messages: vec![], text: String::new() }
    }

    #[tokio::test(start_paused = true)]
    async fn delay_agent_waits_then_fails_every_nth() {
        let clock = TokioClock::new();
        let three = NonZeroU64::new(3).expect("3 is not zero");
        let mut agent = DelayAgent::new(clock, 40).failing_every(three);

        let mut results = Vec::new();
        for run in 1..=6 {
            results.push(agent.run(request(run)).await);
        }

        assert_eq!(results, [true, true, false, true, true, false]);
        assert_eq!(clock.now_ms(), 6 * 40);
    }

    #[tokio::test]
    async fn recording_notes_each_request() {
        let book = RunBook::default();
        let mut agent = Recording::new(|_request: RunRequest| async { true }, book.clone());

        assert!(agent.run(request(7)).await);

        assert_eq!(book.take(7), Some(request(7)));
        assert_eq!(book.take(7), None);
    }
}
