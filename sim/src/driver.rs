//! The event-jump driver: runs the production core through a scenario on virtual time.
//!
//! Pending inputs wait in a heap ordered by (virtual time, sequence). The driver pops the
//! earliest, jumps the clock to it, feeds the core, and schedules what the effects ask for:
//! run ends, close ends, ticks at the core's next deadline, the next boot after an exit. No
//! threads, no async runtime, no wall clock: the same scenario gives the same entries on every
//! machine.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Arc, Mutex};

use quiesce::config::Config;
use quiesce::effect::Effect;
use quiesce::event::{RunId, Stamped};
use quiesce::gateway::{Gateway, Hooks};
use quiesce::handover::Handover;
use quiesce::message::{Batch, Identity, SessionId};
use quiesce::signal::SignalKind;

use crate::oracle::{Invariant, Violation};
use crate::plan::Plan;
use crate::scenario::{Fault, RunOutcome, Scenario};

/// How many inputs in a row at one virtual instant count as a livelock (SPEC 6, L3).
pub const SAME_INSTANT_BUDGET: u32 = 100_000;

/// How many inputs one scenario may take in all before it counts as a livelock.
pub const INPUT_BUDGET: u64 = 10_000_000;

/// What happened in the world outside the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// A process started.
    ProcessStarted,
    /// A message arrived while no process was running; nobody accepted it.
    RefusedDown {
        /// The message.
        message: Identity,
    },
    /// A signal was sent while no process was running.
    SignalLost {
        /// What it asked for.
        kind: SignalKind,
    },
}

/// One line of the event log: an event of the core, or a note of the world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// From the core.
    Core(Stamped),
    /// From the world.
    World {
        /// Virtual time in ms.
        at_ms: u64,
        /// The boot it concerns (the last one, while down).
        boot: u32,
        /// What happened.
        note: Note,
    },
}

impl Entry {
    /// Its virtual time.
    pub fn at_ms(&self) -> u64 {
        match self {
            Self::Core(stamped) => stamped.at_ms,
            Self::World { at_ms, .. } => *at_ms,
        }
    }
}

/// What an observer may look at after an input.
#[derive(Debug)]
pub struct View<'a> {
    /// The scenario being run.
    pub scenario: &'a Scenario,
    /// The virtual time.
    pub now_ms: u64,
    /// The running process's core, if one runs.
    pub gateway: Option<&'a Gateway>,
    /// The state file's content, if one was saved and not yet restored.
    pub state_file: Option<&'a Handover>,
    /// The config the process runs with (or will start with).
    pub config: &'a Config,
}

/// Checks a run as it goes: the oracle, or a test's own observer.
pub trait Observer {
    /// Called after every input with the entries it produced.
    fn after_input(&mut self, view: &View<'_>, entries: &[Entry]) -> Result<(), Violation>;

    /// Called once the world has settled: nothing is scheduled, or the quiet period passed.
    fn at_end(&mut self, view: &View<'_>) -> Result<(), Violation>;
}

/// An observer that checks nothing.
#[derive(Debug, Default)]
pub struct Unobserved;

impl Observer for Unobserved {
    fn after_input(&mut self, _: &View<'_>, _: &[Entry]) -> Result<(), Violation> {
        Ok(())
    }

    fn at_end(&mut self, _: &View<'_>) -> Result<(), Violation> {
        Ok(())
    }
}

/// What a run produced.
#[derive(Debug, Default)]
pub struct Report {
    /// Every entry, in order, when recording was asked for.
    pub entries: Vec<Entry>,
    /// The first invariant that failed, if any.
    pub violation: Option<Violation>,
    /// Inputs fed to the core.
    pub inputs: u64,
    /// Events the core emitted.
    pub events: u64,
    /// Virtual time when the world settled.
    pub end_ms: u64,
}

/// One pending input.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Input {
    Boot,
    Arrival(usize),
    Signal(usize),
    Reconnect(usize),
    Cancel(usize),
    RunEnd { boot: u32, run: RunId, success: bool },
    CloseDone { boot: u32 },
    Tick { boot: u32 },
}

/// The scenario's admission faults with whether each has fired; shared by every boot's hooks,
/// so a fault fires once in the whole run.
type Faults = Arc<Mutex<Vec<(Fault, bool)>>>;

/// The hooks a scenario scripts: admission faults, each failing once, and failing callbacks.
struct ScriptedHooks {
    faults: Faults,
    callback_fails: bool,
}

impl Hooks for ScriptedHooks {
    fn check_admission(&mut self, batch: &Batch, now_ms: u64) -> Result<(), String> {
        let hits = |fault: &Fault| match (&fault.message, fault.at_ms) {
            (Some(id), _) => batch.messages.iter().any(|m| &m.id == id),
            (None, Some(at_ms)) => at_ms == now_ms,
            (None, None) => false,
        };
        let mut faults = self.faults.lock().expect("the simulation is single-threaded");
        let Some((fault, fired)) = faults.iter_mut().find(|(f, fired)| !fired && hits(f)) else {
            return Ok(());
        };
        *fired = true;
        self.callback_fails = fault.callback_fails;
        Err(fault.reason.clone())
    }

    fn on_error(&mut self, _error: &str, _batch: &Batch) -> Result<(), String> {
        if std::mem::take(&mut self.callback_fails) {
            return Err("error callback failed (scripted)".to_owned());
        }
        Ok(())
    }
}

/// Runs a scenario to the end under the SPEC plan, checking it with `observer`; keeps the
/// entries if `record`.
pub fn run(scenario: &Scenario, observer: &mut dyn Observer, record: bool) -> Report {
    run_plan(scenario, Plan::Spec, observer, record)
}

/// Runs a scenario to the end with every boot's core under `plan`; see [`run`].
pub fn run_plan(
    scenario: &Scenario,
    plan: Plan,
    observer: &mut dyn Observer,
    record: bool,
) -> Report {
    let mut world = World::new(scenario, plan, record);
    world.run(observer);
    world.report
}

/// The simulated world: the heap of inputs, the process and its state file.
struct World<'a> {
    scenario: &'a Scenario,
    plan: Plan,
    heap: BinaryHeap<Reverse<(u64, u64, Input)>>,
    seq: u64,
    now_ms: u64,
    gateway: Option<Gateway>,
    boot: u32,
    config: Config,
    state_file: Option<Handover>,
    /// Runs started per session, across boots: the nth run's behaviour comes from the scenario.
    runs_started: BTreeMap<SessionId, u32>,
    closes: usize,
    /// Ticks already scheduled, so one deadline is not scheduled twice.
    ticks: BTreeMap<u64, u32>,
    faults: Faults,
    record: bool,
    fresh: Vec<Entry>,
    /// Empty buffers the core's effects and events pass through, kept between inputs.
    spare: (Vec<Effect>, Vec<Stamped>),
    report: Report,
}

impl<'a> World<'a> {
    fn new(scenario: &'a Scenario, plan: Plan, record: bool) -> Self {
        let faults =
            Arc::new(Mutex::new(scenario.faults.iter().map(|f| (f.clone(), false)).collect()));
        let mut world = Self {
            scenario,
            plan,
            heap: BinaryHeap::new(),
            seq: 0,
            now_ms: 0,
            gateway: None,
            boot: 0,
            config: scenario.config.clone(),
            state_file: None,
            runs_started: BTreeMap::new(),
            closes: 0,
            ticks: BTreeMap::new(),
            faults,
            record,
            fresh: Vec::new(),
            spare: (Vec::new(), Vec::new()),
            report: Report::default(),
        };
        world.schedule_script();
        world
    }

    fn schedule_script(&mut self) {
        let s = self.scenario;
        self.schedule(0, Input::Boot);
        s.arrivals.iter().enumerate().for_each(|(n, a)| self.schedule(a.at_ms, Input::Arrival(n)));
        s.signals.iter().enumerate().for_each(|(n, g)| self.schedule(g.at_ms, Input::Signal(n)));
        s.reconnects
            .iter()
            .enumerate()
            .for_each(|(n, r)| self.schedule(r.at_ms, Input::Reconnect(n)));
        s.cancels.iter().enumerate().for_each(|(n, c)| self.schedule(c.at_ms, Input::Cancel(n)));
        s.boots.iter().for_each(|&at_ms| self.schedule(at_ms, Input::Boot));
    }

    fn schedule(&mut self, at_ms: u64, input: Input) {
        self.seq += 1;
        self.heap.push(Reverse((at_ms, self.seq, input)));
    }

    fn run(&mut self, observer: &mut dyn Observer) {
        let horizon_ms = self.scenario.last_input_ms().saturating_add(self.scenario.quiet_ms);
        let mut same_instant = 0;
        while let Some(Reverse((at_ms, _, input))) = self.heap.pop() {
            if at_ms > horizon_ms {
                break;
            }
            same_instant = if at_ms == self.now_ms { same_instant + 1 } else { 0 };
            if let Err(violation) = self.check_budget(same_instant) {
                self.report.violation = Some(violation);
                return;
            }
            self.now_ms = at_ms;
            self.step(input);
            if let Err(violation) = self.observe(observer) {
                self.report.violation = Some(violation);
                return;
            }
        }
        self.report.end_ms = self.now_ms;
        self.report.violation = observer.at_end(&self.view()).err();
    }

    fn check_budget(&self, same_instant: u32) -> Result<(), Violation> {
        let spinning = same_instant > SAME_INSTANT_BUDGET || self.report.inputs > INPUT_BUDGET;
        if !spinning {
            return Ok(());
        }
        let reason = format!(
            "no progress: {same_instant} inputs at t={} ms, {} in all",
            self.now_ms, self.report.inputs
        );
        Err(Violation::new(Invariant::L3, self.now_ms, reason))
    }

    fn observe(&mut self, observer: &mut dyn Observer) -> Result<(), Violation> {
        self.report.events += self.fresh.len() as u64;
        let result = observer.after_input(&self.view(), &self.fresh);
        if self.record {
            self.report.entries.append(&mut self.fresh);
        } else {
            self.fresh.clear();
        }
        result
    }

    fn view(&self) -> View<'_> {
        View {
            scenario: self.scenario,
            now_ms: self.now_ms,
            gateway: self.gateway.as_ref(),
            state_file: self.state_file.as_ref(),
            config: &self.config,
        }
    }

    fn step(&mut self, input: Input) {
        self.report.inputs += 1;
        let now_ms = self.now_ms;
        let s = self.scenario;
        if let Input::Boot = input {
            self.boot_process();
        }
        let Some(gateway) = self.gateway.as_mut() else {
            self.note_down(&input);
            return;
        };
        match input {
            // A scheduled start while the process runs: it is already up.
            Input::Boot => gateway.tick(now_ms),
            Input::Arrival(n) => {
                gateway.accept(now_ms, s.message(&s.arrivals[n]));
            }
            Input::Signal(n) => self.deliver_signal(n),
            Input::Reconnect(n) => gateway.channel_disconnected(now_ms, &s.reconnects[n].channel),
            Input::Cancel(n) => {
                let cancel = &s.cancels[n];
                let channel = &s.key(&cancel.key).expect("validated key").channel;
                gateway.cancel_key(now_ms, channel, &cancel.key);
            }
            Input::RunEnd { boot, run, success } if boot == self.boot => {
                gateway.run_finished(now_ms, run, success);
            }
            Input::CloseDone { boot } if boot == self.boot => gateway.close_finished(now_ms),
            Input::Tick { boot } if boot == self.boot => {
                self.ticks.remove(&now_ms);
                gateway.tick(now_ms);
            }
            // An end of an earlier boot's run or close: nothing to report, but the core still
            // settles at this instant, as after every input.
            Input::RunEnd { .. } | Input::CloseDone { .. } | Input::Tick { .. } => {
                gateway.tick(now_ms);
            }
        }
        self.carry_out();
    }

    fn deliver_signal(&mut self, n: usize) {
        let spec = &self.scenario.signals[n];
        let next_config = match spec.kind {
            SignalKind::Reload => Some(spec.config.clone().unwrap_or_else(|| self.config.clone())),
            SignalKind::Shutdown => None,
        };
        let gateway = self.gateway.as_mut().expect("signals reach a running process");
        gateway.signal(self.now_ms, spec.signal(), next_config);
        if let Some(config) = &spec.config {
            // The config file on disk changed, whatever the gateway did with the signal: a
            // later boot reads it.
            self.config = config.clone();
        }
    }

    fn boot_process(&mut self) {
        if self.gateway.is_some() {
            return;
        }
        self.boot += 1;
        self.ticks.clear();
        let hooks = ScriptedHooks { faults: Arc::clone(&self.faults), callback_fails: false };
        let mut gateway = Gateway::new(self.config.clone(), self.boot, Box::new(hooks))
            .with_quirks(self.plan.quirks());
        let at_ms = self.now_ms;
        self.fresh.push(Entry::World { at_ms, boot: self.boot, note: Note::ProcessStarted });
        gateway.start(self.now_ms, self.state_file.take());
        self.gateway = Some(gateway);
    }

    fn note_down(&mut self, input: &Input) {
        let s = self.scenario;
        let note = match input {
            Input::Arrival(n) => {
                Note::RefusedDown { message: s.message(&s.arrivals[*n]).identity() }
            }
            Input::Signal(n) => Note::SignalLost { kind: s.signals[*n].kind },
            _ => return,
        };
        self.fresh.push(Entry::World { at_ms: self.now_ms, boot: self.boot, note });
    }

    /// Takes the core's effects and events and schedules what they ask for.
    fn carry_out(&mut self) {
        let Some(gateway) = self.gateway.as_mut() else { return };
        let (mut effects, mut events) = std::mem::take(&mut self.spare);
        gateway.drain_into(&mut effects, &mut events);
        self.fresh.extend(events.drain(..).map(Entry::Core));
        for effect in effects.drain(..) {
            self.carry_out_one(effect);
        }
        // Both buffers go back empty with their capacity: no allocation per input.
        self.spare = (effects, events);
        self.schedule_tick();
    }

    fn carry_out_one(&mut self, effect: Effect) {
        let (now_ms, boot) = (self.now_ms, self.boot);
        match effect {
            Effect::StartRun { run } => self.start_run(run),
            Effect::CancelRun { .. } => {}
            Effect::Close => {
                let close_ms = self.scenario.close_ms.get(self.closes).copied().unwrap_or(0);
                self.closes += 1;
                self.schedule(now_ms + close_ms, Input::CloseDone { boot });
            }
            Effect::Save(handover) => self.state_file = Some(*handover),
            Effect::Exit(_) => self.exit_process(),
        }
    }

    fn start_run(&mut self, run: RunId) {
        let gateway = self.gateway.as_ref().expect("a running process starts runs");
        let session = gateway.run(run).expect("a started run exists").session.clone();
        let nth = self.runs_started.entry(session.clone()).or_insert(0);
        *nth += 1;
        let behaviour = self.scenario.run_behaviour(&session, *nth);
        let end_ms = self.now_ms + behaviour.duration_ms;
        let success = match behaviour.outcome {
            RunOutcome::Success => !self.scenario.agent_down(end_ms),
            RunOutcome::Failure => false,
            RunOutcome::Hang => return,
        };
        let input = Input::RunEnd { boot: self.boot, run, success };
        self.schedule(end_ms, input);
    }

    fn exit_process(&mut self) {
        self.gateway = None;
        let next_boot = self.scenario.boots.iter().any(|&at_ms| at_ms > self.now_ms);
        if !next_boot {
            self.schedule(self.now_ms + self.scenario.restart_after_ms, Input::Boot);
        }
    }

    fn schedule_tick(&mut self) {
        let Some(gateway) = self.gateway.as_ref() else { return };
        let Some(at_ms) = gateway.next_deadline() else { return };
        assert!(at_ms > self.now_ms, "the core settled every timer due now");
        if self.ticks.insert(at_ms, self.boot).is_none() {
            self.schedule(at_ms, Input::Tick { boot: self.boot });
        }
    }
}
