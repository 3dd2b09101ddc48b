//! A virtual-time driver for the gateway core, and a compact event log to check against.
//!
//! The [`Harness`] owns a [`Gateway`] and a schedule of inputs. It jumps time to whichever
//! comes first, the next scheduled input or the gateway's next deadline, so a test reads as a
//! list of arrivals and signals at virtual times. It plays the agent and the listeners too:
//! every run ends after its planned duration (0 ms unless planned otherwise) with its planned
//! result, and every `Effect::Close` is answered with `close_finished` (at once unless planned
//! otherwise).
//!
//! Tests compare a filtered rendering of the typed event log with the expected text through
//! [`check`], so a change in the core's API touches this file, not every test.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use quiesce::config::Config;
use quiesce::effect::Effect;
use quiesce::event::{Admission, Cause, Event, Phase, PhaseCounts, RunId, Stamped};
use quiesce::gateway::{Gateway, Hooks, Reply};
use quiesce::message::{Batch, ChannelId, Identity, Message};
use quiesce::signal::{Origin, Signal, SignalKind};

/// The channel of every message unless a test names another.
pub const CHANNEL: &str = "tg";

/// The error a scripted admission fault reports.
pub const ADMISSION_FAULT: &str = "scripted fault";

/// The error a failing error callback reports.
pub const CALLBACK_FAULT: &str = "callback down";

/// A guard against a core that keeps asking for ticks without making progress (SPEC L3).
const STEPS_MAX: usize = 100_000;

/// Builds a message from the SPEC's `key/id` notation: `msg("a/1")` is message 1 of key `a`.
///
/// The key also names its session and destination unless the test says otherwise; the text is
/// the id. Messages are debounced by default, like ordinary chat messages.
pub fn msg(key_and_id: &str) -> Message {
    let (key, id) = key_and_id.split_once('/').expect("messages are written key/id");
    Message {
        channel: CHANNEL.into(),
        id: id.into(),
        key: Some(key.into()),
        session: key.into(),
        destination: key.into(),
        text: id.into(),
        debounce: true,
        window_ms: None,
    }
}

/// Test-only setters for [`Message`], so each case states only what differs from [`msg`].
pub trait MessageExt {
    /// Sent with the `debounce` flag off, as a control message is.
    fn undebounced(self) -> Self;
    /// The per-item window resolver's answer.
    fn window(self, window_ms: i64) -> Self;
    /// Feeds another session.
    fn session(self, session: &str) -> Self;
    /// Replies to another destination.
    fn destination(self, destination: &str) -> Self;
    /// Comes from another channel.
    fn channel(self, channel: &str) -> Self;
    /// Carries this text.
    fn text(self, text: &str) -> Self;
}

impl MessageExt for Message {
    fn undebounced(self) -> Self {
        Self { debounce: false, ..self }
    }

    fn window(self, window_ms: i64) -> Self {
        Self { window_ms: Some(window_ms), ..self }
    }

    fn session(self, session: &str) -> Self {
        Self { session: session.into(), ..self }
    }

    fn destination(self, destination: &str) -> Self {
        Self { destination: destination.into(), ..self }
    }

    fn channel(self, channel: &str) -> Self {
        Self { channel: channel.into(), ..self }
    }

    fn text(self, text: &str) -> Self {
        Self { text: text.into(), ..self }
    }
}

/// The default config with a debounce window: the SPEC's `D(w)`.
pub fn debounced(window_ms: u64) -> Config {
    let mut config = Config::default();
    config.inbound.window_ms = window_ms;
    config
}

/// The ids of messages, in order.
pub fn ids(identities: &[Identity]) -> Vec<String> {
    identities.iter().map(|identity| identity.id.to_string()).collect()
}

/// The ids of a batch's messages, in order.
pub fn batch_ids(batch: &Batch) -> Vec<String> {
    ids(&batch.identities())
}

/// Compares log lines with the expected text: one line per line, indentation and blank lines
/// ignored.
#[track_caller]
pub fn check(actual: Vec<String>, expected: &str) {
    let expected: Vec<&str> = expected.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if actual != expected {
        panic!(
            "event log differs\n--- expected\n{}\n--- actual\n{}\n",
            expected.join("\n"),
            actual.join("\n")
        );
    }
}

/// Scripted admission faults and error callback failures, shared with the test.
#[derive(Clone, Debug, Default)]
pub struct Faults(Arc<Mutex<FaultState>>);

#[derive(Debug, Default)]
struct FaultState {
    /// Message ids whose batch fails admission.
    refused: BTreeSet<String>,
    /// Whether the error callback fails.
    callback_fails: bool,
    /// What the error callback was told: the error and the batch's ids.
    told: Vec<(String, Vec<String>)>,
}

impl Faults {
    /// Fails the admission of any batch holding message `id`.
    pub fn refuse(self, id: &str) -> Self {
        self.state().refused.insert(id.to_owned());
        self
    }

    /// Fails admission of every batch.
    pub fn refuse_all(self) -> Self {
        self.state().refused.insert(String::new());
        self
    }

    /// Makes the error callback fail.
    pub fn failing_callback(self) -> Self {
        self.state().callback_fails = true;
        self
    }

    /// Every call of the error callback: the error and the batch's ids.
    pub fn told(&self) -> Vec<(String, Vec<String>)> {
        self.state().told.clone()
    }

    fn state(&self) -> MutexGuard<'_, FaultState> {
        self.0.lock().expect("no test panics while holding the fault state")
    }
}

impl Hooks for Faults {
    fn check_admission(&mut self, batch: &Batch, _now_ms: u64) -> Result<(), String> {
        let state = self.state();
        let refused = state.refused.contains("")
            || batch.messages.iter().any(|m| state.refused.contains(m.id.as_str()));
        if refused { Err(ADMISSION_FAULT.to_owned()) } else { Ok(()) }
    }

    fn on_error(&mut self, error: &str, batch: &Batch) -> Result<(), String> {
        let mut state = self.state();
        state.told.push((error.to_owned(), batch_ids(batch)));
        if state.callback_fails { Err(CALLBACK_FAULT.to_owned()) } else { Ok(()) }
    }
}

/// How a run goes: how long it takes (`None`: it never ends by itself) and whether it succeeds.
#[derive(Clone, Copy, Debug)]
pub struct RunPlan {
    /// How long it takes.
    pub duration_ms: Option<u64>,
    /// Whether it ends as a success.
    pub success: bool,
}

impl RunPlan {
    /// A run that succeeds after `duration_ms`.
    pub fn lasting(duration_ms: u64) -> Self {
        Self { duration_ms: Some(duration_ms), success: true }
    }

    /// A run that fails after `duration_ms`.
    pub fn failing(duration_ms: u64) -> Self {
        Self { duration_ms: Some(duration_ms), success: false }
    }
}

/// A scheduled input.
#[derive(Debug)]
enum Input {
    Accept(Message),
    Signal(Signal, Option<Config>),
    Disconnect(ChannelId),
    RunEnd(RunId, bool),
    CloseFinished,
}

/// A gateway on virtual time with a scripted world around it.
pub struct Harness {
    gateway: Gateway,
    now_ms: u64,
    /// Scheduled inputs by (time, order of scheduling).
    inputs: BTreeMap<(u64, u64), Input>,
    next_seq: u64,
    default_run: RunPlan,
    plans: BTreeMap<RunId, RunPlan>,
    close_delay_ms: Option<u64>,
    events: Vec<Stamped>,
    effects: Vec<(u64, Effect)>,
    /// Each run's input text, as it was when the run started.
    texts: BTreeMap<RunId, String>,
    replies: Vec<(Identity, Reply)>,
}

impl Harness {
    /// Boot 1 of a gateway with `config` and no faults, started at t=0.
    pub fn new(config: Config) -> Self {
        Self::with_faults(config, Faults::default())
    }

    /// Boot 1 of a gateway with `config` and scripted faults, started at t=0.
    pub fn with_faults(config: Config, faults: Faults) -> Self {
        let mut gateway = Gateway::new(config, 1, Box::new(faults));
        gateway.start(0, None);
        let mut harness = Self {
            gateway,
            now_ms: 0,
            inputs: BTreeMap::new(),
            next_seq: 0,
            default_run: RunPlan::lasting(0),
            plans: BTreeMap::new(),
            close_delay_ms: Some(0),
            events: Vec::new(),
            effects: Vec::new(),
            texts: BTreeMap::new(),
            replies: Vec::new(),
        };
        harness.collect();
        harness
    }

    /// Every run without a plan of its own goes this way.
    pub fn runs_go(&mut self, plan: RunPlan) -> &mut Self {
        self.default_run = plan;
        self
    }

    /// Run number `run` (from 1 in the boot) goes this way.
    pub fn run_goes(&mut self, run: RunId, plan: RunPlan) -> &mut Self {
        self.plans.insert(run, plan);
        self
    }

    /// Listeners and channels take `delay_ms` to close (`None`: they never report closed).
    pub fn close_takes(&mut self, delay_ms: Option<u64>) -> &mut Self {
        self.close_delay_ms = delay_ms;
        self
    }

    /// Offers `message` at `at_ms`.
    pub fn accept(&mut self, at_ms: u64, message: Message) -> &mut Self {
        self.schedule(at_ms, Input::Accept(message))
    }

    /// Delivers a signal at `at_ms`, with no config read afresh.
    pub fn signal(&mut self, at_ms: u64, kind: SignalKind, origin: Origin) -> &mut Self {
        self.schedule(at_ms, Input::Signal(Signal { kind, origin }, None))
    }

    /// Disconnects a channel at `at_ms`.
    pub fn disconnect(&mut self, at_ms: u64, channel: &str) -> &mut Self {
        self.schedule(at_ms, Input::Disconnect(channel.into()))
    }

    /// Handles every input and deadline up to and including `end_ms`.
    pub fn run_until(&mut self, end_ms: u64) -> &mut Self {
        for _ in 0..STEPS_MAX {
            let input_ms = self.inputs.first_key_value().map(|(&(at_ms, _), _)| at_ms);
            let timer_ms = self.gateway.next_deadline();
            let Some(at_ms) = input_ms.into_iter().chain(timer_ms).min() else { return self };
            if at_ms > end_ms {
                return self;
            }
            assert!(
                at_ms >= self.now_ms,
                "a deadline {at_ms} fell behind the clock {}",
                self.now_ms
            );
            self.now_ms = at_ms;
            if input_ms == Some(at_ms) {
                let (_, input) = self.inputs.pop_first().expect("an input is scheduled");
                self.deliver(input);
            } else {
                self.gateway.tick(at_ms);
            }
            self.collect();
        }
        panic!("no progress after {STEPS_MAX} steps at t={}", self.now_ms);
    }

    /// Handles everything scheduled and everything that follows from it.
    pub fn run_to_end(&mut self) -> &mut Self {
        self.run_until(u64::MAX)
    }

    /// The gateway, for its status and places.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The effects so far, with when they were asked for.
    pub fn effects(&self) -> &[(u64, Effect)] {
        &self.effects
    }

    /// The replies to the accepted offers, in order.
    pub fn replies(&self) -> Vec<Reply> {
        self.replies.iter().map(|(_, reply)| *reply).collect()
    }

    /// A run's input text as it started.
    pub fn run_text(&self, run: RunId) -> &str {
        self.texts.get(&run).map_or_else(|| panic!("run {run} never started"), String::as_str)
    }

    /// The event log, one line per event that a filter selects.
    ///
    /// A filter is an event name (`"phase"`), optionally followed by the start of its details
    /// (`"phase flush"`, `"outcome 2"`).
    pub fn log(&self, filters: &[&str]) -> Vec<String> {
        for filter in filters {
            let name = filter.split(' ').next().unwrap_or_default();
            assert!(EVENT_NAMES.contains(&name), "no event is named {name:?}: {EVENT_NAMES:?}");
        }
        let lines = self.events.iter().map(render);
        lines.filter(|line| filters.iter().any(|filter| selects(filter, line))).collect()
    }

    fn schedule(&mut self, at_ms: u64, input: Input) -> &mut Self {
        assert!(at_ms >= self.now_ms, "an input at {at_ms} is in the past of {}", self.now_ms);
        self.inputs.insert((at_ms, self.next_seq), input);
        self.next_seq += 1;
        self
    }

    fn deliver(&mut self, input: Input) {
        let now_ms = self.now_ms;
        match input {
            Input::Accept(message) => {
                let identity = message.identity();
                let reply = self.gateway.accept(now_ms, message);
                self.replies.push((identity, reply));
            }
            Input::Signal(signal, config) => self.gateway.signal(now_ms, signal, config),
            Input::Disconnect(channel) => self.gateway.channel_disconnected(now_ms, &channel),
            Input::RunEnd(run, success) => self.gateway.run_finished(now_ms, run, success),
            Input::CloseFinished => self.gateway.close_finished(now_ms),
        }
    }

    /// Takes the gateway's events and carries out its effects.
    fn collect(&mut self) {
        self.events.extend(self.gateway.take_events());
        for effect in self.gateway.take_effects() {
            self.carry_out(&effect);
            self.effects.push((self.now_ms, effect));
        }
    }

    fn carry_out(&mut self, effect: &Effect) {
        match *effect {
            Effect::StartRun { run } => {
                let text = self.gateway.run(run).expect("a started run is in progress").text();
                self.texts.insert(run, text);
                let plan = self.plans.get(&run).copied().unwrap_or(self.default_run);
                if let Some(duration_ms) = plan.duration_ms {
                    self.schedule(self.now_ms + duration_ms, Input::RunEnd(run, plan.success));
                }
            }
            Effect::CancelRun { run } => {
                self.inputs.retain(|_, input| !matches!(input, Input::RunEnd(r, _) if *r == run));
            }
            Effect::Close => {
                if let Some(delay_ms) = self.close_delay_ms {
                    self.schedule(self.now_ms + delay_ms, Input::CloseFinished);
                }
            }
            Effect::Save(_) | Effect::Exit(_) => {}
        }
    }
}

/// Every event name [`Harness::log`] renders.
const EVENT_NAMES: [&str; 26] = [
    "state_restored",
    "accepted",
    "refused",
    "buffered",
    "intake",
    "flushed",
    "admitted",
    "deferred",
    "admission_failed",
    "callback_failed",
    "run_started",
    "run_finished",
    "requeued",
    "outcome",
    "channel_closed",
    "signal",
    "signal_ignored",
    "signal_deferred",
    "became_stop",
    "restart_began",
    "phase",
    "drain_warning",
    "handed_over",
    "generation_started",
    "state_saved",
    "exit",
];

/// Whether `filter` selects `line`: the line's event part starts with the filter's words.
fn selects(filter: &str, line: &str) -> bool {
    let mut parts = line.splitn(3, ' ');
    let event = parts.nth(2).expect("a line is `time generation event`");
    let words = filter.split(' ').count();
    event.split(' ').take(words).eq(filter.split(' '))
}

/// One event as `time generation name details`, for instance `10 g0 admitted [1 2] run 1`.
fn render(stamped: &Stamped) -> String {
    let details = match &stamped.event {
        Event::StateRestored { messages } => format!("state_restored {}", list(messages)),
        Event::Accepted { message, .. } => format!("accepted {}", message.id),
        Event::Refused { message, reason } => format!("refused {} {reason:?}", message.id),
        Event::Buffered { message, due_ms, .. } => format!("buffered {} due {due_ms}", message.id),
        Event::Intake { message } => format!("intake {}", message.id),
        Event::Flushed { key, messages, cause } => {
            format!("flushed {key} {} {cause:?}", list(messages))
        }
        Event::Admitted { messages, into, .. } => match into {
            Admission::Run(run) => format!("admitted {} run {run}", list(messages)),
            Admission::Queued => format!("admitted {} queued", list(messages)),
        },
        Event::Deferred { messages } => format!("deferred {}", list(messages)),
        Event::AdmissionFailed { messages, error } => {
            format!("admission_failed {} {error:?}", list(messages))
        }
        Event::CallbackFailed { messages, error } => {
            format!("callback_failed {} {error:?}", list(messages))
        }
        Event::RunStarted { run, attempt, messages, summarized, .. } => {
            let summary =
                if *summarized > 0 { format!(" summary {summarized}") } else { String::new() };
            format!("run_started {run} {} attempt {attempt}{summary}", list(messages))
        }
        Event::RunFinished { run, end, .. } => format!("run_finished {run} {end:?}"),
        Event::Requeued { run, messages, retry_at_ms, .. } => {
            format!("requeued {run} {} retry_at {retry_at_ms}", list(messages))
        }
        Event::Outcome { message, kind, cause } => {
            format!("outcome {} {} {}", message.id, kind.name(), cause_text(cause))
        }
        Event::ChannelClosed { channel } => format!("channel_closed {channel}"),
        Event::Signal { kind, origin } => format!("signal {kind:?} {origin:?}"),
        Event::SignalIgnored { kind, reason } => format!("signal_ignored {kind:?} {reason:?}"),
        Event::SignalDeferred { kind } => format!("signal_deferred {kind:?}"),
        Event::BecameStop { deadline_ms } => format!("became_stop deadline {deadline_ms}"),
        Event::RestartBegan { kind, deadline_ms } => {
            format!("restart_began {kind:?} deadline {deadline_ms}")
        }
        Event::Phase { phase, counts } => {
            format!("phase {}{}", phase.name(), counts_text(*phase, counts))
        }
        Event::DrainWarning { remaining } => format!("drain_warning remaining={remaining}"),
        Event::HandedOver { pending, summaries, intake } => {
            let summaries =
                if *summaries > 0 { format!(" summaries {summaries}") } else { String::new() };
            format!("handed_over pending {}{summaries} intake {}", list(pending), list(intake))
        }
        Event::GenerationStarted { pending, intake } => {
            format!("generation_started pending {} intake {}", list(pending), list(intake))
        }
        Event::StateSaved { messages } => format!("state_saved {}", list(messages)),
        Event::Exit { code } => format!("exit {code}"),
    };
    format!("{} g{} {details}", stamped.at_ms, stamped.generation)
}

fn list(identities: &[Identity]) -> String {
    format!("[{}]", ids(identities).join(" "))
}

fn cause_text(cause: &Cause) -> String {
    match cause {
        Cause::Run(run) => format!("by run {run}"),
        Cause::Admission(error) => format!("by {error:?}"),
        Cause::Attempts(attempts) => format!("after {attempts} attempts"),
        Cause::Cap(cap) => format!("at cap {cap}"),
        Cause::Cancel => "by cancel".to_owned(),
    }
}

/// The counts a phase has, as `name=value` pairs.
fn counts_text(phase: Phase, counts: &PhaseCounts) -> String {
    let PhaseCounts { flushed, remaining, drained, pending, intake } = *counts;
    match phase {
        Phase::Flush => format!(" flushed={flushed} remaining={remaining} drained={drained}"),
        Phase::Wait => format!(" remaining={remaining} drained={drained}"),
        Phase::HandOver => format!(" pending={pending} intake={intake}"),
        Phase::Hold | Phase::MarkDraining | Phase::Close => String::new(),
    }
}
