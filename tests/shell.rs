//! The tokio shell on paused time: it feeds the core offers, signals, run ends and deadlines,
//! and carries out runs, saves and exits.
//!
//! Every test runs on a paused runtime, so time moves only when every task waits; a test reads
//! the time through the same [`TokioClock`] the shell and its agent use. The test agent records
//! each turn with its virtual start and end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use quiesce::adapter::TokioClock;
use quiesce::clock::Clock;
use quiesce::config::Config;
use quiesce::event::{Event, Phase, Refusal, Stamped};
use quiesce::gateway::{NoHooks, Reply};
use quiesce::handover;
use quiesce::message::Message;
use quiesce::shell::{
    Agent, Closer, Closing, ConfigReadError, ConfigSource, RunRequest, Shell, ShellExit,
};
use quiesce::signal::{Origin, ScriptedSignals, Signal, SignalKind, SignalSource};
use quiesce::store::MemoryStore;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;
use tracing_test::traced_test;

const USR1: Signal = Signal { kind: SignalKind::Reload, origin: Origin::External };
const TERM: Signal = Signal { kind: SignalKind::Shutdown, origin: Origin::External };

/// Message `id` of key `key`, written `key/id`; the key also names its session and destination.
fn msg(key_and_id: &str) -> Message {
    let (key, id) = key_and_id.split_once('/').expect("messages are written key/id");
    Message {
        channel: "tg".into(),
        id: id.into(),
        key: Some(key.into()),
        session: key.into(),
        destination: key.into(),
        text: id.into(),
        debounce: true,
        window_ms: None,
    }
}

/// The default config with a debounce window.
fn windowed(window_ms: u64) -> Config {
    let mut config = Config::default();
    config.inbound.window_ms = window_ms;
    config
}

/// One agent turn as the test agent saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Turn {
    session: String,
    attempt: u32,
    ids: Vec<String>,
    started_ms: u64,
    ended_ms: u64,
    success: bool,
}

/// An agent whose turns take a planned time per session and fail on planned attempts.
#[derive(Clone)]
struct TestAgent {
    clock: TokioClock,
    durations_ms: BTreeMap<String, u64>,
    failing: BTreeSet<(String, u32)>,
    /// Turns that ended, in the order they ended; an aborted turn never gets here.
    turns: Arc<Mutex<Vec<Turn>>>,
}

impl TestAgent {
    fn new(clock: TokioClock) -> Self {
        Self {
            clock,
            durations_ms: BTreeMap::new(),
            failing: BTreeSet::new(),
            turns: Arc::default(),
        }
    }

    /// Turns of `session` take `duration_ms`.
    fn taking(mut self, session: &str, duration_ms: u64) -> Self {
        self.durations_ms.insert(session.to_owned(), duration_ms);
        self
    }

    /// Turn `attempt` of `session` fails.
    fn failing(mut self, session: &str, attempt: u32) -> Self {
        self.failing.insert((session.to_owned(), attempt));
        self
    }

    fn turns(&self) -> Vec<Turn> {
        self.turns.lock().expect("no turn panicked").clone()
    }

    /// The ids of every message a successful turn carried, in order.
    fn delivered(&self) -> Vec<String> {
        let turns = self.turns().into_iter().filter(|t| t.success);
        turns.flat_map(|t| t.ids).collect()
    }
}

impl Agent for TestAgent {
    fn run(&mut self, request: RunRequest) -> impl Future<Output = bool> + Send + 'static {
        let session = request.session.to_string();
        let duration_ms = self.durations_ms.get(&session).copied().unwrap_or(0);
        let success = !self.failing.contains(&(session.clone(), request.attempt));
        let ids = request.messages.iter().map(|m| m.id.to_string()).collect();
        let (clock, turns, attempt) = (self.clock, Arc::clone(&self.turns), request.attempt);
        let started_ms = clock.now_ms();

        async move {
            clock.sleep_until(started_ms + duration_ms).await;
            let ended_ms = clock.now_ms();
            let turn = Turn { session, attempt, ids, started_ms, ended_ms, success };
            turns.lock().expect("no turn panicked").push(turn);
            success
        }
    }
}

/// A turn as the tests expect it.
fn turn(session: &str, attempt: u32, ids: &[&str], span_ms: (u64, u64), success: bool) -> Turn {
    let ids = ids.iter().map(|&id| id.to_owned()).collect();
    let (started_ms, ended_ms) = span_ms;
    Turn { session: session.to_owned(), attempt, ids, started_ms, ended_ms, success }
}

/// A config source that gives `config` on every reload.
fn same_config(config: &Config) -> impl ConfigSource {
    let config = config.clone();
    move || Ok::<_, ConfigReadError>(config.clone())
}

fn scripted(clock: TokioClock, schedule: &[(u64, Signal)]) -> ScriptedSignals<TokioClock> {
    ScriptedSignals::new(schedule.iter().copied(), clock)
}

/// A shell for `boot` whose reloads read `config` again.
fn shell<S: SignalSource>(
    config: Config,
    boot: u32,
    signals: S,
    store: &MemoryStore,
    agent: &TestAgent,
) -> Shell<TokioClock, S, TestAgent> {
    let (clock, source) = (agent.clock, same_config(&config));
    let hooks = Box::new(NoHooks);
    Shell::new(config, boot, hooks, clock, signals, store.clone(), agent.clone(), source)
}

/// Spawns the run loop inside the test's span, so its logs are captured, and lets it start.
async fn spawn<S: SignalSource + 'static>(
    shell: Shell<TokioClock, S, TestAgent>,
) -> JoinHandle<ShellExit> {
    let task = tokio::spawn(shell.run().instrument(tracing::Span::current()));
    tokio::task::yield_now().await;
    task
}

/// Every event published so far.
fn received(events: &mut mpsc::UnboundedReceiver<Stamped>) -> Vec<Stamped> {
    std::iter::from_fn(|| events.try_recv().ok()).collect()
}

/// The restart phases the events report, in order.
fn phases(events: &[Stamped]) -> Vec<Phase> {
    let phase = |e: &Stamped| match e.event {
        Event::Phase { phase, .. } => Some(phase),
        _ => None,
    };
    events.iter().filter_map(phase).collect()
}

#[tokio::test(start_paused = true)]
async fn offer_is_debounced_then_delivered() {
    let clock = TokioClock::new();
    let agent = TestAgent::new(clock);
    let shell = shell(windowed(100), 1, scripted(clock, &[]), &MemoryStore::new(), &agent);
    let handle = shell.handle();
    let _task = spawn(shell).await;

    assert_eq!(handle.offer(msg("a/1")).await, Reply::Accepted);
    clock.sleep_until(40).await;
    assert_eq!(handle.offer(msg("a/2")).await, Reply::Accepted);

    clock.sleep_until(139).await;
    assert_eq!(agent.turns(), []);
    clock.sleep_until(1_000).await;
    assert_eq!(agent.turns(), [turn("a", 1, &["1", "2"], (140, 140), true)]);
}

/// SPEC R28, through the shell.
#[tokio::test(start_paused = true)]
async fn reload_delivers_running_and_buffered_work() {
    let clock = TokioClock::new();
    let agent = TestAgent::new(clock).taking("a", 2_000).taking("b", 300);
    let signals = scripted(clock, &[(500, USR1)]);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let shell = shell(windowed(1_000), 1, signals, &MemoryStore::new(), &agent);
    let handle = shell.handle();
    let _task = spawn(shell.with_events(events_tx)).await;

    let a1 = Message { debounce: false, ..msg("a/1") };
    assert_eq!(handle.offer(a1).await, Reply::Accepted);
    clock.sleep_until(100).await;
    assert_eq!(handle.offer(msg("b/2")).await, Reply::Accepted);

    clock.sleep_until(5_000).await;
    let expected = [turn("b", 1, &["2"], (500, 800), true), turn("a", 1, &["1"], (0, 2_000), true)];
    assert_eq!(agent.turns(), expected);
    let status = handle.status().await.expect("the shell runs");
    assert_eq!((status.generation, status.phase, status.running), (1, None, 0));

    let events = received(&mut events);
    assert_eq!(phases(&events), Phase::ALL);
    let started = events
        .iter()
        .find(|e| matches!(e.event, Event::GenerationStarted { .. }) && e.generation == 1);
    assert_eq!(started.map(|e| e.at_ms), Some(2_000));
}

#[tokio::test(start_paused = true)]
async fn stop_saves_work_that_the_next_boot_delivers() {
    let clock = TokioClock::new();
    let store = MemoryStore::new();
    let mut config = Config::default();
    config.stop.deadline_ms = 1_000;
    let first_agent = TestAgent::new(clock).taking("a", 60_000);
    let first = shell(config.clone(), 1, scripted(clock, &[(100, TERM)]), &store, &first_agent);
    let handle = first.handle();
    let task = spawn(first).await;

    assert_eq!(handle.offer(msg("a/1")).await, Reply::Accepted);
    clock.sleep_until(10).await;
    assert_eq!(handle.offer(msg("a/2")).await, Reply::Accepted);
    clock.sleep_until(200).await;
    assert_eq!(handle.offer(msg("a/3")).await, Reply::Accepted);

    let exit = task.await.expect("the run loop does not panic");
    let expected = ShellExit { code: 0, runs_started: 1, runs_aborted: 1, messages_saved: 3 };
    assert_eq!((exit, clock.now_ms()), (expected, 1_100));
    assert_eq!(first_agent.turns(), []);

    let saved = handover::decode(&store.saved().expect("a state file")).expect("it decodes");
    let work = &saved.pending[0].work;
    let pending: Vec<(&str, bool)> =
        work.iter().map(|w| (w.batch.messages[0].id.as_str(), w.interrupted)).collect();
    assert_eq!(pending, [("1", true), ("2", false)]);
    assert_eq!(saved.intake, [msg("a/3")]);

    let second_agent = TestAgent::new(clock);
    let _second = spawn(shell(config, 2, scripted(clock, &[]), &store, &second_agent)).await;
    assert_eq!(store.saved(), None);
    clock.sleep_until(5_000).await;
    assert_eq!(second_agent.delivered(), ["1", "2", "3"]);
}

#[tokio::test(start_paused = true)]
async fn offer_after_exit_is_refused_as_stopping() {
    let clock = TokioClock::new();
    let agent = TestAgent::new(clock);
    let shell =
        shell(Config::default(), 1, scripted(clock, &[(0, TERM)]), &MemoryStore::new(), &agent);
    let handle = shell.handle();

    let exit = spawn(shell).await.await.expect("the run loop does not panic");
    assert_eq!(exit.code, 0);
    assert_eq!(handle.offer(msg("a/1")).await, Reply::Refused(Refusal::Stopping));
    assert_eq!(handle.status().await, None);
}

#[tokio::test(start_paused = true)]
#[traced_test]
async fn corrupt_state_file_is_set_aside() {
    let clock = TokioClock::new();
    let agent = TestAgent::new(clock);
    let store = MemoryStore::with_saved(b"not a state file".to_vec());
    let shell = shell(Config::default(), 2, scripted(clock, &[]), &store, &agent);
    let handle = shell.handle();
    let _task = spawn(shell).await;

    let aside = vec![("memory.corrupt.1".to_owned(), b"not a state file".to_vec())];
    assert_eq!(store.set_aside_entries(), aside);
    assert!(logs_contain("memory.corrupt.1"));

    assert_eq!(handle.offer(msg("a/1")).await, Reply::Accepted);
    clock.sleep_until(100).await;
    assert_eq!(agent.delivered(), ["1"]);
}

#[tokio::test(start_paused = true)]
#[traced_test]
async fn config_error_on_reload_keeps_the_config() {
    let clock = TokioClock::new();
    let agent = TestAgent::new(clock);
    let reads = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&reads);
    let source = move || {
        counted.fetch_add(1, Ordering::Relaxed);
        Err::<Config, _>("queue.cap: must be above 0")
    };
    let (signals, store) = (scripted(clock, &[]), MemoryStore::new());
    let hooks = Box::new(NoHooks);
    let shell = Shell::new(windowed(100), 1, hooks, clock, signals, store, agent.clone(), source);
    let handle = shell.handle();
    let _task = spawn(shell).await;

    assert!(handle.reload().await);
    clock.sleep_until(10).await;
    let status = handle.status().await.expect("the shell runs");
    assert_eq!((status.generation, reads.load(Ordering::Relaxed)), (1, 1));
    assert!(logs_contain("queue.cap: must be above 0"));

    assert_eq!(handle.offer(msg("a/1")).await, Reply::Accepted);
    clock.sleep_until(1_000).await;
    assert_eq!(agent.turns(), [turn("a", 1, &["1"], (110, 110), true)]);
}

#[tokio::test(start_paused = true)]
async fn failed_run_is_retried_after_the_back_off() {
    let clock = TokioClock::new();
    let agent = TestAgent::new(clock).taking("a", 200).failing("a", 1);
    let shell = shell(Config::default(), 1, scripted(clock, &[]), &MemoryStore::new(), &agent);
    let handle = shell.handle();
    let _task = spawn(shell).await;

    assert_eq!(handle.offer(msg("a/1")).await, Reply::Accepted);
    clock.sleep_until(5_000).await;

    // The back-off is `max(queue.quiet_ms, 100)`: 500 ms by default, from the failure.
    let failed = turn("a", 1, &["1"], (0, 200), false);
    assert_eq!(agent.turns(), [failed, turn("a", 2, &["1"], (700, 900), true)]);
}

#[tokio::test(start_paused = true)]
async fn timed_out_run_is_aborted() {
    let clock = TokioClock::new();
    let agent = TestAgent::new(clock).taking("a", 5_000);
    let mut config = Config::default();
    config.run.timeout_ms = 1_000;
    config.run.attempts_max = 1;
    let shell = shell(config, 1, scripted(clock, &[]), &MemoryStore::new(), &agent);
    let handle = shell.handle();
    let _task = spawn(shell).await;

    assert_eq!(handle.offer(msg("a/1")).await, Reply::Accepted);
    clock.sleep_until(10_000).await;

    // The turn would have ended at 5,000 had its task not been aborted at the timeout.
    assert_eq!(agent.turns(), []);
    let status = handle.status().await.expect("the shell runs");
    assert_eq!((status.running, status.queued), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn channel_disconnect_flushes_its_buffer() {
    let clock = TokioClock::new();
    let agent = TestAgent::new(clock);
    let shell = shell(windowed(1_000), 1, scripted(clock, &[]), &MemoryStore::new(), &agent);
    let handle = shell.handle();
    let _task = spawn(shell).await;

    assert_eq!(handle.offer(msg("a/1")).await, Reply::Accepted);
    clock.sleep_until(300).await;
    assert!(handle.channel_disconnected("tg".into()).await);

    clock.sleep_until(5_000).await;
    assert_eq!(agent.turns(), [turn("a", 1, &["1"], (300, 300), true)]);
}

/// A closer that takes `close_ms` to close.
struct SlowCloser {
    clock: TokioClock,
    close_ms: u64,
}

impl Closer for SlowCloser {
    fn close(&mut self) -> Closing {
        let (clock, closed_ms) = (self.clock, self.clock.now_ms() + self.close_ms);
        Box::pin(async move { clock.sleep_until(closed_ms).await })
    }
}

#[tokio::test(start_paused = true)]
async fn reload_waits_for_the_closer() {
    let clock = TokioClock::new();
    let agent = TestAgent::new(clock);
    let closer = SlowCloser { clock, close_ms: 200 };
    let shell = shell(Config::default(), 1, scripted(clock, &[]), &MemoryStore::new(), &agent);
    let handle = shell.handle();
    let _task = spawn(shell.with_closer(closer)).await;

    assert!(handle.reload().await);
    clock.sleep_until(199).await;
    let status = handle.status().await.expect("the shell runs");
    assert_eq!((status.generation, status.phase), (0, Some(Phase::HandOver)));

    clock.sleep_until(200).await;
    let status = handle.status().await.expect("the shell runs");
    assert_eq!((status.generation, status.phase), (1, None));
}

#[tokio::test(start_paused = true)]
async fn panicking_agent_counts_as_a_failure() {
    let clock = TokioClock::new();
    let retried_at = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&retried_at);
    let agent = move |request: RunRequest| {
        let recorded = Arc::clone(&recorded);
        async move {
            assert!(request.attempt > 1, "the agent panics on a first attempt");
            recorded.lock().expect("no retry panicked").push(clock.now_ms());
            true
        }
    };
    let (signals, source) = (scripted(clock, &[]), same_config(&Config::default()));
    let hooks = Box::new(NoHooks);
    let store = MemoryStore::new();
    let shell = Shell::new(Config::default(), 1, hooks, clock, signals, store, agent, source);
    let handle = shell.handle();
    let _task = tokio::spawn(shell.run());
    tokio::task::yield_now().await;

    assert_eq!(handle.offer(msg("a/1")).await, Reply::Accepted);
    clock.sleep_until(5_000).await;
    assert_eq!(*retried_at.lock().expect("no retry panicked"), [500]);
}

/// A signal source that is closed from the start and counts how often it is asked.
struct ClosedSignals {
    polls: Arc<AtomicUsize>,
}

impl SignalSource for ClosedSignals {
    /// Yields once before saying it is closed, so a loop that kept asking would let the test
    /// run and see the count grow, instead of hanging it.
    async fn recv(&mut self) -> Option<Signal> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        tokio::task::yield_now().await;
        None
    }
}

#[tokio::test(start_paused = true)]
async fn closed_signal_source_is_not_polled_again() {
    let clock = TokioClock::new();
    let agent = TestAgent::new(clock);
    let polls = Arc::new(AtomicUsize::new(0));
    let signals = ClosedSignals { polls: Arc::clone(&polls) };
    let shell = shell(windowed(50), 1, signals, &MemoryStore::new(), &agent);
    let handle = shell.handle();
    let _task = spawn(shell).await;

    assert_eq!(handle.offer(msg("a/1")).await, Reply::Accepted);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(polls.load(Ordering::Relaxed), 1);

    clock.sleep_until(1_000).await;
    assert_eq!(agent.turns(), [turn("a", 1, &["1"], (50, 50), true)]);
}
