//! The time seam: the one way production code reads the time and waits for it.
//!
//! Code outside [`crate::adapter`] never touches a real clock (`clippy.toml` bans it). It asks a
//! [`Clock`] for virtual milliseconds since the clock's zero and sleeps until a virtual
//! millisecond, so the same shell runs on real time in the daemon, on paused tokio time in tests
//! and under the simulation's own clock.

use std::sync::Arc;

/// Virtual time in milliseconds since the clock's zero, and a way to wait for a given millisecond.
///
/// The sleep is returned as `impl Future` rather than a boxed future, so a sleep costs no
/// allocation in the run loop's `select!`. The price is that `Clock` is not object safe: code
/// that needs one takes it as a generic parameter (`C: Clock`), never as `dyn Clock`.
///
/// `Send + Sync` because the shell runs on tokio and may move its clock, and the futures that
/// borrow it, across threads.
pub trait Clock: Send + Sync {
    /// Milliseconds elapsed since this clock's zero. Never decreases.
    fn now_ms(&self) -> u64;

    /// Completes once [`Clock::now_ms`] has reached `at_ms`; at once if it already has.
    ///
    /// The future borrows the clock; make a new one on each turn of a loop.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes loses nothing: a sleep holds no state that
    /// anything else depends on, and sleeping again until the same `at_ms` wakes at the same
    /// virtual time.
    fn sleep_until(&self, at_ms: u64) -> impl Future<Output = ()> + Send;
}

/// A shared clock is a clock, so the shell and a scripted signal source can read the same zero.
impl<C: Clock> Clock for Arc<C> {
    fn now_ms(&self) -> u64 {
        C::now_ms(self)
    }

    fn sleep_until(&self, at_ms: u64) -> impl Future<Output = ()> + Send {
        C::sleep_until(self, at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::TokioClock;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn shared_clock_reads_the_same_zero() {
        let clock = Arc::new(TokioClock::new());
        let shared = Arc::clone(&clock);

        tokio::time::advance(Duration::from_millis(40)).await;
        shared.sleep_until(55).await;

        assert_eq!(clock.now_ms(), 55);
        assert_eq!(shared.now_ms(), 55);
    }
}
