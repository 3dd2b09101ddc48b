//! Signals that restart or stop the gateway, and where they come from.
//!
//! The run loop receives them from a [`SignalSource`]: the real one wraps the operating system's
//! signals ([`crate::adapter::UnixSignals`]); [`ScriptedSignals`] plays a schedule on a
//! [`Clock`], so tests and the simulation send a signal at an exact virtual millisecond.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;

/// What a signal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalKind {
    /// Restart into a new generation with the config read afresh (SIGUSR1).
    Reload,
    /// Drain, save the handover to the state file and exit (SIGTERM, SIGINT).
    Shutdown,
}

/// Who sent a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The operating system: another process sent it.
    External,
    /// The gateway asked for it itself, for instance after a config change.
    Internal,
}

/// One signal delivered to the run loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// What it asks for.
    pub kind: SignalKind,
    /// Who sent it.
    pub origin: Origin,
}

/// Where the run loop receives its signals from.
///
/// The real source is [`crate::adapter::UnixSignals`]; tests and the simulation use
/// [`ScriptedSignals`]. `recv` is declared as returning `impl Future + Send` (implementations
/// may write `async fn recv`), so the run loop can await it inside `select!` on a multi-threaded
/// runtime; like [`Clock`], the trait is used through generics, not as `dyn SignalSource`.
pub trait SignalSource: Send {
    /// Waits for the next signal; `None` means the source is closed and no signal will follow.
    ///
    /// # Cancel safety
    ///
    /// Implementations must be cancel safe, because the run loop polls `recv` inside `select!`:
    /// if the future is dropped before it completes, no signal is lost and the next call
    /// returns it.
    fn recv(&mut self) -> impl Future<Output = Option<Signal>> + Send;
}

/// A [`SignalSource`] that delivers a fixed schedule of signals at their virtual times.
///
/// Each scheduled signal is delivered once [`Clock::now_ms`] reaches its time, in schedule order:
/// by time, and in list order at equal times. Unlike the real source it never coalesces signals
/// that were scheduled at different instants, even if `recv` is called late: a scenario that
/// schedules two reloads gets two reloads. Signals of one kind scheduled at the same instant
/// become one, delivered where the first of them stands. When the schedule is used up, the
/// source is closed and `recv` returns `None` at once.
///
/// Merging a `Reload` from an [`Origin::External`] sender with one from [`Origin::Internal`] at
/// the same instant keeps `Internal`: the gateway honours its own reload even where it refuses
/// external ones (`reload.allow_external = false`), so merging must not turn an honoured request
/// into a refused one.
#[derive(Debug)]
pub struct ScriptedSignals<C> {
    /// Signals still to deliver, sorted by time and already merged per instant and kind.
    schedule: VecDeque<(u64, Signal)>,
    /// The clock whose virtual time the schedule is written in.
    clock: C,
}

impl<C: Clock> ScriptedSignals<C> {
    /// Builds a source that delivers `schedule`, a list of `(at_ms, signal)` on `clock`'s time.
    ///
    /// The list need not be sorted; a stable sort by time keeps the list order at equal times.
    pub fn new(schedule: impl IntoIterator<Item = (u64, Signal)>, clock: C) -> Self {
        let mut sorted: Vec<(u64, Signal)> = schedule.into_iter().collect();
        sorted.sort_by_key(|&(at_ms, _)| at_ms);

        let mut merged = VecDeque::with_capacity(sorted.len());
        for (at_ms, signal) in sorted {
            push_or_merge(&mut merged, at_ms, signal);
        }
        Self { schedule: merged, clock }
    }

    /// How many signals are still to be delivered, after merging.
    pub fn remaining(&self) -> usize {
        self.schedule.len()
    }
}

/// Appends `signal` at `at_ms`, or folds it into a signal of the same kind at the same instant.
///
/// `merged` is sorted by time, so the signals of instant `at_ms` are its tail.
fn push_or_merge(merged: &mut VecDeque<(u64, Signal)>, at_ms: u64, signal: Signal) {
    let same_instant = merged.iter_mut().rev().take_while(|(t, _)| *t == at_ms);
    let mut twins = same_instant.filter(|(_, s)| s.kind == signal.kind);
    match twins.next() {
        Some((_, twin)) => {
            if signal.origin == Origin::Internal {
                twin.origin = Origin::Internal;
            }
        }
        None => merged.push_back((at_ms, signal)),
    }
}

impl<C: Clock> SignalSource for ScriptedSignals<C> {
    /// Sleeps on the clock until the next scheduled signal is due, then delivers it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the signal leaves the schedule only after the sleep has completed, in the
    /// same poll that returns it, so a future dropped while sleeping loses nothing.
    async fn recv(&mut self) -> Option<Signal> {
        let &(at_ms, _) = self.schedule.front()?;
        self.clock.sleep_until(at_ms).await;

        let (_, signal) = self.schedule.pop_front()?;
        let Signal { kind, origin } = signal;
        tracing::debug!(at_ms, ?kind, ?origin, "scripted signal delivered");
        Some(signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::TokioClock;
    use std::time::Duration;

    const RELOAD: Signal = Signal { kind: SignalKind::Reload, origin: Origin::External };
    const SHUTDOWN: Signal = Signal { kind: SignalKind::Shutdown, origin: Origin::External };
    const INTERNAL_RELOAD: Signal = Signal { kind: SignalKind::Reload, origin: Origin::Internal };

    /// Receives every signal left, with the virtual time it arrived at.
    async fn drain(signals: &mut ScriptedSignals<TokioClock>) -> Vec<(u64, Signal)> {
        let mut got = Vec::new();
        while let Some(signal) = signals.recv().await {
            got.push((signals.clock.now_ms(), signal));
        }
        got
    }

    #[tokio::test(start_paused = true)]
    async fn delivers_each_signal_at_its_time() {
        let mut signals = ScriptedSignals::new([(100, RELOAD), (250, SHUTDOWN)], TokioClock::new());

        assert_eq!(drain(&mut signals).await, [(100, RELOAD), (250, SHUTDOWN)]);
    }

    #[tokio::test(start_paused = true)]
    async fn empty_schedule_is_closed() {
        let mut signals = ScriptedSignals::new([], TokioClock::new());

        assert_eq!(signals.recv().await, None);
        assert_eq!(signals.recv().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn equal_times_keep_list_order() {
        let mut signals = ScriptedSignals::new([(50, SHUTDOWN), (50, RELOAD)], TokioClock::new());

        assert_eq!(drain(&mut signals).await, [(50, SHUTDOWN), (50, RELOAD)]);
    }

    #[tokio::test(start_paused = true)]
    async fn unsorted_schedule_runs_by_time() {
        let schedule = [(300, SHUTDOWN), (20, RELOAD), (300, RELOAD)];
        let mut signals = ScriptedSignals::new(schedule, TokioClock::new());

        assert_eq!(drain(&mut signals).await, [(20, RELOAD), (300, SHUTDOWN), (300, RELOAD)]);
    }

    #[tokio::test(start_paused = true)]
    async fn one_kind_at_one_instant_coalesces() {
        let schedule = [(10, RELOAD), (10, SHUTDOWN), (10, RELOAD), (10, SHUTDOWN)];
        let mut signals = ScriptedSignals::new(schedule, TokioClock::new());

        assert_eq!(signals.remaining(), 2);
        assert_eq!(drain(&mut signals).await, [(10, RELOAD), (10, SHUTDOWN)]);
    }

    #[tokio::test(start_paused = true)]
    async fn late_receiver_still_gets_every_instant() {
        let mut signals = ScriptedSignals::new([(10, RELOAD), (11, RELOAD)], TokioClock::new());

        tokio::time::advance(Duration::from_millis(500)).await;

        assert_eq!(drain(&mut signals).await, [(500, RELOAD), (500, RELOAD)]);
    }

    #[tokio::test(start_paused = true)]
    async fn merge_keeps_internal_origin() {
        let schedule = [(5, RELOAD), (5, INTERNAL_RELOAD), (9, INTERNAL_RELOAD), (9, RELOAD)];
        let mut signals = ScriptedSignals::new(schedule, TokioClock::new());

        assert_eq!(drain(&mut signals).await, [(5, INTERNAL_RELOAD), (9, INTERNAL_RELOAD)]);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_recv_loses_no_signal() {
        let clock = TokioClock::new();
        let mut signals = ScriptedSignals::new([(100, RELOAD)], clock);

        tokio::select! {
            biased;
            signal = signals.recv() => panic!("signal {signal:?} came before its time"),
            () = clock.sleep_until(60) => {}
        }

        assert_eq!(drain(&mut signals).await, [(100, RELOAD)]);
    }

    #[tokio::test(start_paused = true)]
    async fn spawned_receiver_wakes_on_advance() {
        let clock = TokioClock::new();
        let mut signals = ScriptedSignals::new([(100, SHUTDOWN)], clock);
        let receiver = tokio::spawn(async move { signals.recv().await });
        tokio::task::yield_now().await;

        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(!receiver.is_finished());

        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(receiver.await.ok().flatten(), Some(SHUTDOWN));
        assert_eq!(clock.now_ms(), 100);
    }
}
