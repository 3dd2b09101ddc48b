//! The gateway core: debouncers, pipeline and the restart protocol as one synchronous state
//! machine (SPEC 2 to 5).
//!
//! Every input carries the current virtual time; the core never reads a clock, sleeps, spawns
//! or does I/O. It answers with a reply where there is one, and leaves effects and typed events
//! in its outbox for the driver to take. Timers due at an input's time fire before the input
//! is handled, so every driver sees the same order however its ticks are scheduled.

use crate::config::Config;
use crate::debounce::{Debouncer, Offered, Registry};
use crate::dedupe::Dedupe;
use crate::effect::{Effect, Outbox};
use crate::event::{
    Cause, Event, FlushCause, IgnoreReason, OutcomeKind, Phase, PhaseCounts, Refusal, RunId,
    Stamped,
};
use crate::handover::{Handover, SessionWork};
use crate::message::{Batch, ChannelId, Identity, Key, Message, Work};
use crate::pipeline::{Pipeline, Run};
use crate::signal::{Origin, Signal, SignalKind};

#[cfg(feature = "quirks")]
pub mod quirks;

/// Callbacks into the embedding program, called synchronously inside the core.
pub trait Hooks: Send {
    /// A last check before a batch is admitted: an error fails its messages (SPEC 2.4). In
    /// production a closed session refuses here; the simulation scripts faults.
    fn check_admission(&mut self, _batch: &Batch, _now_ms: u64) -> Result<(), String> {
        Ok(())
    }

    /// Told once per batch whose admission failed. An error it returns is logged and changes
    /// nothing else.
    fn on_error(&mut self, _error: &str, _batch: &Batch) -> Result<(), String> {
        Ok(())
    }

    /// Told once per batch dropped by `cancel_key`.
    fn on_cancel(&mut self, _batch: &Batch) {}
}

/// Hooks that admit everything and ignore the callbacks.
#[derive(Debug, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}

/// The answer to a message offered for acceptance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The gateway is responsible for it now: acknowledge it.
    Accepted,
    /// Not accepted; nothing is owed.
    Refused(Refusal),
}

/// Where an accepted message without an outcome is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// A debounce buffer.
    Buffer,
    /// A followup queue.
    Queue,
    /// A run in progress.
    Run(RunId),
    /// The intake of a restart in progress.
    Intake,
    /// The handover of an ending generation.
    Handover,
}

/// Counts of what the gateway holds, for a status line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// The boot.
    pub boot: u32,
    /// The generation.
    pub generation: u32,
    /// The last phase of a restart in progress.
    pub phase: Option<Phase>,
    /// Messages in debounce buffers.
    pub buffered: usize,
    /// Messages in followup queues.
    pub queued: usize,
    /// Runs in progress.
    pub running: usize,
    /// Messages in the intake.
    pub intake: usize,
}

/// Where a restart is.
#[derive(Debug)]
enum Stage {
    /// Phase 3: waiting for the drain.
    Wait,
    /// Phase 6: closing, at most until the given time.
    Close { until_ms: u64 },
}

/// A restart in progress.
#[derive(Debug)]
struct Restart {
    kind: SignalKind,
    deadline_ms: u64,
    stage: Stage,
    /// The last phase completed.
    phase: Phase,
    /// The config the next generation starts with, when a reload brought one.
    next_config: Option<Config>,
    /// A reload that arrived during this reload (at most one), with its config.
    deferred: Option<Option<Config>>,
}

/// The gateway core of one boot.
pub struct Gateway {
    config: Config,
    boot: u32,
    registry: Registry,
    pipeline: Pipeline,
    dedupe: Dedupe,
    intake: Vec<Message>,
    /// Built in phase 5, consumed by the next generation or the state file.
    handover: Option<Handover>,
    restart: Option<Restart>,
    hooks: Box<dyn Hooks>,
    out: Outbox,
    started: bool,
    exited: bool,
    /// The historical plan this gateway runs instead of SPEC 4.2, for the simulation only.
    #[cfg(feature = "quirks")]
    quirks: quirks::QuirkState,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("status", &self.status()).finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway for boot `boot` (from 1); call [`Gateway::start`] before anything else.
    pub fn new(config: Config, boot: u32, hooks: Box<dyn Hooks>) -> Self {
        let pipeline = Pipeline::new(config.run.timeout_ms, config.run.attempts_max);
        Self {
            config,
            boot,
            registry: Registry::new(),
            pipeline,
            dedupe: Dedupe::new(),
            intake: Vec::new(),
            handover: None,
            restart: None,
            hooks,
            out: Outbox { boot, ..Outbox::default() },
            started: false,
            exited: false,
            #[cfg(feature = "quirks")]
            quirks: quirks::QuirkState::default(),
        }
    }

    /// Starts generation 0, restoring the previous boot's state file first if there was one:
    /// its pending work is admitted as is, then its intake goes through the debouncers, before
    /// anything new is accepted.
    pub fn start(&mut self, now_ms: u64, restored: Option<Handover>) {
        assert!(!self.started, "a gateway starts once");
        self.started = true;
        self.out.at_ms = now_ms;
        let handover = restored.unwrap_or_default();
        if !handover.is_empty() {
            let messages = handover.messages().map(Message::identity).collect();
            tracing::info!(
                boot = self.boot,
                messages = handover.messages().count(),
                "state restored"
            );
            self.out.event(Event::StateRestored { messages });
        }
        self.dedupe.import(now_ms, &handover.dedupe);
        self.begin_generation(handover);
        self.settle(now_ms);
    }

    /// Offers a message for acceptance (SPEC 1, 5.2, 4.2 phase 1).
    pub fn accept(&mut self, now_ms: u64, message: Message) -> Reply {
        self.settle(now_ms);
        let reply = self.accept_now(message);
        self.settle(now_ms);
        reply
    }

    /// Fires the timers due at `now_ms`.
    pub fn tick(&mut self, now_ms: u64) {
        self.settle(now_ms);
    }

    /// A run ended as the agent reported. An end of a run that timed out or was interrupted
    /// before is ignored.
    pub fn run_finished(&mut self, now_ms: u64, run: RunId, success: bool) {
        self.settle(now_ms);
        if !self.pipeline.run_finished(run, success, &mut self.out) {
            tracing::debug!(run, "end of a run no longer wanted");
        }
        self.settle(now_ms);
    }

    /// A signal reached the run loop; `next_config` is the config read afresh for a reload.
    pub fn signal(&mut self, now_ms: u64, signal: Signal, next_config: Option<Config>) {
        self.settle(now_ms);
        if self.exited {
            return;
        }
        tracing::info!(kind = ?signal.kind, origin = ?signal.origin, "signal received");
        self.out.event(Event::Signal { kind: signal.kind, origin: signal.origin });
        self.on_signal(now_ms, signal, next_config);
        self.settle(now_ms);
    }

    /// A channel disconnected or reconnected: its debouncer is flushed, then unregistered
    /// (SPEC 2.5).
    pub fn channel_disconnected(&mut self, now_ms: u64, channel: &ChannelId) {
        self.settle(now_ms);
        self.out.event(Event::ChannelClosed { channel: channel.clone() });
        self.admitter().unregister(channel);
        self.settle(now_ms);
    }

    /// Flushes one key's buffer; false if it had none or its batch was not admitted.
    pub fn flush_key(&mut self, now_ms: u64, channel: &ChannelId, key: &Key) -> bool {
        self.settle(now_ms);
        let flushed = self.admitter().flush_key(channel, key);
        self.settle(now_ms);
        flushed
    }

    /// Drops a key's buffer: its messages end `cancelled` (SPEC 2.4). Returns whether anything
    /// was cancelled.
    pub fn cancel_key(&mut self, now_ms: u64, channel: &ChannelId, key: &Key) -> bool {
        self.settle(now_ms);
        let Some(debouncer) = self.registry.get_mut(channel) else { return false };
        let mut cancelled = None;
        debouncer.cancel_key(key, &mut |batch| cancelled = Some(batch));
        let Some(batch) = cancelled else { return false };
        for message in &batch.messages {
            let event = Event::Outcome {
                message: message.identity(),
                kind: OutcomeKind::Cancelled,
                cause: Cause::Cancel,
            };
            self.out.event(event);
        }
        self.hooks.on_cancel(&batch);
        true
    }

    /// Listeners and channels are closed (phase 6 ends early).
    pub fn close_finished(&mut self, now_ms: u64) {
        self.settle(now_ms);
        if let Some(Restart { stage: Stage::Close { .. }, .. }) = &self.restart {
            self.finish_restart(now_ms);
        }
        self.settle(now_ms);
    }

    /// When the core next needs a [`Gateway::tick`], if ever.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.exited {
            return None;
        }
        let restart = self.restart.as_ref().map(|r| match r.stage {
            Stage::Wait => r.deadline_ms,
            Stage::Close { until_ms } => until_ms,
        });
        let timers = [self.registry.next_deadline(), self.pipeline.next_deadline(), restart];
        timers.into_iter().flatten().min()
    }

    /// Takes the effects asked for so far, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.out.effects)
    }

    /// Takes the events recorded so far, in order.
    pub fn take_events(&mut self) -> Vec<Stamped> {
        std::mem::take(&mut self.out.events)
    }

    /// Moves effects and events into the driver's buffers, keeping their allocations.
    pub fn drain_into(&mut self, effects: &mut Vec<Effect>, events: &mut Vec<Stamped>) {
        effects.append(&mut self.out.effects);
        events.append(&mut self.out.events);
    }

    /// A run in progress: its messages and its input text.
    pub fn run(&self, run: RunId) -> Option<&Run> {
        self.pipeline.run(run)
    }

    /// The current config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the process has exited.
    pub fn has_exited(&self) -> bool {
        self.exited
    }

    /// What the gateway holds, by number.
    pub fn status(&self) -> Status {
        Status {
            boot: self.boot,
            generation: self.out.generation,
            phase: self.restart.as_ref().map(|r| r.phase),
            buffered: self.registry.debouncers().iter().map(Debouncer::buffered_count).sum(),
            queued: self.pipeline.queued_count(),
            running: self.pipeline.runs().count(),
            intake: self.intake.len(),
        }
    }

    /// Every accepted message without an outcome and where it is. The simulation's oracle
    /// compares this with what the events say.
    pub fn places(&self) -> Vec<(Identity, Place)> {
        let buffers = self.registry.debouncers().iter().flat_map(|d| d.messages());
        let mut places: Vec<(Identity, Place)> =
            buffers.map(|m| (m.identity(), Place::Buffer)).collect();
        places.extend(self.pipeline.queued().map(|m| (m.identity(), Place::Queue)));
        for run in self.pipeline.runs() {
            places.extend(run.messages().map(|m| (m.identity(), Place::Run(run.id))));
        }
        places.extend(self.intake.iter().map(|m| (m.identity(), Place::Intake)));
        let handover = self.handover.iter().flat_map(|h| h.messages());
        places.extend(handover.map(|m| (m.identity(), Place::Handover)));
        places
    }

    /// How many messages each place holds, in place order, empty places left out: what
    /// `places` lists, counted without naming a message. The oracle compares this after every
    /// input, which costs a few lengths instead of a list of every message.
    pub fn place_counts(&self) -> Vec<(Place, usize)> {
        let buffered = self.registry.debouncers().iter().map(Debouncer::buffered_count).sum();
        let handover = self.handover.as_ref().map_or(0, |h| h.messages().count());
        let mut counts = Vec::with_capacity(self.pipeline.runs().len() + 4);
        counts.push((Place::Buffer, buffered));
        counts.push((Place::Queue, self.pipeline.queued_count()));
        // Runs by number, so the list stays in place order without a sort.
        counts.extend(self.pipeline.runs().map(|run| (Place::Run(run.id), run.messages().count())));
        counts.push((Place::Intake, self.intake.len()));
        counts.push((Place::Handover, handover));
        counts.retain(|&(_, count)| count > 0);
        counts
    }

    fn accept_now(&mut self, message: Message) -> Reply {
        let identity = message.identity();
        if let Some(reason) = self.refusal(&identity) {
            self.out.event(Event::Refused { message: identity, reason });
            return Reply::Refused(reason);
        }
        self.dedupe.admit(self.out.at_ms, &identity);
        let (key, session) = (message.key.clone(), message.session.clone());
        self.out.event(Event::Accepted { message: identity.clone(), key, session });

        let held = self.restart.is_some();
        #[cfg(feature = "quirks")]
        let held = self.quirk_holds(held);
        if held {
            self.intake.push(message);
            self.out.event(Event::Intake { message: identity });
        } else {
            self.offer(message);
        }
        Reply::Accepted
    }

    /// Why a message is refused at the door, if it is.
    fn refusal(&mut self, identity: &Identity) -> Option<Refusal> {
        let handed_over = self.restart.as_ref().is_some_and(|r| r.phase >= Phase::HandOver);
        let stopping = self.restart.as_ref().is_some_and(|r| r.kind == SignalKind::Shutdown);
        if self.exited || (stopping && handed_over) {
            return Some(Refusal::Stopping);
        }
        if self.dedupe.contains(self.out.at_ms, identity) {
            return Some(Refusal::Duplicate);
        }
        let full = self.intake.len() >= self.config.intake_max;
        (self.restart.is_some() && full).then_some(Refusal::Busy)
    }

    /// Passes a message through its channel's debouncer, registering one on first use.
    fn offer(&mut self, message: Message) {
        let identity = message.identity();
        let key = message.key.clone();
        let channel = message.channel.clone();
        if self.registry.get(&channel).is_none() {
            let window_ms = self.config.window_ms(&channel);
            self.registry.register(Debouncer::new(
                channel.clone(),
                window_ms,
                self.config.inbound.keys_max,
            ));
        }
        if let (Offered::Buffered { due_ms }, Some(key)) =
            (self.admitter().offer(&channel, message), key)
        {
            self.out.event(Event::Buffered { message: identity, key, due_ms });
        }
    }

    fn on_signal(&mut self, now_ms: u64, signal: Signal, next_config: Option<Config>) {
        let refused = signal.origin == Origin::External && !self.config.reload.allow_external;
        if signal.kind == SignalKind::Reload && refused {
            tracing::warn!("external reload refused");
            self.ignore(signal.kind, IgnoreReason::ExternalReloadRefused);
            return;
        }
        let Some(restart) = &mut self.restart else {
            self.begin_restart(now_ms, signal.kind, next_config);
            return;
        };
        match (restart.kind, signal.kind) {
            (SignalKind::Reload, SignalKind::Reload) => {
                restart.deferred = Some(next_config);
                tracing::info!("reload deferred until the restart ends");
                self.out.event(Event::SignalDeferred { kind: signal.kind });
            }
            (SignalKind::Reload, SignalKind::Shutdown) => self.become_stop(now_ms),
            (SignalKind::Shutdown, SignalKind::Reload) => {
                self.ignore(signal.kind, IgnoreReason::Stopping)
            }
            (SignalKind::Shutdown, SignalKind::Shutdown) => {
                self.ignore(signal.kind, IgnoreReason::AlreadyStopping);
            }
        }
    }

    fn ignore(&mut self, kind: SignalKind, reason: IgnoreReason) {
        if reason != IgnoreReason::ExternalReloadRefused {
            tracing::info!(?kind, ?reason, "signal ignored");
        }
        self.out.event(Event::SignalIgnored { kind, reason });
    }

    /// A stop during a reload: the restart becomes a stop under the earlier deadline, and its
    /// handover goes to the state file (SPEC 4.3).
    fn become_stop(&mut self, now_ms: u64) {
        let stop_deadline_ms = now_ms + self.config.stop.deadline_ms;
        let Some(restart) = &mut self.restart else { unreachable!("called during a restart") };
        restart.kind = SignalKind::Shutdown;
        restart.deadline_ms = restart.deadline_ms.min(stop_deadline_ms);
        restart.deferred = None;
        restart.next_config = None;
        tracing::info!(deadline_ms = restart.deadline_ms, "reload became a stop");
        self.out.event(Event::BecameStop { deadline_ms: restart.deadline_ms });
    }

    /// Phases 1 and 2, then the wait of phase 3 begins (SPEC 4.2).
    fn begin_restart(&mut self, now_ms: u64, kind: SignalKind, next_config: Option<Config>) {
        let deadline_ms = now_ms
            + match kind {
                SignalKind::Reload => self.config.reload.deadline_ms,
                SignalKind::Shutdown => self.config.stop.deadline_ms,
            };
        tracing::info!(?kind, deadline_ms, "restart began");
        self.out.event(Event::RestartBegan { kind, deadline_ms });
        self.restart = Some(Restart {
            kind,
            deadline_ms,
            stage: Stage::Wait,
            phase: Phase::Hold,
            next_config,
            deferred: None,
        });
        #[cfg(feature = "quirks")]
        if self.quirk_begin_restart(now_ms) {
            return;
        }
        self.complete_phase(Phase::Hold, PhaseCounts::default());
        self.flush(now_ms, deadline_ms);
    }

    /// Phase 2: every buffer is flushed and its batch admitted. Returns how many batches the
    /// pipeline took.
    fn flush(&mut self, now_ms: u64, deadline_ms: u64) -> usize {
        let report = self.admitter().flush_all(now_ms, deadline_ms);
        let counts = PhaseCounts {
            flushed: report.flushed,
            remaining: report.remaining,
            drained: report.drained,
            ..PhaseCounts::default()
        };
        self.complete_phase(Phase::Flush, counts);
        report.flushed
    }

    fn complete_phase(&mut self, phase: Phase, counts: PhaseCounts) {
        let Some(restart) = &mut self.restart else { unreachable!("phases run in a restart") };
        let in_order = phase == Phase::Hold || restart.phase < phase;
        #[cfg(feature = "quirks")]
        let in_order = self.quirks.in_order(restart.phase, phase, in_order);
        assert!(in_order, "phases run in order, each once: {phase:?} after {:?}", restart.phase);
        restart.phase = phase;
        tracing::info!(phase = phase.name(), ?counts, "restart phase done");
        self.out.event(Event::Phase { phase, counts });
    }

    /// Fires due timers and moves the restart on until nothing more happens at `now_ms`.
    fn settle(&mut self, now_ms: u64) {
        assert!(now_ms >= self.out.at_ms, "time never goes back: {now_ms} < {}", self.out.at_ms);
        self.out.at_ms = now_ms;
        if self.exited || !self.started {
            return;
        }
        loop {
            if self.watchdog_due(now_ms) {
                self.watchdog(now_ms);
                return;
            }
            let fired = self.fire_timers(now_ms);
            let moved = self.advance_restart(now_ms);
            if !fired && !moved {
                return;
            }
        }
    }

    fn fire_timers(&mut self, now_ms: u64) -> bool {
        let due = |deadline: Option<u64>| deadline.is_some_and(|at| at <= now_ms);
        let buffers_due = due(self.registry.next_deadline());
        let pipeline_due = due(self.pipeline.next_deadline());
        if buffers_due {
            self.admitter().flush_due(now_ms);
        }
        if pipeline_due {
            self.pipeline.tick(&mut self.out);
        }
        buffers_due || pipeline_due
    }

    /// The restart's wait ends when nothing is pending or at the deadline; its close ends when
    /// reported or at the close budget. Returns whether it moved.
    fn advance_restart(&mut self, now_ms: u64) -> bool {
        let Some(restart) = &self.restart else { return false };
        match restart.stage {
            Stage::Wait => {
                let report = self.pipeline.wait_for_drain(now_ms, restart.deadline_ms);
                #[cfg(feature = "quirks")]
                let report = self.quirk_wait(now_ms, restart.deadline_ms, report);
                let Some(report) = report else { return false };
                self.end_wait(report.drained, report.remaining);
                true
            }
            Stage::Close { until_ms } if now_ms >= until_ms => {
                tracing::info!("close budget spent");
                self.finish_restart(now_ms);
                true
            }
            Stage::Close { .. } => false,
        }
    }

    /// The end of phase 3, then phases 4, 5 and the start of 6.
    fn end_wait(&mut self, drained: bool, remaining: usize) {
        #[cfg(feature = "quirks")]
        if self.quirk_end_wait(drained, remaining) {
            return;
        }
        if !drained {
            tracing::warn!(remaining, "drain deadline reached");
            self.out.event(Event::DrainWarning { remaining });
        }
        let counts = PhaseCounts { drained, remaining, ..PhaseCounts::default() };
        self.complete_phase(Phase::Wait, counts);
        self.mark_draining();
        self.hand_over();
        self.close();
    }

    /// Phase 4: no new run starts in this generation; refused batches join the handover.
    fn mark_draining(&mut self) {
        self.pipeline.set_draining(true);
        self.handover = Some(Handover::default());
        self.complete_phase(Phase::MarkDraining, PhaseCounts::default());
    }

    /// The start of phase 6: listeners and channels close, within the close budget.
    fn close(&mut self) {
        let until_ms = self.out.at_ms + self.config.close_budget_ms;
        let Some(restart) = &mut self.restart else { unreachable!("in a restart") };
        restart.stage = Stage::Close { until_ms };
        self.out.effect(Effect::Close);
    }

    /// Phase 5: queued work, then buffers the flush could not reach, into the handover.
    fn hand_over(&mut self) {
        let mut pending = self.pipeline.take_pending(self.out.at_ms);
        for batch in self.registry.take_buffers() {
            add_work(&mut pending, Work::fresh(batch));
        }
        let handover = self.handover.get_or_insert_with(Handover::default);
        handover.pending = merge_pending([std::mem::take(&mut handover.pending), pending]);

        let pending_ids: Vec<Identity> = handover.messages().map(Message::identity).collect();
        let intake_ids: Vec<Identity> = self.intake.iter().map(Message::identity).collect();
        let counts = PhaseCounts {
            pending: pending_ids.len(),
            intake: intake_ids.len(),
            ..PhaseCounts::default()
        };
        let summaries = handover.pending.iter().filter(|p| p.summary.is_some()).count();
        self.out.event(Event::HandedOver { pending: pending_ids, summaries, intake: intake_ids });
        self.complete_phase(Phase::HandOver, counts);
    }

    /// The end of phase 6: the next generation starts, or the state is saved and the process
    /// exits.
    fn finish_restart(&mut self, now_ms: u64) {
        self.complete_phase(Phase::Close, PhaseCounts::default());
        let Some(restart) = self.restart.take() else { unreachable!("in a restart") };
        if restart.kind == SignalKind::Shutdown {
            self.save_and_exit(0);
            return;
        }
        if let Some(config) = restart.next_config {
            self.config = config;
        }
        let handover = self.handover.take().unwrap_or_default();
        #[cfg(feature = "quirks")]
        let handover = self.quirk_passed_on(handover);
        self.out.generation += 1;
        self.begin_generation(handover);
        if let Some(next_config) = restart.deferred {
            tracing::info!("deferred reload begins");
            self.begin_restart(now_ms, SignalKind::Reload, next_config);
        }
    }

    /// Starts a generation with a handover: pending work as is, then the intake through the
    /// new debouncers. Must run outside a restart, or the intake would go to the intake again.
    fn begin_generation(&mut self, mut handover: Handover) {
        assert!(self.restart.is_none(), "a generation begins after its restart ends");
        self.registry = Registry::new();
        self.pipeline.set_draining(false);
        self.pipeline.set_run_limits(self.config.run.timeout_ms, self.config.run.attempts_max);
        let intake = std::mem::take(&mut self.intake);
        handover.intake.extend(intake);

        let pending_ids =
            handover.pending.iter().flat_map(|p| p.work.iter()).flat_map(|w| w.batch.identities());
        let event = Event::GenerationStarted {
            pending: pending_ids.collect(),
            intake: handover.intake.iter().map(Message::identity).collect(),
        };
        tracing::info!(generation = self.out.generation, "generation started");
        self.out.event(event);
        for session_work in handover.pending {
            let channel = &session_work.work[0].batch.messages[0].channel;
            let settings = self.config.queue_settings(&session_work.session, channel);
            self.pipeline.restore(session_work, settings, self.out.at_ms);
        }
        for message in handover.intake {
            self.offer(message);
        }
    }

    /// Writes everything held to the state file and exits: runs in progress first, marked
    /// interrupted, then queued work, then the intake.
    fn save_and_exit(&mut self, code: i32) {
        let interrupted = self.pipeline.interrupt_all(&mut self.out);
        let mut queued = self.pipeline.take_pending(self.out.at_ms);
        for batch in self.registry.take_buffers() {
            add_work(&mut queued, Work::fresh(batch));
        }
        let mut handover = self.handover.take().unwrap_or_default();
        handover.pending = merge_pending([interrupted, queued, handover.pending]);
        handover.intake.append(&mut self.intake);
        handover.dedupe = self.dedupe.export(self.out.at_ms);
        #[cfg(feature = "quirks")]
        let handover = self.quirk_passed_on(handover);

        let messages = handover.messages().map(Message::identity).collect();
        self.out.event(Event::StateSaved { messages });
        self.out.effect(Effect::Save(Box::new(handover)));
        self.out.effect(Effect::Exit(code));
        self.out.event(Event::Exit { code });
        self.restart = None;
        self.exited = true;
    }

    fn watchdog_due(&self, now_ms: u64) -> bool {
        let budget_ms = self.config.close_budget_ms;
        self.restart.as_ref().is_some_and(|r| now_ms > r.deadline_ms + budget_ms)
    }

    /// A restart overran its deadline and close budget: save what is held and exit 1, so a
    /// supervisor starts the process again and it restores the state file (SPEC 4.4).
    fn watchdog(&mut self, now_ms: u64) {
        tracing::error!(now_ms, "restart overran its deadline; saving state and exiting");
        self.save_and_exit(1);
    }

    fn admitter(&mut self) -> Admitter<'_> {
        Admitter {
            registry: &mut self.registry,
            pipeline: &mut self.pipeline,
            hooks: self.hooks.as_mut(),
            out: &mut self.out,
            handover: &mut self.handover,
            config: &self.config,
        }
    }
}

/// The gateway's fields that admission needs, borrowed apart from each other so a debouncer
/// can call back into the pipeline.
struct Admitter<'a> {
    registry: &'a mut Registry,
    pipeline: &'a mut Pipeline,
    hooks: &'a mut dyn Hooks,
    out: &'a mut Outbox,
    handover: &'a mut Option<Handover>,
    config: &'a Config,
}

impl Admitter<'_> {
    fn offer(&mut self, channel: &ChannelId, message: Message) -> Offered {
        let now_ms = self.out.at_ms;
        let (registry, mut sink) = self.split();
        let debouncer = registry.get_mut(channel).expect("the channel's debouncer is registered");
        debouncer.offer(now_ms, message, &mut |batch, cause| sink.admit(batch, cause))
    }

    fn flush_key(&mut self, channel: &ChannelId, key: &Key) -> bool {
        let (registry, mut sink) = self.split();
        let Some(debouncer) = registry.get_mut(channel) else { return false };
        debouncer.flush_key(key, &mut |batch, cause| sink.admit(batch, cause))
    }

    fn flush_all(&mut self, now_ms: u64, deadline_ms: u64) -> crate::debounce::FlushReport {
        let (registry, mut sink) = self.split();
        registry.flush_all(now_ms, deadline_ms, &mut |batch, cause| sink.admit(batch, cause))
    }

    fn flush_due(&mut self, now_ms: u64) -> usize {
        let (registry, mut sink) = self.split();
        registry.flush_due(now_ms, &mut |batch, cause| sink.admit(batch, cause))
    }

    fn unregister(&mut self, channel: &ChannelId) -> usize {
        let (registry, mut sink) = self.split();
        registry.unregister(channel, &mut |batch, cause| sink.admit(batch, cause))
    }

    fn split(&mut self) -> (&mut Registry, Sink<'_>) {
        let sink = Sink {
            pipeline: self.pipeline,
            hooks: self.hooks,
            out: self.out,
            handover: self.handover,
            config: self.config,
        };
        (self.registry, sink)
    }
}

/// Where flushed batches go: the pipeline, the handover while draining, or `failed`.
struct Sink<'a> {
    pipeline: &'a mut Pipeline,
    hooks: &'a mut dyn Hooks,
    out: &'a mut Outbox,
    handover: &'a mut Option<Handover>,
    config: &'a Config,
}

impl Sink<'_> {
    /// Admits a batch (SPEC 2.4); returns whether the pipeline took it.
    fn admit(&mut self, batch: Batch, cause: FlushCause) -> bool {
        if cause != FlushCause::Unbuffered {
            let key = batch.key().cloned().expect("only keyed messages are buffered");
            self.out.event(Event::Flushed { key, messages: batch.identities(), cause });
        }
        if self.pipeline.is_draining() {
            self.defer(batch);
            return false;
        }
        if let Err(error) = self.hooks.check_admission(&batch, self.out.at_ms) {
            self.fail(&error, &batch);
            return false;
        }
        let settings = self.config.queue_settings(batch.session(), &batch.messages[0].channel);
        match self.pipeline.admit(Work::fresh(batch), settings, self.out) {
            Ok(()) => true,
            Err(work) => {
                self.defer(work.batch);
                false
            }
        }
    }

    /// Refused because the gateway is draining: the batch joins the handover.
    fn defer(&mut self, batch: Batch) {
        let handover = self.handover.as_mut().expect("a draining gateway has a handover");
        self.out.event(Event::Deferred { messages: batch.identities() });
        add_work(&mut handover.pending, Work::fresh(batch));
    }

    /// Any other admission failure: the messages end `failed`, and the error callback hears of
    /// it once; its own failure is logged and changes nothing else.
    fn fail(&mut self, error: &str, batch: &Batch) {
        let messages = batch.identities();
        self.out.event(Event::AdmissionFailed { messages, error: error.to_owned() });
        for message in &batch.messages {
            let cause = Cause::Admission(error.to_owned());
            self.out.event(Event::Outcome {
                message: message.identity(),
                kind: OutcomeKind::Failed,
                cause,
            });
        }
        if let Err(callback_error) = self.hooks.on_error(error, batch) {
            tracing::error!(error = %callback_error, messages = batch.len(), "error callback failed");
            let messages = batch.identities();
            self.out.event(Event::CallbackFailed { messages, error: callback_error });
        }
    }
}

/// Appends work after what its session already has in `pending`.
fn add_work(pending: &mut Vec<SessionWork>, work: Work) {
    let session = work.batch.session().clone();
    match pending.iter_mut().find(|p| p.session == session) {
        Some(existing) => existing.work.push(work),
        None => {
            pending.push(SessionWork { session, work: vec![work], summary: None, retry_in_ms: 0 })
        }
    }
}

/// Joins lists of pending work, older lists first, keeping one entry per session: a session's
/// work stays in order, its summaries join oldest first, and the longest back-off wins.
fn merge_pending<const N: usize>(lists: [Vec<SessionWork>; N]) -> Vec<SessionWork> {
    let mut merged: Vec<SessionWork> = Vec::new();
    for item in lists.into_iter().flatten() {
        let Some(existing) = merged.iter_mut().find(|p| p.session == item.session) else {
            merged.push(item);
            continue;
        };
        existing.work.extend(item.work);
        existing.retry_in_ms = existing.retry_in_ms.max(item.retry_in_ms);
        existing.summary = match (existing.summary.take(), item.summary) {
            (Some(mut older), Some(newer)) => {
                older.merge_after(newer);
                Some(older)
            }
            (older, newer) => older.or(newer),
        };
    }
    merged
}

#[cfg(test)]
mod tests {
    use tracing_test::traced_test;

    use super::*;

    use crate::message::test_message as message;
    use crate::pipeline::Summary;

    const RELOAD: Signal = Signal { kind: SignalKind::Reload, origin: Origin::External };
    const STOP: Signal = Signal { kind: SignalKind::Shutdown, origin: Origin::External };

    fn debounced() -> Config {
        let mut config = Config::default();
        config.inbound.window_ms = 100;
        config
    }

    fn restored(events: &[Stamped]) -> bool {
        events.iter().any(|e| matches!(e.event, Event::StateRestored { .. }))
    }

    /// What the shell and the driver ask of a gateway: its config and debug line, whether a
    /// key's flush or cancel found a buffer, its effects and events moved out, and its exit.
    #[test]
    fn answers_the_shell_relies_on() {
        let mut gateway = Gateway::new(debounced(), 1, Box::new(NoHooks));
        assert_eq!(gateway.config(), &debounced());
        gateway.start(0, None);
        assert!(format!("{gateway:?}").contains("Gateway { status: Status"));
        assert!(!restored(&gateway.take_events()), "nothing to restore, nothing said");

        gateway.accept(0, message("a", "1"));
        gateway.accept(0, message("b", "2"));
        let (tg, a, b) = (ChannelId::from("tg"), Key::from("a"), Key::from("b"));
        assert!(gateway.flush_key(1, &tg, &a));
        assert!(!gateway.flush_key(1, &tg, &a), "a's buffer is gone");
        assert!(gateway.cancel_key(2, &tg, &b));
        assert!(!gateway.cancel_key(2, &tg, &b), "b's buffer is gone");
        assert!(!gateway.cancel_key(2, &"slack".into(), &b), "no such channel");

        let (mut effects, mut events) = (Vec::new(), Vec::new());
        gateway.drain_into(&mut effects, &mut events);
        let Some(&Effect::StartRun { run }) = effects.first() else {
            panic!("a's flush started a run: {effects:?}");
        };
        assert!(events.iter().any(|e| matches!(e.event, Event::Outcome { .. })), "b cancelled");
        assert!(gateway.take_events().is_empty() && gateway.take_effects().is_empty());

        gateway.run_finished(3, run, true);
        assert!(!gateway.has_exited());
        gateway.signal(4, STOP, None);
        gateway.close_finished(4);
        assert!(gateway.has_exited());
    }

    #[test]
    fn a_state_file_with_messages_is_announced() {
        let mut gateway = Gateway::new(debounced(), 2, Box::new(NoHooks));
        let handover = Handover { intake: vec![message("a", "1")], ..Handover::default() };
        gateway.start(0, Some(handover));
        assert!(restored(&gateway.take_events()));
    }

    #[traced_test]
    #[test]
    fn the_end_of_an_unknown_run_is_only_logged() {
        let mut gateway = Gateway::new(debounced(), 1, Box::new(NoHooks));
        gateway.start(0, None);
        drop(gateway.take_events());
        gateway.run_finished(1, 99, true);
        assert!(logs_contain("end of a run no longer wanted"));
        assert!(gateway.take_events().is_empty());
    }

    /// A shell that stalls past a restart's deadline and close budget finds, at its next call,
    /// that the watchdog saved the state and exited 1; at the limit itself the restart goes on.
    #[test]
    fn the_watchdog_fires_only_past_deadline_and_close_budget() {
        let exits = |at_ms: u64| {
            let mut config = debounced();
            config.reload.allow_external = true;
            let limit_ms = 10 + config.reload.deadline_ms + config.close_budget_ms;
            let mut gateway = Gateway::new(config, 1, Box::new(NoHooks));
            gateway.start(0, None);
            gateway.accept(0, Message { debounce: false, ..message("a", "1") });
            gateway.signal(10, RELOAD, None);
            gateway.tick(limit_ms + at_ms);
            let events = gateway.take_events();
            events.iter().find_map(|e| match e.event {
                Event::Exit { code } => Some(code),
                _ => None,
            })
        };
        assert_eq!(exits(1), Some(1), "one ms past the limit");
        assert_eq!(exits(0), None, "at the limit the restart ends on its own");
    }

    /// A stop refuses new messages once it has handed over, and so does an exited gateway;
    /// before the handover they still go to the intake.
    #[test]
    fn a_stop_refuses_from_its_handover_on() {
        let mut gateway = Gateway::new(debounced(), 1, Box::new(NoHooks));
        gateway.start(0, None);
        gateway.accept(0, Message { debounce: false, ..message("a", "1") });
        let Some(Effect::StartRun { run }) = gateway.take_effects().pop() else {
            panic!("a/1 runs at once");
        };
        gateway.signal(10, STOP, None);
        assert_eq!(gateway.accept(11, message("b", "2")), Reply::Accepted, "still waiting");
        gateway.run_finished(12, run, true);
        let stopping = Reply::Refused(Refusal::Stopping);
        assert_eq!(gateway.accept(13, message("c", "3")), stopping, "handed over");
        gateway.close_finished(14);
        assert!(gateway.has_exited());
        assert_eq!(gateway.accept(15, message("d", "4")), stopping, "exited");
    }

    /// Ignored signals are logged, except a refused external reload, which has its own line.
    #[traced_test]
    #[test]
    fn ignored_signals_are_logged_once() {
        let mut config = debounced();
        config.reload.allow_external = false;
        let mut gateway = Gateway::new(config, 1, Box::new(NoHooks));
        gateway.start(0, None);
        gateway.signal(1, RELOAD, None);
        assert!(logs_contain("external reload refused"));
        assert!(!logs_contain("signal ignored"));

        gateway.accept(2, Message { debounce: false, ..message("a", "1") });
        gateway.signal(3, STOP, None);
        gateway.signal(4, STOP, None);
        assert!(logs_contain("signal ignored"));
    }

    /// Ends a started run at once; true for the close, which ends the loop of a test.
    fn finish_run(gateway: &mut Gateway, now_ms: u64, effect: &Effect) -> bool {
        match effect {
            Effect::StartRun { run } => gateway.run_finished(now_ms, *run, true),
            Effect::Close => return true,
            _ => {}
        }
        false
    }

    /// The status line counts each place apart: a running batch, a queued followup, two
    /// buffered messages, then the intake and the phase once a reload holds new messages, and
    /// the next generation after it.
    #[test]
    fn status_counts_each_place() {
        let mut gateway = Gateway::new(debounced(), 3, Box::new(NoHooks));
        gateway.start(0, None);
        let at_once = |key, id| Message { debounce: false, ..message(key, id) };
        gateway.accept(0, at_once("b", "1"));
        gateway.accept(0, at_once("b", "2"));
        gateway.accept(0, message("a", "3"));
        gateway.accept(0, message("a", "4"));
        let idle = Status { boot: 3, generation: 0, phase: None, ..Status::default() };
        assert_eq!(gateway.status(), Status { buffered: 2, queued: 1, running: 1, ..idle });

        gateway.signal(1, RELOAD, None);
        gateway.accept(1, message("c", "5"));
        let held = gateway.status();
        assert_eq!((held.phase, held.buffered, held.intake), (Some(Phase::Flush), 0, 1));

        let mut now_ms = 1;
        while !gateway.take_effects().iter().any(|e| finish_run(&mut gateway, now_ms, e)) {
            now_ms += 1;
            gateway.tick(now_ms);
        }
        gateway.close_finished(now_ms);
        let next = gateway.status();
        assert_eq!((next.generation, next.phase, next.intake, next.buffered), (1, None, 0, 1));
    }

    /// A phase that comes again, or out of order, stops the gateway: the order is asserted, not
    /// hoped for.
    #[test]
    #[should_panic(expected = "phases run in order, each once: Flush after Flush")]
    fn a_phase_run_twice_is_a_bug() {
        let mut gateway = Gateway::new(debounced(), 1, Box::new(NoHooks));
        gateway.start(0, None);
        gateway.accept(0, Message { debounce: false, ..message("a", "1") });
        gateway.signal(1, RELOAD, None);
        gateway.complete_phase(Phase::Flush, PhaseCounts::default());
    }

    /// A summary of `dropped` messages, one line each.
    fn summary(dropped: usize) -> Summary {
        Summary { dropped, lines: (0..dropped).map(|n| format!("line {n}")).collect() }
    }

    fn work_of(session: &str, id: &str) -> Work {
        Work::fresh(Batch::single(message(session, id)))
    }

    /// Each session's entry as `session: ids`, in list order.
    fn by_session(pending: &[SessionWork]) -> Vec<String> {
        let line = |p: &SessionWork| {
            let messages = p.work.iter().flat_map(|w| w.batch.messages.iter());
            let ids: Vec<&str> = messages.map(|m| m.id.as_str()).collect();
            format!("{}: {}", p.session.as_str(), ids.join(" "))
        };
        pending.iter().map(line).collect()
    }

    /// Work handed over joins its own session's entry, never another's, and a session new to
    /// the list gets an entry of its own.
    #[test]
    fn added_work_joins_its_own_session() {
        let mut pending = Vec::new();
        add_work(&mut pending, work_of("a", "1"));
        add_work(&mut pending, work_of("b", "2"));
        add_work(&mut pending, work_of("a", "3"));
        assert_eq!(by_session(&pending), ["a: 1 3", "b: 2"]);
    }

    /// Merged lists keep one entry per session: older work first, summaries added up oldest
    /// first, the longest back-off kept.
    #[test]
    fn merged_pending_adds_summaries_and_keeps_the_longest_back_off() {
        let entry = |id: &str, dropped: usize, retry_in_ms: u64| SessionWork {
            session: "a".into(),
            work: vec![work_of("a", id)],
            summary: (dropped > 0).then(|| summary(dropped)),
            retry_in_ms,
        };
        let merged = merge_pending([vec![entry("1", 2, 50)], vec![entry("2", 3, 20)]]);
        assert_eq!(merged.len(), 1);
        assert_eq!(by_session(&merged), ["a: 1 2"]);
        assert_eq!(merged[0].retry_in_ms, 50);
        let mut expected = summary(2);
        expected.merge_after(summary(3));
        assert_eq!(merged[0].summary, Some(expected));
        assert_eq!(merged[0].summary.as_ref().map(|s| s.dropped), Some(5));
    }
}
