//! The real clock and the real signals: the only module that touches tokio's time and Unix
//! signal APIs.
//!
//! Everything else reads time through [`Clock`] and signals through [`SignalSource`], so keeping
//! the real implementations here, and nowhere else, is what makes the rest deterministic.
//! [`TokioClock`] runs on `tokio::time`, which a paused runtime (`start_paused` tests, turmoil)
//! turns into virtual time; [`UnixSignals`] wraps tokio's Unix signal streams.

// `clippy.toml` bans the wall clock and the real signal API everywhere, so that only this module,
// which implements the `Clock` and `SignalSource` seams on them, may use them.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use tokio::signal::unix::{self, SignalKind as UnixKind};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::signal::{Origin, Signal, SignalKind, SignalSource};

/// How far ahead a sleep may reach: about thirty years, which no process outlives.
///
/// Sleeping until `u64::MAX` is a natural way to say "no deadline"; capping keeps the tokio
/// instant arithmetic from overflowing and still never wakes.
const SLEEP_AHEAD_MS_MAX: u64 = 30 * 365 * 24 * 60 * 60 * 1000;

/// A [`Clock`] on `tokio::time`: real time in production, virtual time on a paused runtime.
///
/// Its zero is the instant it was built. Copies share that zero, so hand copies of one clock to
/// everything that must agree on the time (the shell, a scripted signal source).
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    /// The tokio instant that reads as 0 ms.
    zero: Instant,
}

impl TokioClock {
    /// Starts a clock whose zero is now, on the current tokio clock.
    ///
    /// Under a paused runtime "now" is the paused time, so the clock is virtual from its start.
    pub fn new() -> Self {
        Self { zero: Instant::now() }
    }
}

impl Default for TokioClock {
    /// Same as [`TokioClock::new`]: a clock starting now.
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    /// Whole milliseconds since the zero, rounded down.
    fn now_ms(&self) -> u64 {
        let elapsed_ms = self.zero.elapsed().as_millis();
        u64::try_from(elapsed_ms).unwrap_or(u64::MAX)
    }

    /// A tokio sleep until the zero plus `at_ms`, capped about thirty years ahead.
    ///
    /// tokio never wakes a sleep early, so when it completes `now_ms() >= at_ms`.
    fn sleep_until(&self, at_ms: u64) -> impl Future<Output = ()> + Send {
        let ahead_ms = at_ms.min(self.now_ms().saturating_add(SLEEP_AHEAD_MS_MAX));
        tokio::time::sleep_until(self.zero + Duration::from_millis(ahead_ms))
    }
}

/// The real [`SignalSource`]: SIGUSR1 asks for a reload, SIGTERM and SIGINT for a shutdown.
///
/// Every signal it delivers has [`Origin::External`].
///
/// # Caveats
///
/// Like the operating system, it coalesces: however often one kind of signal arrived since the
/// last `recv`, it is delivered once (a SIGTERM and a SIGINT both pending make one
/// `Shutdown`). When a `Shutdown` and a `Reload` are both pending, `Shutdown` comes first and
/// the `Reload` stays pending for the next `recv`. Once installed, tokio never removes its
/// handlers, so after the first `install` these signals no longer end the process by default.
#[derive(Debug)]
pub struct UnixSignals {
    /// SIGUSR1.
    reload: unix::Signal,
    /// SIGTERM.
    terminate: unix::Signal,
    /// SIGINT.
    interrupt: unix::Signal,
}

impl UnixSignals {
    /// Installs the handlers for SIGUSR1, SIGTERM and SIGINT, all before returning.
    ///
    /// The daemon calls this before anything else, so that an early SIGUSR1 cannot kill it
    /// (its default action ends the process). Signals that arrive after this call and before
    /// the first `recv` are kept.
    ///
    /// # Errors
    ///
    /// Returns the operating system's error if a handler cannot be installed.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime with I/O enabled, as tokio's `signal` does.
    pub fn install() -> std::io::Result<Self> {
        let reload = unix::signal(UnixKind::user_defined1())?;
        let terminate = unix::signal(UnixKind::terminate())?;
        let interrupt = unix::signal(UnixKind::interrupt())?;

        tracing::debug!("signal handlers installed");
        Ok(Self { reload, terminate, interrupt })
    }
}

impl SignalSource for UnixSignals {
    /// Waits for a signal; `None` only once tokio's signal driver has shut down.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: tokio's `Signal::recv` is, and everything after the first signal is taken
    /// runs without waiting, in the same poll that returns it.
    async fn recv(&mut self) -> Option<Signal> {
        let kind = tokio::select! {
            biased;
            Some(()) = self.terminate.recv() => SignalKind::Shutdown,
            Some(()) = self.interrupt.recv() => SignalKind::Shutdown,
            Some(()) = self.reload.recv() => SignalKind::Reload,
            else => return None,
        };

        if kind == SignalKind::Shutdown {
            take_if_pending(&mut self.terminate).await;
            take_if_pending(&mut self.interrupt).await;
        }
        tracing::debug!(kind = ?kind, "unix signal received");
        Some(Signal { kind, origin: Origin::External })
    }
}

/// Consumes a notification already pending on `stream`, without waiting for one.
///
/// This folds a SIGTERM and a SIGINT that are pending together into one `Shutdown`.
async fn take_if_pending(stream: &mut unix::Signal) {
    poll_fn(|cx| {
        // Whether a notification was there or not, this returns at once; a pending poll only
        // leaves a waker that may wake the task once, spuriously.
        let _pending = stream.poll_recv(cx);
        Poll::Ready(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_starts_at_zero() {
        let clock = TokioClock::new();
        assert_eq!(clock.now_ms(), 0);

        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(clock.now_ms(), 1_500);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_sleeps_until_virtual_time() {
        let clock = TokioClock::new();

        clock.sleep_until(250).await;
        assert_eq!(clock.now_ms(), 250);

        clock.sleep_until(100).await;
        assert_eq!(clock.now_ms(), 250);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_copies_share_zero() {
        let clock = TokioClock::new();
        tokio::time::advance(Duration::from_millis(30)).await;
        let copy = clock;

        copy.sleep_until(80).await;
        assert_eq!(clock.now_ms(), 80);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_dropped_sleep_loses_nothing() {
        let clock = TokioClock::new();

        tokio::select! {
            biased;
            () = clock.sleep_until(200) => panic!("the later sleep woke first"),
            () = clock.sleep_until(120) => {}
        }
        assert_eq!(clock.now_ms(), 120);

        clock.sleep_until(200).await;
        assert_eq!(clock.now_ms(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_far_deadline_does_not_overflow() {
        let clock = TokioClock::new();

        tokio::select! {
            biased;
            () = clock.sleep_until(u64::MAX) => panic!("a sleep until u64::MAX woke"),
            () = clock.sleep_until(10) => {}
        }
        assert_eq!(clock.now_ms(), 10);
    }
}
