//! The oracle: the invariants of SPEC section 6 as named items, checked on the typed events.
//!
//! The oracle keeps a ledger of every accepted message: where the events say it is, or its
//! outcome. Each event must move a message from a place it is in, so a message that appears
//! twice, skips a place or gets a second outcome fails at once (S1). After every input the
//! ledger is compared with where the core really holds messages, so a message the core drops
//! without an event fails at the same input, not at the end.
//!
//! That comparison is kept cheap: the ledger counts its messages per place as they move, and
//! after an ordinary input only those counts are compared with the core's
//! ([`Gateway::place_counts`]). A message lost or duplicated changes a count, and a count that
//! differs triggers the full comparison, message by message, which names the culprit. The full
//! comparison also runs after every input that moves a restart on (a signal, a phase, a
//! handover, a state file, an exit), so a message that swapped places with another without
//! changing any count is still caught by the end of the restart it happened in.

use std::collections::BTreeMap;

use foldhash::HashMap;
use std::fmt;

use quiesce::event::{
    Admission, Cause, Event, FlushCause, IgnoreReason, OutcomeKind, Phase, PhaseCounts, Refusal,
    RunEnd, RunId, Stamped,
};
use quiesce::gateway::{Gateway, Place};
use quiesce::message::{Identity, Key, SessionId};
use quiesce::pipeline::RETRY_MIN_MS;
use quiesce::signal::{Origin, SignalKind};

use crate::driver::{Entry, Note, Observer, View};

/// One invariant of SPEC section 6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// Conservation: each accepted message is in exactly one place or has exactly one outcome,
    /// and every outcome but `delivered` has its cause in the scenario.
    S1,
    /// Per-key order: a key's messages are admitted, and complete, in acceptance order.
    S2,
    /// Restart order: the phases of each restart happen in the order of SPEC 4.2, each once.
    S3,
    /// Draining: after phase 4, no run starts in that generation.
    S4,
    /// One restart at a time, and second signals as SPEC 4.3 says.
    S5,
    /// Honest warning: the drain warning comes exactly when work remains at the deadline, with
    /// that number, and each message it counts is handed over or still running.
    S6,
    /// Bounded restart: every restart ends by its deadline plus the close budget.
    L1,
    /// Eventual outcome: after the quiet period every accepted message has an outcome.
    L2,
    /// No spinning: no retry before its back-off, no run of inputs without progress.
    L3,
}

impl Invariant {
    /// Every invariant, in SPEC order.
    pub const ALL: [Invariant; 9] = [
        Invariant::S1,
        Invariant::S2,
        Invariant::S3,
        Invariant::S4,
        Invariant::S5,
        Invariant::S6,
        Invariant::L1,
        Invariant::L2,
        Invariant::L3,
    ];

    /// Its short name and title.
    pub fn title(self) -> &'static str {
        match self {
            Self::S1 => "S1 conservation",
            Self::S2 => "S2 per-key order",
            Self::S3 => "S3 restart order",
            Self::S4 => "S4 draining",
            Self::S5 => "S5 one restart at a time",
            Self::S6 => "S6 honest warning",
            Self::L1 => "L1 bounded restart",
            Self::L2 => "L2 eventual outcome",
            Self::L3 => "L3 no spinning",
        }
    }
}

/// An invariant that failed, with its shortest witness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: Invariant,
    /// When it failed, in virtual ms.
    pub at_ms: u64,
    /// What is wrong, in one sentence with the ids involved.
    pub reason: String,
}

impl Violation {
    /// A violation of `invariant` found at `at_ms`.
    pub fn new(invariant: Invariant, at_ms: u64, reason: impl Into<String>) -> Self {
        Self { invariant, at_ms, reason: reason.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} violated at t={} ms: {}", self.invariant.title(), self.at_ms, self.reason)
    }
}

/// How often each interesting situation happened, by name (DESIGN "Oracle").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    counts: BTreeMap<&'static str, u64>,
}

impl Coverage {
    /// Every fact the exploration aims to reach, in print order.
    pub const FACTS: &'static [&'static str] = &[
        SIGNAL_IN_WINDOW,
        SIGNAL_AT_TIMER_FLUSH,
        SIGNAL_DURING_WAIT,
        SIGNALS_CLOSE_TOGETHER,
        STOP_DURING_RELOAD,
        DEADLINE_REACHED,
        RUN_OUTLIVED_DEADLINE,
        TRAFFIC_DURING_RESTART,
        RECONNECT_WITH_BUFFER,
        FULL_QUEUE,
        FULL_INTAKE,
        HANDOVER_NON_EMPTY,
        STATE_RESTORED,
        DEAD_LETTER,
        OVERFLOW_DROP,
        DUPLICATE_REFUSED,
        ADMISSION_FAILED,
        RELOAD_DEFERRED,
        FAILED_WHILE_DRAINING,
    ];

    /// Counts one occurrence of `fact`.
    pub fn hit(&mut self, fact: &'static str) {
        *self.counts.entry(fact).or_insert(0) += 1;
    }

    /// How often `fact` happened.
    pub fn count(&self, fact: &str) -> u64 {
        self.counts.get(fact).copied().unwrap_or(0)
    }

    /// Adds another run's counts.
    pub fn merge(&mut self, other: &Coverage) {
        for (fact, n) in &other.counts {
            *self.counts.entry(fact).or_insert(0) += n;
        }
    }

    /// Every fact with its count, in [`Coverage::FACTS`] order.
    pub fn facts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Self::FACTS.iter().map(|fact| (*fact, self.count(fact)))
    }
}

/// A signal arrived while a message waited in a debounce buffer.
pub const SIGNAL_IN_WINDOW: &str = "signal_in_debounce_window";
/// A signal arrived at the very millisecond a buffer's timer flushed.
pub const SIGNAL_AT_TIMER_FLUSH: &str = "signal_at_timer_flush";
/// A signal arrived during a restart's wait phase.
pub const SIGNAL_DURING_WAIT: &str = "signal_during_wait";
/// A signal arrived while a restart was in progress.
pub const SIGNALS_CLOSE_TOGETHER: &str = "signals_close_together";
/// A stop turned a reload into a stop.
pub const STOP_DURING_RELOAD: &str = "stop_during_reload";
/// A restart's wait reached its deadline with work pending.
pub const DEADLINE_REACHED: &str = "deadline_reached";
/// A run was still going when its restart handed over.
pub const RUN_OUTLIVED_DEADLINE: &str = "run_outlived_deadline";
/// A message was accepted while a restart was in progress.
pub const TRAFFIC_DURING_RESTART: &str = "traffic_during_restart";
/// A channel reconnect flushed a buffer.
pub const RECONNECT_WITH_BUFFER: &str = "reconnect_with_buffer";
/// A queue was full: a message was dropped or rejected.
pub const FULL_QUEUE: &str = "full_queue";
/// The intake was full: a message was refused as busy.
pub const FULL_INTAKE: &str = "full_intake";
/// A handover held messages.
pub const HANDOVER_NON_EMPTY: &str = "handover_non_empty";
/// A boot restored a state file with messages.
pub const STATE_RESTORED: &str = "state_file_restored";
/// A batch was dead-lettered.
pub const DEAD_LETTER: &str = "dead_letter";
/// A message was dropped by the `old` or `summarize` policy.
pub const OVERFLOW_DROP: &str = "overflow_drop";
/// A duplicate was refused.
pub const DUPLICATE_REFUSED: &str = "duplicate_refused";
/// An admission failed by a scripted fault.
pub const ADMISSION_FAILED: &str = "admission_failed";
/// A reload during a reload was deferred.
pub const RELOAD_DEFERRED: &str = "reload_deferred";
/// A run failed or timed out after its generation marked draining.
pub const FAILED_WHILE_DRAINING: &str = "run_failed_while_draining";

/// Where the oracle believes an accepted message is, from the events alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    /// Accepted in this input; the input's later events place it.
    Accepted,
    /// Flushed from a buffer; admission follows in the same input.
    Flushing,
    In(Place),
    StateFile,
    Done(OutcomeKind),
}

/// One accepted message in the ledger.
#[derive(Clone, Debug)]
struct Ledger {
    held: Held,
    key: Option<Key>,
    /// Acceptance order over the whole run.
    index: u64,
}

/// A restart in progress, as the events tell it.
#[derive(Clone, Debug)]
struct RestartSeen {
    kind: SignalKind,
    deadline_ms: u64,
    close_budget_ms: u64,
    next_phase: usize,
    warning: Option<usize>,
}

/// Checks every invariant on a run's entries; collects coverage facts.
#[derive(Debug)]
pub struct Oracle {
    /// The restart's phases in the order the plan runs them (S3).
    phases: &'static [Phase],
    coverage: Coverage,
    ledger: HashMap<Identity, Ledger>,
    /// How many ledger messages each place holds, empty places left out.
    tally: BTreeMap<Place, usize>,
    /// How many ledger messages are accepted or flushing: placed by the input's later events.
    unplaced: usize,
    /// Per key, acceptance indices in order, and the last admitted index.
    keys: HashMap<Key, KeyOrder>,
    next_index: u64,
    restart: Option<RestartSeen>,
    /// (boot, generation) pairs that have marked draining.
    draining: Vec<(u32, u32)>,
    /// Per session, the earliest time its requeued work may run again.
    retry_at: HashMap<SessionId, u64>,
    /// The signal whose consequence the next event must show.
    signal: Option<(SignalKind, Origin)>,
    last_timer_flush_ms: Option<u64>,
    /// The batch whose admission failed last; its messages may end `failed`.
    failed_batch: Vec<Identity>,
}

/// The order of one key's messages.
#[derive(Clone, Debug, Default)]
struct KeyOrder {
    accepted: Vec<Identity>,
    last_admitted: Option<u64>,
}

type Check = Result<(), Violation>;

impl Default for Oracle {
    fn default() -> Self {
        Self::with_phases(&Phase::ALL)
    }
}

impl Oracle {
    /// An oracle for one run under the SPEC plan.
    pub fn new() -> Self {
        Self::default()
    }

    /// An oracle for one run under a plan whose restarts run `phases` in this order: S3 holds
    /// a restart to them, and nothing else changes. A historical plan is found by the damage
    /// it does, not by its order.
    pub fn with_phases(phases: &'static [Phase]) -> Self {
        Self {
            phases,
            coverage: Coverage::default(),
            ledger: HashMap::default(),
            tally: BTreeMap::new(),
            unplaced: 0,
            keys: HashMap::default(),
            next_index: 0,
            restart: None,
            draining: Vec::new(),
            retry_at: HashMap::default(),
            signal: None,
            last_timer_flush_ms: None,
            failed_batch: Vec::new(),
        }
    }

    /// Whether the restart in progress waits for the drain next.
    fn waiting(&self, restart: &RestartSeen) -> bool {
        self.phases.get(restart.next_phase) == Some(&Phase::Wait)
    }

    /// What the run reached.
    pub fn coverage(&self) -> &Coverage {
        &self.coverage
    }

    fn entry(&mut self, view: &View<'_>, entry: &Entry) -> Check {
        match entry {
            Entry::World { note: Note::RefusedDown { .. } | Note::SignalLost { .. }, .. } => Ok(()),
            Entry::World { note: Note::ProcessStarted, .. } => Ok(()),
            Entry::Core(stamped) => self.event(view, stamped),
        }
    }

    fn event(&mut self, view: &View<'_>, stamped: &Stamped) -> Check {
        let at = stamped.at_ms;
        self.check_signal_consequence(at, &stamped.event)?;
        match &stamped.event {
            Event::Accepted { message, key, .. } => self.accepted(at, message, key.as_ref()),
            Event::Refused { reason, .. } => {
                self.refused(*reason);
                Ok(())
            }
            Event::Buffered { message, .. } => {
                self.coverage_buffered();
                self.shift(
                    at,
                    message,
                    &[Held::Accepted, Held::In(Place::Intake)],
                    Held::In(Place::Buffer),
                )
            }
            Event::Intake { message } => {
                self.shift(at, message, &[Held::Accepted], Held::In(Place::Intake))
            }
            Event::Flushed { messages, cause, .. } => self.flushed(at, messages, *cause),
            Event::Admitted { messages, into, .. } => self.admitted(at, messages, *into),
            Event::Deferred { messages } => self.deferred(at, messages),
            Event::AdmissionFailed { messages, error } => {
                self.admission_failed(view, at, messages, error)
            }
            Event::CallbackFailed { .. } | Event::ChannelClosed { .. } => Ok(()),
            Event::RunStarted { run, messages, attempt, session, .. } => {
                self.run_started(stamped, *run, messages, *attempt, session)
            }
            Event::RunFinished { end: RunEnd::Failure | RunEnd::Timeout, .. } => {
                if self.draining.contains(&(stamped.boot, stamped.generation)) {
                    self.coverage.hit(FAILED_WHILE_DRAINING);
                }
                Ok(())
            }
            Event::RunFinished { .. } => Ok(()),
            Event::Requeued { run, session, messages, retry_at_ms } => {
                self.requeued(at, *run, session, messages, *retry_at_ms)
            }
            Event::Outcome { message, kind, cause } => {
                self.outcome(view, at, message, *kind, cause)
            }
            Event::Signal { kind, origin } => {
                self.signal_seen(at, *kind, *origin);
                Ok(())
            }
            Event::SignalIgnored { .. } | Event::SignalDeferred { .. } => Ok(()),
            Event::BecameStop { deadline_ms } => self.became_stop(at, *deadline_ms),
            Event::RestartBegan { kind, deadline_ms } => {
                self.restart_began(view, at, *kind, *deadline_ms)
            }
            Event::Phase { phase, counts } => self.phase(stamped, *phase, counts),
            Event::DrainWarning { remaining } => self.warning(at, *remaining),
            Event::HandedOver { pending, summaries, intake } => {
                self.handed_over(at, pending, *summaries, intake)
            }
            Event::GenerationStarted { pending, intake } => {
                self.generation_started(at, pending, intake)
            }
            Event::StateSaved { messages } => self.state_saved(at, messages),
            Event::StateRestored { messages } => self.state_restored(at, messages),
            Event::Exit { code } => self.exited(at, *code),
        }
    }

    fn accepted(&mut self, at: u64, message: &Identity, key: Option<&Key>) -> Check {
        if let Some(old) = self.ledger.get(message).filter(|old| !matches!(old.held, Held::Done(_)))
        {
            let reason = format!("{message} accepted again while still held ({:?})", old.held);
            return Err(Violation::new(Invariant::S1, at, reason));
        }
        if self.restart.is_some() {
            // Counted at acceptance, not at the intake, so a plan without an intake counts too.
            self.coverage.hit(TRAFFIC_DURING_RESTART);
        }
        let index = self.next_index;
        self.next_index += 1;
        if let Some(key) = key {
            self.keys.entry(key.clone()).or_default().accepted.push(message.clone());
        }
        self.ledger
            .insert(message.clone(), Ledger { held: Held::Accepted, key: key.cloned(), index });
        self.count_in(Held::Accepted);
        Ok(())
    }

    fn refused(&mut self, reason: Refusal) {
        match reason {
            Refusal::Duplicate => self.coverage.hit(DUPLICATE_REFUSED),
            Refusal::Busy => self.coverage.hit(FULL_INTAKE),
            Refusal::Stopping => {}
        }
    }

    fn coverage_buffered(&mut self) {}

    fn flushed(&mut self, at: u64, messages: &[Identity], cause: FlushCause) -> Check {
        if matches!(cause, FlushCause::Timer | FlushCause::MaxWait) {
            self.last_timer_flush_ms = Some(at);
        }
        if cause == FlushCause::Disconnect {
            self.coverage.hit(RECONNECT_WITH_BUFFER);
        }
        for message in messages {
            self.shift(at, message, &[Held::In(Place::Buffer)], Held::Flushing)?;
        }
        Ok(())
    }

    fn admitted(&mut self, at: u64, messages: &[Identity], into: Admission) -> Check {
        let place = match into {
            Admission::Run(run) => Place::Run(run),
            Admission::Queued => Place::Queue,
        };
        for message in messages {
            self.first_admission(at, message)?;
            self.shift(at, message, ADMISSIBLE, Held::In(place))?;
        }
        Ok(())
    }

    fn deferred(&mut self, at: u64, messages: &[Identity]) -> Check {
        for message in messages {
            self.first_admission(at, message)?;
            self.shift(at, message, ADMISSIBLE, Held::In(Place::Handover))?;
        }
        Ok(())
    }

    /// S2: a key's messages reach the pipeline in acceptance order.
    fn first_admission(&mut self, at: u64, message: &Identity) -> Check {
        let Some(ledger) = self.ledger.get(message) else { return Ok(()) };
        let Some(key) = &ledger.key else { return Ok(()) };
        let index = ledger.index;
        let order = self.keys.entry(key.clone()).or_default();
        if order.last_admitted.is_some_and(|last| last > index) {
            let reason = format!("{message} of key {key} admitted after a message accepted later");
            return Err(Violation::new(Invariant::S2, at, reason));
        }
        order.last_admitted = Some(index);
        Ok(())
    }

    fn run_started(
        &mut self,
        stamped: &Stamped,
        run: RunId,
        messages: &[Identity],
        attempt: u32,
        session: &SessionId,
    ) -> Check {
        let at = stamped.at_ms;
        if self.draining.contains(&(stamped.boot, stamped.generation)) {
            let reason = format!(
                "run {run} started in generation {} after it marked draining",
                stamped.generation
            );
            return Err(Violation::new(Invariant::S4, at, reason));
        }
        let back_off =
            self.retry_at.get(session).copied().filter(|&retry_at| attempt > 1 && at < retry_at);
        if let Some(retry_at) = back_off {
            let reason = format!(
                "run {run} of {session} retried at {at} ms, before its back-off ended at {retry_at} ms"
            );
            return Err(Violation::new(Invariant::L3, at, reason));
        }
        self.check_run_order(at, run, messages)?;
        let from = [Held::In(Place::Queue), Held::In(Place::Run(run))];
        for message in messages {
            self.shift(at, message, &from, Held::In(Place::Run(run)))?;
        }
        Ok(())
    }

    /// S2: within a run, a key's messages keep acceptance order.
    fn check_run_order(&self, at: u64, run: RunId, messages: &[Identity]) -> Check {
        let mut last: HashMap<&Key, u64> = HashMap::default();
        for message in messages {
            let Some(ledger) = self.ledger.get(message) else { continue };
            let Some(key) = &ledger.key else { continue };
            if last.get(key).is_some_and(|&prev| prev > ledger.index) {
                let reason =
                    format!("run {run} holds {message} of key {key} before an older message");
                return Err(Violation::new(Invariant::S2, at, reason));
            }
            last.insert(key, ledger.index);
        }
        Ok(())
    }

    fn requeued(
        &mut self,
        at: u64,
        run: RunId,
        session: &SessionId,
        messages: &[Identity],
        retry_at_ms: u64,
    ) -> Check {
        if retry_at_ms < at + RETRY_MIN_MS {
            let reason = format!("run {run} requeued with a back-off of {} ms", retry_at_ms - at);
            return Err(Violation::new(Invariant::L3, at, reason));
        }
        self.retry_at.insert(session.clone(), retry_at_ms);
        for message in messages {
            self.shift(at, message, &[Held::In(Place::Run(run))], Held::In(Place::Queue))?;
        }
        Ok(())
    }

    fn outcome(
        &mut self,
        view: &View<'_>,
        at: u64,
        message: &Identity,
        kind: OutcomeKind,
        cause: &Cause,
    ) -> Check {
        self.check_cause(view, at, message, kind, cause)?;
        let from: &[Held] = match (kind, cause) {
            (OutcomeKind::Delivered, Cause::Run(run)) => &[Held::In(Place::Run(*run))],
            (OutcomeKind::DeadLettered, _) => &[],
            (OutcomeKind::DroppedOverflow, _) => &[Held::In(Place::Queue)],
            (OutcomeKind::Failed | OutcomeKind::RejectedOverflow, _) => ADMISSIBLE,
            (OutcomeKind::Cancelled, _) => &[Held::In(Place::Buffer)],
            (OutcomeKind::Delivered, _) => &[],
        };
        if kind == OutcomeKind::DeadLettered {
            self.require_running(at, message)?;
        }
        if kind == OutcomeKind::Delivered {
            self.check_delivery_order(at, message)?;
        }
        let from = if from.is_empty() { &[Held::In(Place::Queue)][..0] } else { from };
        if from.is_empty() {
            return self.set(at, message, Held::Done(kind));
        }
        self.shift(at, message, from, Held::Done(kind))
    }

    /// S1: a failed admission has a scripted fault naming one of the batch's messages or its
    /// time; the batch's `failed` outcomes follow.
    fn admission_failed(
        &mut self,
        view: &View<'_>,
        at: u64,
        messages: &[Identity],
        error: &str,
    ) -> Check {
        self.coverage.hit(ADMISSION_FAILED);
        if !messages.iter().any(|m| fault_explains(view.scenario, at, m, error)) {
            let reason =
                format!("admission of {messages:?} failed with {error:?}, which no fault scripts");
            return Err(Violation::new(Invariant::S1, at, reason));
        }
        self.failed_batch = messages.to_vec();
        Ok(())
    }

    fn require_running(&self, at: u64, message: &Identity) -> Check {
        match self.ledger.get(message).map(|l| l.held) {
            Some(Held::In(Place::Run(_))) => Ok(()),
            held => {
                let reason = format!("{message} dead-lettered while {held:?}, not in a run");
                Err(Violation::new(Invariant::S1, at, reason))
            }
        }
    }

    /// S2: a message completes only after every older message of its key has an outcome.
    fn check_delivery_order(&self, at: u64, message: &Identity) -> Check {
        let Some(ledger) = self.ledger.get(message) else { return Ok(()) };
        let Some(key) = &ledger.key else { return Ok(()) };
        let Some(order) = self.keys.get(key) else { return Ok(()) };
        for older in &order.accepted {
            if older == message {
                break;
            }
            let Some(older_ledger) = self.ledger.get(older) else { continue };
            let pending = !matches!(older_ledger.held, Held::Done(_));
            if pending && older_ledger.index < ledger.index {
                let reason = format!("{message} of key {key} delivered before the older {older}");
                return Err(Violation::new(Invariant::S2, at, reason));
            }
        }
        Ok(())
    }

    /// S1: every outcome but `delivered` has its cause in the scenario.
    fn check_cause(
        &mut self,
        view: &View<'_>,
        at: u64,
        message: &Identity,
        kind: OutcomeKind,
        cause: &Cause,
    ) -> Check {
        let explained = match (kind, cause) {
            (OutcomeKind::Delivered, Cause::Run(_)) => true,
            (OutcomeKind::Failed, Cause::Admission(_)) => self.failed_batch.contains(message),
            (OutcomeKind::DeadLettered, Cause::Attempts(n)) => {
                self.coverage.hit(DEAD_LETTER);
                *n >= 1
            }
            (OutcomeKind::DroppedOverflow, Cause::Cap(_)) => {
                self.coverage.hit(OVERFLOW_DROP);
                self.coverage.hit(FULL_QUEUE);
                true
            }
            (OutcomeKind::RejectedOverflow, Cause::Cap(_)) => {
                self.coverage.hit(FULL_QUEUE);
                true
            }
            (OutcomeKind::Cancelled, Cause::Cancel) => {
                let key = self.ledger.get(message).and_then(|l| l.key.clone());
                view.scenario.cancels.iter().any(|c| c.at_ms == at && Some(&c.key) == key.as_ref())
            }
            _ => false,
        };
        if explained {
            return Ok(());
        }
        let reason = format!(
            "{message} ended {} with cause {cause:?}, which the scenario does not explain",
            kind.name()
        );
        Err(Violation::new(Invariant::S1, at, reason))
    }

    fn signal_seen(&mut self, at: u64, kind: SignalKind, origin: Origin) {
        self.signal = Some((kind, origin));
        if self.ledger.values().any(|l| l.held == Held::In(Place::Buffer)) {
            self.coverage.hit(SIGNAL_IN_WINDOW);
        }
        if self.last_timer_flush_ms == Some(at) {
            self.coverage.hit(SIGNAL_AT_TIMER_FLUSH);
        }
        if let Some(restart) = &self.restart {
            self.coverage.hit(SIGNALS_CLOSE_TOGETHER);
            if self.waiting(restart) {
                self.coverage.hit(SIGNAL_DURING_WAIT);
            }
        }
    }

    /// S5: the event right after a signal is what SPEC 4.1 and 4.3 ask for.
    fn check_signal_consequence(&mut self, at: u64, event: &Event) -> Check {
        let Some((kind, _origin)) = self.signal else { return Ok(()) };
        if matches!(event, Event::Signal { .. }) {
            return Ok(());
        }
        self.signal = None;
        let active = self.restart.as_ref().map(|r| r.kind);
        let expected = match (active, kind, event) {
            (
                _,
                SignalKind::Reload,
                Event::SignalIgnored { reason: IgnoreReason::ExternalReloadRefused, .. },
            ) => true,
            (None, _, Event::RestartBegan { kind: began, .. }) => *began == kind,
            (Some(SignalKind::Reload), SignalKind::Reload, Event::SignalDeferred { .. }) => {
                self.coverage.hit(RELOAD_DEFERRED);
                true
            }
            (Some(SignalKind::Reload), SignalKind::Shutdown, Event::BecameStop { .. }) => true,
            (Some(SignalKind::Shutdown), _, Event::SignalIgnored { .. }) => true,
            _ => false,
        };
        if expected {
            return Ok(());
        }
        let reason = format!("a {kind:?} signal during {active:?} was followed by {event:?}");
        Err(Violation::new(Invariant::S5, at, reason))
    }

    fn became_stop(&mut self, at: u64, deadline_ms: u64) -> Check {
        self.coverage.hit(STOP_DURING_RELOAD);
        let Some(restart) = &mut self.restart else {
            return Err(Violation::new(
                Invariant::S5,
                at,
                "a reload became a stop outside a restart",
            ));
        };
        if restart.kind != SignalKind::Reload || deadline_ms > restart.deadline_ms {
            let reason = format!(
                "a {:?} became a stop with a later deadline {deadline_ms} ms",
                restart.kind
            );
            return Err(Violation::new(Invariant::S5, at, reason));
        }
        restart.kind = SignalKind::Shutdown;
        restart.deadline_ms = deadline_ms;
        Ok(())
    }

    fn restart_began(
        &mut self,
        view: &View<'_>,
        at: u64,
        kind: SignalKind,
        deadline_ms: u64,
    ) -> Check {
        if self.restart.is_some() {
            return Err(Violation::new(
                Invariant::S5,
                at,
                "a restart began while another was in progress",
            ));
        }
        let close_budget_ms =
            view.gateway.map_or(view.config.close_budget_ms, |g| g.config().close_budget_ms);
        self.restart =
            Some(RestartSeen { kind, deadline_ms, close_budget_ms, next_phase: 0, warning: None });
        Ok(())
    }

    /// S3: phases in the plan's order, each once; S6: the wait's result matches the warning,
    /// and a wait that says it drained left nothing queued or running.
    fn phase(&mut self, stamped: &Stamped, phase: Phase, counts: &PhaseCounts) -> Check {
        let at = stamped.at_ms;
        if phase == Phase::Wait && counts.drained {
            self.check_drained(at)?;
        }
        let Some(restart) = &mut self.restart else {
            return Err(Violation::new(
                Invariant::S3,
                at,
                format!("phase {} outside a restart", phase.name()),
            ));
        };
        let expected = self.phases.get(restart.next_phase).copied();
        if expected != Some(phase) {
            let reason = format!(
                "phase {} came where {:?} was due",
                phase.name(),
                expected.map(Phase::name)
            );
            return Err(Violation::new(Invariant::S3, at, reason));
        }
        restart.next_phase += 1;
        if phase == Phase::Wait {
            let warned = restart.warning;
            let owed = (!counts.drained).then_some(counts.remaining);
            if warned != owed {
                let reason = format!("wait ended {counts:?} but the warning said {warned:?}");
                return Err(Violation::new(Invariant::S6, at, reason));
            }
        }
        if phase == Phase::MarkDraining {
            self.draining.push((stamped.boot, stamped.generation));
        }
        Ok(())
    }

    /// S6: a wait that ends drained leaves no message queued and no run in progress.
    fn check_drained(&self, at: u64) -> Check {
        let pending = |held| matches!(held, Held::In(Place::Queue) | Held::In(Place::Run(_)));
        let Some((message, ledger)) = self.first_held(pending) else { return Ok(()) };
        let count = self.ledger.values().filter(|l| pending(l.held)).count();
        let reason =
            format!("the wait ended drained while {message} was {:?} ({count} such)", ledger.held);
        Err(Violation::new(Invariant::S6, at, reason))
    }

    fn warning(&mut self, at: u64, remaining: usize) -> Check {
        self.coverage.hit(DEADLINE_REACHED);
        let Some(restart) = &self.restart else {
            return Err(Violation::new(Invariant::S6, at, "a drain warning outside a restart"));
        };
        let waiting = self.waiting(restart);
        let Some(restart) = &mut self.restart else { unreachable!("checked above") };
        if remaining == 0 || restart.warning.is_some() || !waiting {
            let reason = format!("drain warning with remaining={remaining} out of place");
            return Err(Violation::new(Invariant::S6, at, reason));
        }
        restart.warning = Some(remaining);
        Ok(())
    }

    /// S6: what the warning counted is now handed over or still running.
    fn handed_over(
        &mut self,
        at: u64,
        pending: &[Identity],
        summaries: usize,
        intake: &[Identity],
    ) -> Check {
        if !pending.is_empty() || !intake.is_empty() {
            self.coverage.hit(HANDOVER_NON_EMPTY);
        }
        let from = [Held::In(Place::Queue), Held::In(Place::Buffer), Held::In(Place::Handover)];
        for message in pending {
            self.shift(at, message, &from, Held::In(Place::Handover))?;
        }
        for message in intake {
            self.expect_held(at, message, &[Held::In(Place::Intake)])?;
        }
        if let Some(queued) = self.first_held(|held| held == Held::In(Place::Queue)) {
            let reason = format!("{} still queued after the handover", queued.0);
            return Err(Violation::new(Invariant::S6, at, reason));
        }
        let running = self.runs_in_progress();
        if running > 0 {
            self.coverage.hit(RUN_OUTLIVED_DEADLINE);
        }
        let Some(warned) = self.restart.as_ref().and_then(|r| r.warning) else { return Ok(()) };
        let counted = pending.len() + summaries + running;
        if warned != counted {
            let reason = format!(
                "the warning said remaining={warned}; handed over {} messages, {summaries} summaries, {running} runs",
                pending.len()
            );
            return Err(Violation::new(Invariant::S6, at, reason));
        }
        Ok(())
    }

    fn runs_in_progress(&self) -> usize {
        let mut runs: Vec<RunId> = self
            .ledger
            .values()
            .filter_map(|l| match l.held {
                Held::In(Place::Run(run)) => Some(run),
                _ => None,
            })
            .collect();
        runs.sort_unstable();
        runs.dedup();
        runs.len()
    }

    fn generation_started(&mut self, at: u64, pending: &[Identity], intake: &[Identity]) -> Check {
        self.end_restart(at, SignalKind::Reload)?;
        let from = [Held::In(Place::Handover), Held::StateFile];
        for message in pending {
            self.shift(at, message, &from, Held::In(Place::Queue))?;
        }
        for message in intake {
            self.shift(
                at,
                message,
                &[Held::In(Place::Intake), Held::StateFile],
                Held::In(Place::Intake),
            )?;
        }
        Ok(())
    }

    /// L1: a restart ends by its deadline plus the close budget; S3: after all six phases.
    fn end_restart(&mut self, at: u64, how: SignalKind) -> Check {
        let Some(restart) = self.restart.take() else { return Ok(()) };
        if restart.next_phase != self.phases.len() {
            let reason = format!(
                "restart ended after {} of {} phases",
                restart.next_phase,
                self.phases.len()
            );
            return Err(Violation::new(Invariant::S3, at, reason));
        }
        if restart.kind != how {
            let reason = format!("a {:?} ended as a {how:?}", restart.kind);
            return Err(Violation::new(Invariant::S5, at, reason));
        }
        let limit_ms = restart.deadline_ms + restart.close_budget_ms;
        if at > limit_ms {
            let reason = format!("restart ended at {at} ms, after its limit {limit_ms} ms");
            return Err(Violation::new(Invariant::L1, at, reason));
        }
        Ok(())
    }

    fn state_saved(&mut self, at: u64, messages: &[Identity]) -> Check {
        for message in messages {
            let from = [
                Held::In(Place::Handover),
                Held::In(Place::Queue),
                Held::In(Place::Intake),
                Held::In(Place::Buffer),
                Held::In(Place::Run(0)),
            ];
            let held = self.ledger.get(message).map(|l| l.held);
            let in_a_run = matches!(held, Some(Held::In(Place::Run(_))));
            if !in_a_run {
                self.expect_held(at, message, &from)?;
            }
            self.set(at, message, Held::StateFile)?;
        }
        Ok(())
    }

    fn state_restored(&mut self, at: u64, messages: &[Identity]) -> Check {
        self.coverage.hit(STATE_RESTORED);
        for message in messages {
            self.expect_held(at, message, &[Held::StateFile])?;
        }
        Ok(())
    }

    /// S1: at an exit, everything not ended is in the state file; L1: a watchdog exit means a
    /// restart overran.
    fn exited(&mut self, at: u64, code: i32) -> Check {
        if code != 0 {
            let reason =
                format!("the watchdog exited with code {code}: a restart overran its limit");
            return Err(Violation::new(Invariant::L1, at, reason));
        }
        self.end_restart(at, SignalKind::Shutdown)?;
        self.retry_at.clear();
        if let Some((message, ledger)) =
            self.first_held(|held| matches!(held, Held::In(_) | Held::Accepted | Held::Flushing))
        {
            let reason = format!(
                "{message} was {:?} when the process exited, not in the state file",
                ledger.held
            );
            return Err(Violation::new(Invariant::S1, at, reason));
        }
        Ok(())
    }

    fn expect_held(&self, at: u64, message: &Identity, from: &[Held]) -> Check {
        let held = self.ledger.get(message).map(|l| l.held);
        match held {
            Some(held) if from.contains(&held) => Ok(()),
            _ => {
                let reason = format!("{message} expected in {from:?}, found {held:?}");
                Err(Violation::new(Invariant::S1, at, reason))
            }
        }
    }

    fn shift(&mut self, at: u64, message: &Identity, from: &[Held], to: Held) -> Check {
        self.expect_held(at, message, from)?;
        self.set(at, message, to)
    }

    fn set(&mut self, at: u64, message: &Identity, to: Held) -> Check {
        let Some(ledger) = self.ledger.get_mut(message) else {
            let reason = format!("{message} moved to {to:?} but was never accepted");
            return Err(Violation::new(Invariant::S1, at, reason));
        };
        if let Held::Done(kind) = ledger.held {
            let reason = format!("{message} moved to {to:?} after its outcome {}", kind.name());
            return Err(Violation::new(Invariant::S1, at, reason));
        }
        let from = std::mem::replace(&mut ledger.held, to);
        self.count_out(from);
        self.count_in(to);
        Ok(())
    }

    fn count_in(&mut self, held: Held) {
        match held {
            Held::Accepted | Held::Flushing => self.unplaced += 1,
            Held::In(place) => *self.tally.entry(place).or_default() += 1,
            Held::StateFile | Held::Done(_) => {}
        }
    }

    fn count_out(&mut self, held: Held) {
        match held {
            Held::Accepted | Held::Flushing => self.unplaced -= 1,
            Held::In(place) => {
                if let Some(count) = self.tally.get_mut(&place) {
                    *count -= 1;
                    if *count == 0 {
                        self.tally.remove(&place);
                    }
                }
            }
            Held::StateFile | Held::Done(_) => {}
        }
    }

    /// S1 after an input: nothing is left between places, and the core holds what the ledger
    /// says. Counts first; the full comparison when they differ or when `thorough`.
    fn check_after_input(&self, view: &View<'_>, thorough: bool) -> Check {
        if self.unplaced > 0 {
            return self.check_places(view);
        }
        let counts = view.gateway.map(Gateway::place_counts).unwrap_or_default();
        let tallied = self.tally.iter().map(|(&place, &count)| (place, count));
        if !thorough && tallied.clone().eq(counts.iter().copied()) {
            return Ok(());
        }
        self.check_places(view)?;
        if tallied.clone().ne(counts.iter().copied()) {
            let tallied: Vec<_> = tallied.collect();
            let reason = format!("the core counts {counts:?} but holds {tallied:?}");
            return Err(Violation::new(Invariant::S1, view.now_ms, reason));
        }
        Ok(())
    }

    /// S1: after each input, the core holds exactly the messages the events say, each once,
    /// in the place the events say.
    fn check_places(&self, view: &View<'_>) -> Check {
        let at = view.now_ms;
        if let Some((message, ledger)) =
            self.first_held(|held| matches!(held, Held::Accepted | Held::Flushing))
        {
            let reason = format!("{message} left {:?} without a place", ledger.held);
            return Err(Violation::new(Invariant::S1, at, reason));
        }
        let mut held: HashMap<&Identity, (Place, u64)> = HashMap::default();
        for (message, ledger) in &self.ledger {
            if let Held::In(place) = ledger.held {
                held.insert(message, (place, ledger.index));
            }
        }
        let places = view.gateway.map(|g| g.places()).unwrap_or_default();
        let mut seen: HashMap<&Identity, Place> = HashMap::default();
        for (message, place) in &places {
            if seen.insert(message, *place).is_some() {
                let reason = format!("{message} is in two places at once");
                return Err(Violation::new(Invariant::S1, at, reason));
            }
            let said = held.get(message).map(|(place, _)| place);
            if said != Some(place) {
                let reason = format!("{message} is in {place:?}; the events say {said:?}");
                return Err(Violation::new(Invariant::S1, at, reason));
            }
        }
        let vanished = held.iter().filter(|(m, _)| !seen.contains_key(*m));
        if let Some((message, (place, _))) = vanished.min_by_key(|(_, (_, index))| *index) {
            let reason = format!("{message} vanished from {place:?}: lost");
            return Err(Violation::new(Invariant::S1, at, reason));
        }
        Ok(())
    }

    /// The earliest accepted message whose place matches, so a violation names the same
    /// message in every process (hash order differs between processes).
    fn first_held(&self, wanted: impl Fn(Held) -> bool) -> Option<(&Identity, &Ledger)> {
        let matching = self.ledger.iter().filter(|(_, l)| wanted(l.held));
        matching.min_by_key(|(_, l)| l.index)
    }
}

/// Failure of admission is explained by a scripted fault with that reason, naming the
/// message or the time.
fn fault_explains(
    scenario: &crate::scenario::Scenario,
    at: u64,
    message: &Identity,
    reason: &str,
) -> bool {
    scenario.faults.iter().any(|f| {
        let names = f.message.as_ref().is_some_and(|id| *id == message.id);
        let timed = f.at_ms == Some(at);
        f.reason == reason && (names || timed)
    })
}

/// Whether an entry moves a restart or a process on: after such an input the oracle compares
/// every message's place, not only the counts.
fn moves_restart_on(entry: &Entry) -> bool {
    let Entry::Core(stamped) = entry else { return true };
    matches!(
        stamped.event,
        Event::Signal { .. }
            | Event::BecameStop { .. }
            | Event::RestartBegan { .. }
            | Event::Phase { .. }
            | Event::HandedOver { .. }
            | Event::GenerationStarted { .. }
            | Event::StateSaved { .. }
            | Event::StateRestored { .. }
            | Event::Exit { .. }
    )
}

/// Where a message may be when the pipeline takes or refuses it.
const ADMISSIBLE: &[Held] = &[Held::Accepted, Held::Flushing, Held::In(Place::Intake)];

impl Observer for Oracle {
    fn after_input(&mut self, view: &View<'_>, entries: &[Entry]) -> Result<(), Violation> {
        for entry in entries {
            self.entry(view, entry)?;
        }
        self.check_after_input(view, entries.iter().any(moves_restart_on))
    }

    /// L2: after the quiet period everything has an outcome and nothing is held anywhere.
    fn at_end(&mut self, view: &View<'_>) -> Result<(), Violation> {
        let at = view.now_ms;
        if let Some(restart) = &self.restart {
            let reason = format!("a {:?} restart never ended", restart.kind);
            return Err(Violation::new(Invariant::L1, at, reason));
        }
        let mut pending: Vec<(&Identity, &Ledger)> =
            self.ledger.iter().filter(|(_, l)| !matches!(l.held, Held::Done(_))).collect();
        pending.sort_by_key(|(_, l)| l.index);
        if let Some((message, ledger)) = pending.first() {
            let reason = format!(
                "{message} has no outcome after the quiet period; it is {:?} ({} such)",
                ledger.held,
                pending.len()
            );
            return Err(Violation::new(Invariant::L2, at, reason));
        }
        Ok(())
    }
}
