//! From raw draws to a scenario: one pure function of the draws and the parameters.
//!
//! It picks the config, places and names the arrivals, and aims signals, faults, reconnects,
//! cancels and boots at the instants where restarts go wrong (DESIGN "Scenario"): inside a
//! debounce window, at a timer flush, during another restart's wait, at a deadline, in a burst
//! of traffic, after a stop. A draw names what it aims at by index modulo the list it points
//! into, so a shrunk list keeps every reference valid.

use quiesce::config::Config;
use quiesce::message::{ChannelId, Destination, Key, MessageId, SessionId};
use quiesce::signal::{Origin, SignalKind};

use super::Params;
use super::dice::{Dice, Pick, picks};
use super::swarm::{self, Knobs};
use crate::scenario::{
    Arrival, Cancel, Fault, KeySpec, Outage, Reconnect, RunBehaviour, RunOutcome, RunSpec,
    Scenario, SignalSpec,
};

/// Which run of a session a scripted behaviour may name, at most.
const NTH_MAX: u64 = 6;

/// Bits of an arrival's rank in its draws, packed under its time for sorting.
const RANK_BITS: u32 = 20;
const RANK_MASK: u64 = (1 << RANK_BITS) - 1;

/// What admission faults report, by draw.
const FAULT_REASONS: [&str; 3] = ["scripted fault", "lock timeout", "session closed"];

/// The draws as the strategy produces them: plain numbers, grouped to fit proptest's tuples.
pub(super) type Raw = (
    ([u64; 5], [u64; 5], Vec<u64>, Vec<u64>, Vec<(u64, u64)>, Vec<(u64, u64, u64)>),
    (Vec<u64>, Vec<(u64, u64)>, Vec<(u64, u64)>, Vec<u64>, Vec<u64>),
    (Vec<u64>, Vec<u64>, Vec<u64>, Vec<u64>, Vec<u64>, Vec<u64>),
);

/// The draws of one scenario, by name.
struct Draws {
    config: [Pick; 15],
    knobs: [Pick; 15],
    centres: Vec<u64>,
    /// Each key's shape (see [`Names::key_spec`]), two bits per key.
    shapes: Vec<u64>,
    arrivals: Vec<(u64, u64)>,
    signals: Vec<(u64, u64, u64)>,
    channel_windows: Vec<u64>,
    session_overrides: Vec<(u64, u64)>,
    channel_overrides: Vec<(u64, u64)>,
    redeliveries: Vec<u64>,
    runs: Vec<u64>,
    faults: Vec<u64>,
    reconnects: Vec<u64>,
    cancels: Vec<u64>,
    closes: Vec<u64>,
    boots: Vec<u64>,
    outages: Vec<u64>,
}

impl Draws {
    fn new(raw: Raw) -> Self {
        let ((config, knobs, centres, shapes, arrivals, signals), world, scripts) = raw;
        let (channel_windows, session_overrides, channel_overrides, redeliveries, runs) = world;
        let (faults, reconnects, cancels, closes, boots, outages) = scripts;
        Self {
            config: picks(&config.map(Dice::new)),
            knobs: picks(&knobs.map(Dice::new)),
            centres,
            shapes,
            arrivals,
            signals,
            channel_windows,
            session_overrides,
            channel_overrides,
            redeliveries,
            runs,
            faults,
            reconnects,
            cancels,
            closes,
            boots,
            outages,
        }
    }
}

/// Names built once per generator, so resolving a scenario clones shared strings instead of
/// formatting new ones.
#[derive(Debug)]
pub(super) struct Names {
    channels: Vec<ChannelId>,
    sessions: Vec<SessionId>,
    /// Per key, its three possible shapes.
    keys: Vec<[KeySpec; 3]>,
    /// Message ids by arrival rank, from `m1`.
    ids: Vec<MessageId>,
}

impl Names {
    pub(super) fn new(params: &Params) -> Self {
        let channels = (0..params.channels).map(|n| ChannelId::from(format!("c{n}"))).collect();
        let sessions = (0..params.sessions).map(|n| SessionId::from(format!("s{n}"))).collect();
        let ids = (1..=params.messages.max).map(|n| MessageId::from(format!("m{n}"))).collect();
        let keys = (0..params.keys).map(|k| key_shapes(params, k)).collect();
        Self { channels, sessions, keys, ids }
    }

    /// Key `k`'s spec in `shape`. The first key of each session is its home: the session's own
    /// channel and conversation. A later key is another sender in that conversation (the same
    /// destination, so `collect` runs it with the home key), a thread of it (another
    /// destination), or the session fed from another channel.
    fn key_spec(&self, k: usize, shape: usize) -> &KeySpec {
        let home = k < self.sessions.len();
        &self.keys[k][if home { 0 } else { shape }]
    }
}

fn key_shapes(params: &Params, k: u32) -> [KeySpec; 3] {
    let session = k % params.sessions;
    let home = session % params.channels;
    let other = (home + 1) % params.channels;
    let spec = |channel: u32, destination: String| KeySpec {
        name: Key::from(format!("k{k}")),
        channel: ChannelId::from(format!("c{channel}")),
        session: SessionId::from(format!("s{session}")),
        destination: Destination::from(destination),
    };
    [
        spec(home, format!("d{session}")),
        spec(home, format!("d{session}.t{k}")),
        spec(other, format!("d{session}.c{other}")),
    ]
}

/// The scenario the draws describe.
pub(super) fn resolve(names: &Names, params: &Params, raw: Raw) -> Scenario {
    let draws = Draws::new(raw);
    Resolver::new(names, params, &draws).resolve(&draws)
}

/// An arrival placed in time, before it becomes a scenario arrival.
#[derive(Clone, Copy, Debug)]
struct Placed {
    at_ms: u64,
    /// Its place in the draws, which orders arrivals drawn for the same instant.
    rank: usize,
    key: usize,
    debounce: bool,
    window_ms: Option<i64>,
    /// The window that applies to it, for aiming at its buffer.
    effective_ms: u64,
}

/// Something aimed at an earlier item by index, with a pick for the details.
#[derive(Clone, Copy, Debug)]
struct Aimed {
    target: usize,
    pick: Pick,
    other: usize,
}

impl Aimed {
    fn read(die: u64) -> Self {
        let mut d = Dice::new(die);
        Self { target: d.index(), pick: d.pick(), other: d.index() }
    }
}

/// Turns the draws of one scenario into the scenario.
struct Resolver<'a> {
    names: &'a Names,
    params: &'a Params,
    knobs: Knobs,
    /// Each key's shape, by index.
    shapes: Vec<usize>,
    /// Each key's default window under the config, by index.
    windows: Vec<u64>,
    scenario: Scenario,
    /// Arrivals in time order; arrival `n` has id `m{n+1}`.
    placed: Vec<Placed>,
}

impl<'a> Resolver<'a> {
    fn new(names: &'a Names, params: &'a Params, draws: &Draws) -> Self {
        let swarm = params.swarm;
        let knobs = if swarm { Knobs::draw(&draws.knobs) } else { Knobs::STEADY };
        let config = match &params.config {
            Some(config) => config.clone(),
            None if swarm => swarm_config(names, draws),
            None => Config::default(),
        };
        let shapes: Vec<usize> = (0..names.keys.len()).map(|k| shape(&draws.shapes, k)).collect();
        let windows = shapes
            .iter()
            .enumerate()
            .map(|(k, &s)| config.window_ms(&names.key_spec(k, s).channel));
        let windows = windows.collect();
        let scenario = Scenario { config, ..Scenario::default() };
        Self { names, params, knobs, shapes, windows, scenario, placed: Vec::new() }
    }

    fn resolve(mut self, draws: &Draws) -> Scenario {
        self.place_arrivals(&draws.arrivals, &draws.centres);
        self.add_signals(&draws.signals, &draws.centres);
        self.add_arrivals();
        self.add_redeliveries(&draws.redeliveries);

        self.add_runs(&draws.runs);
        self.add_faults(&draws.faults);
        self.add_reconnects(&draws.reconnects);
        self.add_cancels(&draws.cancels);
        self.add_closes(&draws.closes);
        self.add_boots(&draws.boots);
        self.add_outages(&draws.outages);

        self.add_keys();
        self.scenario.quiet_ms = self.quiet_ms();
        self.scenario
    }

    fn key_spec(&self, key: usize) -> &'a KeySpec {
        self.names.key_spec(key, self.shapes[key])
    }

    /// Places every arrival in time: anywhere in the span, or in one of the seed's bursts.
    fn place_arrivals(&mut self, draws: &[(u64, u64)], centres: &[u64]) {
        let placed: Vec<Placed> = draws
            .iter()
            .enumerate()
            .map(|(rank, &(at_ms, die))| self.place(rank, at_ms, Dice::new(die), centres))
            .collect();

        // Sorting (time, rank) pairs packed in one integer is several times faster than sorting
        // the placed arrivals themselves, and as fully determined: no two pairs are equal.
        let mut order: Vec<u64> =
            placed.iter().map(|p| (p.at_ms << RANK_BITS) | p.rank as u64).collect();
        order.sort_unstable();
        self.placed = order.iter().map(|o| placed[(o & RANK_MASK) as usize]).collect();
    }

    fn place(&self, rank: usize, at_ms: u64, mut d: Dice, centres: &[u64]) -> Placed {
        let k = &self.knobs;
        let (key, burst, hot, control, window) =
            (d.index(), d.pick(), d.flag(k.hot_pct), d.flag(k.control_pct), d.pick());
        let centre = centres[d.take(2) as usize % centres.len()];

        let in_burst = burst.chance(k.burst_pct);
        let at_ms = if in_burst {
            (centre + burst.scale(0, k.burst_ms)).min(self.params.span_ms)
        } else {
            at_ms
        };
        let key = if hot { k.hot_key } else { key } % self.names.keys.len();
        let window_ms = window.chance(k.item_window_pct).then(|| window.scale_signed(-50, 3_000));

        let effective_ms = window_ms.map_or(self.windows[key], |w| w.max(0) as u64);
        Placed { at_ms, rank, key, debounce: !control, window_ms, effective_ms }
    }

    /// The placed arrival an index aims at, if there is any arrival.
    fn target(&self, index: usize) -> Option<(usize, Placed)> {
        let n = index % self.placed.len().max(1);
        self.placed.get(n).map(|p| (n, *p))
    }

    fn add_arrivals(&mut self) {
        let arrivals = self.placed.iter().enumerate().map(|(n, p)| self.arrival(n, p, p.at_ms));
        self.scenario.arrivals = arrivals.collect();
    }

    fn arrival(&self, n: usize, placed: &Placed, at_ms: u64) -> Arrival {
        Arrival {
            at_ms,
            key: self.key_spec(placed.key).name.clone(),
            id: self.names.ids[n].clone(),
            text: None,
            debounce: placed.debounce,
            window_ms: placed.window_ms,
        }
    }

    /// Redeliveries: a channel sends an arrival's id again, soon after or after a restart, to
    /// reach the dedupe memory and its handover.
    fn add_redeliveries(&mut self, dice: &[u64]) {
        for aimed in dice.iter().map(|&d| Aimed::read(d)) {
            let Some((n, placed)) = self.target(aimed.target) else { return };
            let signals = &self.scenario.signals;
            let after_signal = signals.get(aimed.other % signals.len().max(1));
            let at_ms = match after_signal {
                Some(signal) if aimed.pick.chance(50) => {
                    signal.at_ms.max(placed.at_ms) + aimed.pick.scale(0, 5_000)
                }
                _ => placed.at_ms + aimed.pick.scale(0, 2_000),
            };
            let arrival = self.arrival(n, &placed, at_ms);
            let behind = self.scenario.arrivals.partition_point(|a| a.at_ms <= at_ms);
            self.scenario.arrivals.insert(behind, arrival);
        }
    }

    fn add_signals(&mut self, draws: &[(u64, u64, u64)], centres: &[u64]) {
        for &(at_ms, a, b) in draws {
            let signal = self.signal(at_ms, Dice::new(a), Dice::new(b), centres);
            self.scenario.signals.push(signal);
        }
    }

    fn signal(&self, at_ms: u64, mut a: Dice, mut b: Dice, centres: &[u64]) -> SignalSpec {
        let k = &self.knobs;
        let (kind, origin, change) = (a.pick(), a.pick(), a.pick());
        let kind = if kind.chance(k.stop_pct) { SignalKind::Shutdown } else { SignalKind::Reload };
        let origin =
            if origin.chance(k.internal_pct) { Origin::Internal } else { Origin::External };

        let drawn_config = self.params.config.is_none() && self.params.swarm;
        let changes = kind == SignalKind::Reload && drawn_config && change.chance(k.new_config_pct);
        let config = changes.then(|| swarm::changed_config(&self.scenario.config, change));
        let (aim, target) = (b.pick(), b.index());
        SignalSpec { at_ms: self.aim(at_ms, aim, target, centres), kind, origin, config }
    }

    /// When a signal comes: anywhere, or at one of the instants where restarts go wrong.
    fn aim(&self, at_ms: u64, aim: Pick, target: usize, centres: &[u64]) -> u64 {
        let previous = self.scenario.signals.last();
        let arrival = self.target(target).map(|(_, p)| p);
        match (aim.sel, arrival, previous) {
            (30..45, Some(a), _) => a.at_ms + aim.scale(0, a.effective_ms),
            (45..55, Some(a), _) => a.at_ms + a.effective_ms,
            (55..65, _, _) => centres[target % centres.len()] + aim.scale(0, self.knobs.burst_ms),
            (65..75, _, Some(p)) => p.at_ms + aim.scale(0, 50),
            (75..88, _, Some(p)) => p.at_ms + aim.scale(0, self.deadline_of(p)),
            (88..100, _, Some(p)) => {
                (p.at_ms + self.deadline_of(p) + aim.scale(0, 2)).saturating_sub(1)
            }
            _ => at_ms,
        }
    }

    fn deadline_of(&self, signal: &SignalSpec) -> u64 {
        let config = &self.scenario.config;
        match signal.kind {
            SignalKind::Reload => config.reload.deadline_ms,
            SignalKind::Shutdown => config.stop.deadline_ms,
        }
    }

    /// Scripted runs: some fail, some hang until the run timeout, some outlive a deadline.
    fn add_runs(&mut self, dice: &[u64]) {
        let k = self.knobs;
        self.scenario.run_default =
            RunBehaviour { duration_ms: k.run_ms, outcome: RunOutcome::Success };
        for &die in dice {
            let run = self.run(Dice::new(die));
            if !self.scenario.runs.iter().any(|r| r.session == run.session && r.nth == run.nth) {
                self.scenario.runs.push(run);
            }
        }
        self.scenario.runs.sort_unstable_by(|a, b| (&a.session, a.nth).cmp(&(&b.session, b.nth)));
    }

    fn run(&self, mut d: Dice) -> RunSpec {
        let k = &self.knobs;
        let session = self.names.sessions[d.index() % self.names.sessions.len()].clone();
        let nth = (d.take(3) % NTH_MAX + 1) as u32;
        let (outcome, duration) = (d.pick(), d.pick());
        let outcome = if outcome.chance(k.hang_pct) {
            RunOutcome::Hang
        } else if outcome.chance(k.hang_pct + k.fail_pct) {
            RunOutcome::Failure
        } else {
            RunOutcome::Success
        };
        let long = duration.chance(k.long_pct);
        let duration_ms =
            if long { duration.scale(2_000, 120_000) } else { duration.scale(0, 2_000) };
        RunSpec { session, nth, duration_ms, outcome }
    }

    /// Admission faults: of one message's batch, or of whatever is admitted at the instant an
    /// arrival's buffer flushes.
    fn add_faults(&mut self, dice: &[u64]) {
        for aimed in dice.iter().map(|&d| Aimed::read(d)) {
            let Some((n, placed)) = self.target(aimed.target) else { return };
            let by_time = aimed.pick.chance(40);
            let fault = Fault {
                message: (!by_time).then(|| self.names.ids[n].clone()),
                at_ms: by_time.then_some(placed.at_ms + placed.effective_ms),
                reason: FAULT_REASONS[aimed.other % FAULT_REASONS.len()].to_owned(),
                callback_fails: aimed.pick.permille >= 700,
            };
            self.scenario.faults.push(fault);
        }
    }

    /// Channel reconnects: often while an arrival of the channel waits in its buffer.
    fn add_reconnects(&mut self, dice: &[u64]) {
        for aimed in dice.iter().map(|&d| Aimed::read(d)) {
            let reconnect = match self.target(aimed.target) {
                Some((_, placed)) if !aimed.pick.chance(40) => Reconnect {
                    at_ms: placed.at_ms + aimed.pick.scale(0, placed.effective_ms),
                    channel: self.key_spec(placed.key).channel.clone(),
                },
                _ => Reconnect {
                    at_ms: aimed.pick.scale(0, self.params.span_ms),
                    channel: self.names.channels[aimed.other % self.names.channels.len()].clone(),
                },
            };
            self.scenario.reconnects.push(reconnect);
        }
    }

    /// `cancel_key` calls, while an arrival of the key may still be buffered.
    fn add_cancels(&mut self, dice: &[u64]) {
        for aimed in dice.iter().map(|&d| Aimed::read(d)) {
            let Some((_, placed)) = self.target(aimed.target) else { return };
            let at_ms = placed.at_ms + aimed.pick.scale(0, placed.effective_ms);
            self.scenario
                .cancels
                .push(Cancel { at_ms, key: self.key_spec(placed.key).name.clone() });
        }
    }

    /// Close durations: quick, or a good part of the close budget, so runs in progress end
    /// while the gateway drains, or past the budget.
    fn add_closes(&mut self, dice: &[u64]) {
        let budget_ms = self.scenario.config.close_budget_ms;
        let slow_pct = self.knobs.slow_close_pct;
        for pick in dice.iter().map(|&d| Dice::new(d).pick()) {
            let close_ms = if pick.chance(slow_pct) {
                pick.scale(budget_ms, budget_ms * 2 + 1)
            } else if pick.chance(slow_pct + 40) {
                pick.scale(budget_ms / 4, budget_ms)
            } else {
                pick.scale(0, 100)
            };
            self.scenario.close_ms.push(close_ms);
        }
    }

    /// Boots after stops: a process that stopped starts again and restores its state file,
    /// sometimes while traffic is still arriving.
    fn add_boots(&mut self, dice: &[u64]) {
        self.scenario.restart_after_ms = self.knobs.restart_after_ms;
        let signals = &self.scenario.signals;
        let stops: Vec<u64> =
            signals.iter().filter(|s| s.kind == SignalKind::Shutdown).map(|s| s.at_ms).collect();
        if stops.is_empty() {
            return;
        }
        let config = &self.scenario.config;
        let late_ms = config.stop.deadline_ms + config.close_budget_ms + 2_000;
        for aimed in dice.iter().map(|&d| Aimed::read(d)) {
            let at_ms = stops[aimed.target % stops.len()] + aimed.pick.scale(0, late_ms);
            self.scenario.boots.push(at_ms);
        }
        self.scenario.boots.sort_unstable();
    }

    /// Agent outages: mostly over a whole restart, from its signal to past its deadline and
    /// close budget, so runs fail while the gateway waits and while it drains; sometimes
    /// anywhere in the traffic.
    fn add_outages(&mut self, dice: &[u64]) {
        let config = &self.scenario.config;
        let restart_ms = config.reload.deadline_ms.max(config.stop.deadline_ms);
        let budget_ms = config.close_budget_ms;
        for aimed in dice.iter().map(|&d| Aimed::read(d)) {
            let signals = &self.scenario.signals;
            let outage = match signals.get(aimed.target % signals.len().max(1)) {
                Some(signal) if aimed.pick.chance(70) => Outage {
                    from_ms: signal.at_ms,
                    until_ms: signal.at_ms + restart_ms + budget_ms + aimed.pick.scale(0, 2_000),
                },
                _ => {
                    let from_ms = aimed.pick.scale(0, self.params.span_ms);
                    Outage { from_ms, until_ms: from_ms + aimed.pick.scale(100, 5_000) }
                }
            };
            self.scenario.outages.push(outage);
        }
    }

    /// The keys the scenario uses, in index order: fewer arrivals, fewer keys.
    fn add_keys(&mut self) {
        let mut used = vec![false; self.names.keys.len()];
        self.placed.iter().for_each(|p| used[p.key] = true);
        let keys = used.iter().enumerate().filter(|(_, used)| **used);
        self.scenario.keys = keys.map(|(k, _)| self.key_spec(k).clone()).collect();
    }

    /// A quiet period long enough for everything scripted to settle, so a scenario never fails
    /// liveness for want of time.
    ///
    /// Each run lasts at most the run timeout. Every run holds at least one message, and a
    /// message is in at most `attempts_max` failed runs, one interrupted run per stop and one
    /// successful run. In the worst case all runs are serial, each followed by the longest pause
    /// before the next; every restart takes at most its deadline, the close budget, the slowest
    /// close and the pause before the next boot.
    fn quiet_ms(&self) -> u64 {
        let s = &self.scenario;
        let configs: Vec<&Config> = std::iter::once(&s.config)
            .chain(s.signals.iter().filter_map(|g| g.config.as_ref()))
            .collect();
        let max = |f: &dyn Fn(&Config) -> u64| configs.iter().map(|c| f(c)).max().unwrap_or(0);

        let stops = s.signals.iter().filter(|g| g.kind == SignalKind::Shutdown).count() as u64;
        let runs = s.arrivals.len() as u64 * (max(&|c| u64::from(c.run.attempts_max)) + stops + 1);
        let pause_ms = max(&longest_pause_ms) + 5 * max(&longest_window_ms) + 100;
        let run_ms = max(&|c| c.run.timeout_ms) + pause_ms;

        let close_ms = s.close_ms.iter().copied().max().unwrap_or(0);
        let deadline_ms = max(&|c| c.reload.deadline_ms.max(c.stop.deadline_ms));
        let restart_ms = deadline_ms + max(&|c| c.close_budget_ms) + close_ms + s.restart_after_ms;
        let restarts = s.signals.len() as u64 + 1;
        runs.saturating_mul(run_ms).saturating_add(restarts.saturating_mul(restart_ms))
    }
}

/// The config of a swarm seed: the drawn settings, some channels' windows, and some queue
/// overrides.
fn swarm_config(names: &Names, draws: &Draws) -> Config {
    let mut config = swarm::draw_config(&draws.config);
    let windows: Vec<Pick> = draws.channel_windows.iter().map(|&d| Dice::new(d).pick()).collect();
    swarm::add_channel_windows(&mut config, &windows, &names.channels);
    for &(a, b) in &draws.session_overrides {
        let (target, picks) = override_picks(a, b);
        swarm::add_session_override(
            &mut config,
            &names.sessions[target % names.sessions.len()],
            picks,
        );
    }
    for &(a, b) in &draws.channel_overrides {
        let (target, picks) = override_picks(a, b);
        swarm::add_channel_override(
            &mut config,
            &names.channels[target % names.channels.len()],
            picks,
        );
    }
    config
}

/// Key `k`'s shape, from two bits of the shape dice: 0 (home) for half the keys.
fn shape(dice: &[u64], k: usize) -> usize {
    let die = dice.get(k / 32).copied().unwrap_or(0);
    ((die >> (2 * (k % 32))) & 3) as usize % 3
}

fn override_picks(a: u64, b: u64) -> (usize, [Pick; 4]) {
    let mut a = Dice::new(a);
    let target = a.index();
    let [first, second, third] = a.picks();
    (target, [first, second, third, Dice::new(b).pick()])
}

/// The longest queue quiet time any queue of `config` waits.
fn longest_pause_ms(config: &Config) -> u64 {
    let overrides = config.queue.sessions.values().chain(config.queue.channels.values());
    overrides.filter_map(|o| o.quiet_ms).fold(config.queue.quiet_ms, u64::max)
}

/// The longest window any message may wait for: the longest default, or a per-item window.
fn longest_window_ms(config: &Config) -> u64 {
    let channels = config.inbound.channels.values().filter_map(|c| c.window_ms);
    channels.fold(config.inbound.window_ms, u64::max).max(3_000)
}
