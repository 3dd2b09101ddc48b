//! Shrinking: a failing seed becomes a minimal scenario that fails the same invariant the same
//! way (see [`Signature`]).
//!
//! Two stages. First the generator's own value tree (`Generator::value_tree`) walks its draws
//! down: fewer messages, signals, faults and runs, times and dice towards 0, each step kept only
//! if the scenario still fails the same invariant under the same plan. That is proptest's shrink
//! loop: `simplify()` after a failing candidate, `complicate()` after a passing one. Then the
//! scenario itself is reduced directly, where the draws cannot reach: single items removed
//! (arrivals, signals, scripted runs, faults, reconnects, cancels, outages, closes, boots,
//! config overrides), settings put back to their defaults, and times shortened (gaps between
//! inputs halved, durations and the quiet period cut), again keeping only what still fails the
//! same way. The result is a local minimum: removing any one more item makes it pass or fail
//! otherwise. Under a historical plan every step must also hold under the SPEC plan, so the
//! minimal scenario witnesses the plan's bug alone.

use std::collections::BTreeSet;

use proptest::strategy::ValueTree;

use quiesce::config::Config;

use crate::explore::{self, Problem};
use crate::generate::Generator;
use crate::oracle::{Invariant, Violation};
use crate::plan::Plan;
use crate::scenario::Scenario;

/// The most candidate scenarios the value-tree stage tries.
pub const TREE_STEPS_MAX: u32 = 20_000;

/// The most candidate scenarios the direct stage tries.
pub const DIRECT_STEPS_MAX: u32 = 20_000;

/// Why a seed could not be shrunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShrinkError {
    /// Every invariant held: there is nothing to shrink.
    Holds,
    /// The run panicked: shrinking keeps an invariant, and a panic is none.
    Panicked(String),
}

impl std::fmt::Display for ShrinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Holds => f.write_str("every invariant held: nothing to shrink"),
            Self::Panicked(message) => write!(f, "the run panicked ({message}): nothing to shrink"),
        }
    }
}

impl std::error::Error for ShrinkError {}

/// The size of a scenario, as the shrink report prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    /// Distinct messages offered (a redelivery is not a new one).
    pub messages: usize,
    /// Signals sent.
    pub signals: usize,
    /// Keys defined.
    pub keys: usize,
    /// Sessions the keys feed.
    pub sessions: usize,
    /// Scripted items besides arrivals and signals: runs, faults, reconnects, cancels,
    /// outages, closes and boots.
    pub scripted: usize,
    /// The time of the last scripted input, in ms.
    pub last_ms: u64,
}

impl Size {
    /// The size of `scenario`.
    pub fn of(scenario: &Scenario) -> Self {
        let messages: BTreeSet<_> = scenario.arrivals.iter().map(|a| (&a.key, &a.id)).collect();
        let sessions: BTreeSet<_> = scenario.keys.iter().map(|k| &k.session).collect();
        let s = scenario;
        let scripted = s.runs.len()
            + s.faults.len()
            + s.reconnects.len()
            + s.cancels.len()
            + s.outages.len()
            + s.close_ms.len()
            + s.boots.len();
        Self {
            messages: messages.len(),
            signals: s.signals.len(),
            keys: s.keys.len(),
            sessions: sessions.len(),
            scripted,
            last_ms: s.last_input_ms(),
        }
    }
}

/// A shrunk failure.
#[derive(Clone, Debug)]
pub struct Shrunk {
    /// The minimal scenario.
    pub scenario: Scenario,
    /// How the minimal scenario fails.
    pub violation: Violation,
    /// The size of the scenario before shrinking.
    pub before: Size,
    /// Candidates tried on the value tree, then directly.
    pub steps: (u32, u32),
}

impl Shrunk {
    /// The size of the minimal scenario.
    pub fn after(&self) -> Size {
        Size::of(&self.scenario)
    }
}

/// How a scenario fails under a plan: its violation, or why it does not fail.
pub fn failure(scenario: &Scenario, plan: Plan) -> Result<Violation, ShrinkError> {
    match explore::check(scenario, plan, false).problem {
        Some(Problem::Violation(violation)) => Ok(violation),
        Some(Problem::Panic(message)) => Err(ShrinkError::Panicked(message)),
        None => Err(ShrinkError::Holds),
    }
}

/// What a shrunk scenario must keep of the original failure: its invariant, and the shape of
/// its reason (the text with every number masked, so ids, times and counts may change). The
/// shape keeps a shrink from slipping to another bug that breaks the same invariant, such as a
/// lost queued message standing in for a lost buffered one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The invariant.
    pub invariant: Invariant,
    /// The reason with each run of digits replaced by `N`.
    pub shape: String,
}

impl Signature {
    /// The signature of a violation.
    pub fn of(violation: &Violation) -> Self {
        let mut shape = String::with_capacity(violation.reason.len());
        for c in violation.reason.chars() {
            if !c.is_ascii_digit() {
                shape.push(c);
            } else if !shape.ends_with('N') {
                shape.push('N');
            }
        }
        Self { invariant: violation.invariant, shape }
    }
}

/// Whether `scenario` fails under `plan` with the same signature and, for a historical plan,
/// holds under the SPEC plan: the plan's bug is what fails it, not a scenario cut too short
/// (a quiet period too brief for the last retry, say).
fn fails(scenario: &Scenario, plan: Plan, signature: &Signature) -> bool {
    let same = failure(scenario, plan).is_ok_and(|v| Signature::of(&v) == *signature);
    same && (plan == Plan::Spec || failure(scenario, Plan::Spec) == Err(ShrinkError::Holds))
}

/// Shrinks the failing scenario of `seed` under `plan` to a minimal one failing the same
/// invariant the same way; under a historical plan, one that holds under the SPEC plan too.
///
/// A seed that fails under both a historical plan and the SPEC plan is a SPEC bug: shrink it
/// under `spec`. Here it shrinks only as far as the SPEC plan keeps holding, so the result may
/// stay large.
pub fn shrink_seed(generator: &Generator, seed: u64, plan: Plan) -> Result<Shrunk, ShrinkError> {
    let mut tree = generator.value_tree(seed);
    let original = tree.current();
    let signature = Signature::of(&failure(&original, plan)?);
    let before = Size::of(&original);

    let (smallest, tree_steps) = shrink_tree(&mut tree, original, plan, &signature);
    let (scenario, direct_steps) = shrink_scenario(smallest, plan, &signature);
    let violation = failure(&scenario, plan)?;
    Ok(Shrunk { scenario, violation, before, steps: (tree_steps, direct_steps) })
}

/// Shrinks a failing scenario file's scenario directly, keeping its invariant.
pub fn shrink_file(scenario: Scenario, plan: Plan) -> Result<Shrunk, ShrinkError> {
    let signature = Signature::of(&failure(&scenario, plan)?);
    let before = Size::of(&scenario);
    let (scenario, direct_steps) = shrink_scenario(scenario, plan, &signature);
    let violation = failure(&scenario, plan)?;
    Ok(Shrunk { scenario, violation, before, steps: (0, direct_steps) })
}

/// proptest's shrink loop over the generator's draws: simplify after a failing candidate,
/// complicate after a passing one.
fn shrink_tree(
    tree: &mut impl ValueTree<Value = Scenario>,
    original: Scenario,
    plan: Plan,
    signature: &Signature,
) -> (Scenario, u32) {
    let mut smallest = original;
    let mut steps = 0;
    if !tree.simplify() {
        return (smallest, steps);
    }
    while steps < TREE_STEPS_MAX {
        steps += 1;
        let candidate = tree.current();
        if fails(&candidate, plan, signature) {
            smallest = candidate;
            if !tree.simplify() {
                break;
            }
        } else if !tree.complicate() {
            break;
        }
    }
    (smallest, steps)
}

/// Greedy reduction of the scenario itself, pass after pass until a pass changes nothing.
pub fn shrink_scenario(scenario: Scenario, plan: Plan, signature: &Signature) -> (Scenario, u32) {
    let mut reducer = Reducer { best: scenario, plan, signature, steps: 0 };
    loop {
        let before = reducer.best.clone();
        reducer.remove_items();
        reducer.plain_config();
        reducer.shorten_times();
        reducer.prune_keys();
        if reducer.best == before || reducer.steps >= DIRECT_STEPS_MAX {
            return (reducer.best, reducer.steps);
        }
    }
}

/// The direct stage: tries one change at a time and keeps it if the failure stays the same.
struct Reducer<'a> {
    best: Scenario,
    plan: Plan,
    signature: &'a Signature,
    steps: u32,
}

/// A change to try: returns false when it does not apply to this scenario.
type Edit<'a> = &'a dyn Fn(&mut Scenario) -> bool;

impl Reducer<'_> {
    /// Keeps `edit` if it applies and the scenario still fails the same invariant.
    fn attempt(&mut self, edit: Edit<'_>) -> bool {
        if self.steps >= DIRECT_STEPS_MAX {
            return false;
        }
        let mut candidate = self.best.clone();
        if !edit(&mut candidate) || candidate == self.best {
            return false;
        }
        self.steps += 1;
        if !fails(&candidate, self.plan, self.signature) {
            return false;
        }
        self.best = candidate;
        true
    }

    /// Removes list items one at a time, last first, so indices stay valid.
    fn remove_items(&mut self) {
        self.remove_each(
            |s| s.arrivals.len(),
            |s, n| {
                s.arrivals.remove(n);
            },
        );
        self.remove_each(
            |s| s.signals.len(),
            |s, n| {
                s.signals.remove(n);
            },
        );
        self.remove_each(
            |s| s.runs.len(),
            |s, n| {
                s.runs.remove(n);
            },
        );
        self.remove_each(
            |s| s.faults.len(),
            |s, n| {
                s.faults.remove(n);
            },
        );
        self.remove_each(
            |s| s.reconnects.len(),
            |s, n| {
                s.reconnects.remove(n);
            },
        );
        self.remove_each(
            |s| s.cancels.len(),
            |s, n| {
                s.cancels.remove(n);
            },
        );
        self.remove_each(
            |s| s.outages.len(),
            |s, n| {
                s.outages.remove(n);
            },
        );
        self.remove_each(
            |s| s.boots.len(),
            |s, n| {
                s.boots.remove(n);
            },
        );
        // Closes are positional: only the last one can go without moving the others.
        while self.attempt(&|s| s.close_ms.pop().is_some()) {}
        for n in 0..self.best.signals.len() {
            self.attempt(&|s| s.signals.get_mut(n).and_then(|g| g.config.take()).is_some());
        }
    }

    fn remove_each(
        &mut self,
        len: impl Fn(&Scenario) -> usize,
        remove: impl Fn(&mut Scenario, usize),
    ) {
        let mut n = len(&self.best);
        while n > 0 {
            n -= 1;
            self.attempt(&|s| {
                let applies = n < len(s);
                if applies {
                    remove(s, n);
                }
                applies
            });
        }
    }

    /// Puts config settings back to their defaults, one at a time.
    fn plain_config(&mut self) {
        let plain = Config::default();
        let edits: [Edit<'_>; 16] = [
            &|s| !std::mem::take(&mut s.config.inbound.channels).is_empty(),
            &|s| !std::mem::take(&mut s.config.queue.sessions).is_empty(),
            &|s| !std::mem::take(&mut s.config.queue.channels).is_empty(),
            &|s| set(&mut s.config.inbound.window_ms, plain.inbound.window_ms),
            &|s| set(&mut s.config.inbound.keys_max, plain.inbound.keys_max),
            &|s| set(&mut s.config.queue.mode, plain.queue.mode),
            &|s| set(&mut s.config.queue.cap, plain.queue.cap),
            &|s| set(&mut s.config.queue.drop, plain.queue.drop),
            &|s| set(&mut s.config.queue.quiet_ms, plain.queue.quiet_ms),
            &|s| set(&mut s.config.run.timeout_ms, plain.run.timeout_ms),
            &|s| set(&mut s.config.run.attempts_max, plain.run.attempts_max),
            &|s| set(&mut s.config.reload.allow_external, plain.reload.allow_external),
            &|s| set(&mut s.config.reload.deadline_ms, plain.reload.deadline_ms),
            &|s| set(&mut s.config.stop.deadline_ms, plain.stop.deadline_ms),
            &|s| set(&mut s.config.close_budget_ms, plain.close_budget_ms),
            &|s| set(&mut s.config.intake_max, plain.intake_max),
        ];
        for edit in edits {
            self.attempt(edit);
        }
        for n in 0..self.best.arrivals.len() {
            self.attempt(&|s| s.arrivals.get_mut(n).and_then(|a| a.window_ms.take()).is_some());
            self.attempt(&|s| s.arrivals.get_mut(n).is_some_and(|a| set(&mut a.debounce, true)));
        }
    }

    /// Halves the gaps between inputs, cuts durations and the quiet period.
    fn shorten_times(&mut self) {
        let times: BTreeSet<u64> = input_times(&self.best).collect();
        let times: Vec<u64> = times.into_iter().collect();
        for pair in times.windows(2).rev() {
            let (earlier, later) = (pair[0], pair[1]);
            let mut gap = later - earlier;
            while gap > 0 && self.attempt(&|s| shift_after(s, earlier, gap - gap / 2)) {
                gap /= 2;
            }
        }
        if let Some(&first) = times.first() {
            self.attempt(&|s| map_times(s, |at| at.saturating_sub(first)));
        }
        for n in 0..self.best.runs.len() {
            self.halve(|s| s.runs.get_mut(n).map(|r| &mut r.duration_ms));
        }
        for n in 0..self.best.close_ms.len() {
            self.halve(|s| s.close_ms.get_mut(n));
        }
        self.halve(|s| Some(&mut s.run_default.duration_ms));
        self.halve(|s| Some(&mut s.restart_after_ms));
        self.halve(|s| Some(&mut s.quiet_ms));
    }

    /// Tries 0, then halves `field` while the failure stays.
    fn halve(&mut self, field: impl Fn(&mut Scenario) -> Option<&mut u64>) {
        if self.attempt(&|s| field(s).is_some_and(|v| set(v, 0))) {
            return;
        }
        while self.attempt(&|s| field(s).is_some_and(|v| set(v, *v / 2))) {}
    }

    /// Drops keys nothing names any more.
    fn prune_keys(&mut self) {
        self.attempt(&|s| {
            let used: BTreeSet<_> =
                s.arrivals.iter().map(|a| &a.key).chain(s.cancels.iter().map(|c| &c.key)).collect();
            let keys: Vec<_> = s.keys.iter().filter(|k| used.contains(&k.name)).cloned().collect();
            let changed = keys.len() != s.keys.len();
            s.keys = keys;
            changed
        });
    }
}

/// Sets `field` to `value`; true if that changed it.
fn set<T: PartialEq>(field: &mut T, value: T) -> bool {
    let changed = *field != value;
    *field = value;
    changed
}

/// Every time an input of the scenario happens at, and the edges of its outages.
fn input_times(s: &Scenario) -> impl Iterator<Item = u64> + '_ {
    let arrivals = s.arrivals.iter().map(|a| a.at_ms);
    let signals = s.signals.iter().map(|g| g.at_ms);
    let reconnects = s.reconnects.iter().map(|r| r.at_ms);
    let cancels = s.cancels.iter().map(|c| c.at_ms);
    let faults = s.faults.iter().filter_map(|f| f.at_ms);
    let outages = s.outages.iter().flat_map(|o| [o.from_ms, o.until_ms]);
    let boots = s.boots.iter().copied();
    arrivals
        .chain(signals)
        .chain(reconnects)
        .chain(cancels)
        .chain(faults)
        .chain(outages)
        .chain(boots)
}

/// Moves every time after `after` earlier by `by`, to no earlier than `after`; true if
/// anything moved.
fn shift_after(s: &mut Scenario, after: u64, by: u64) -> bool {
    map_times(s, |at| if at > after { at.saturating_sub(by).max(after) } else { at })
}

/// Applies `f` to every input time and outage edge; true if any changed.
fn map_times(s: &mut Scenario, f: impl Fn(u64) -> u64) -> bool {
    let mut moved = false;
    let mut map = |at: &mut u64| {
        let to = f(*at);
        moved |= to != *at;
        *at = to;
    };
    s.arrivals.iter_mut().for_each(|a| map(&mut a.at_ms));
    s.signals.iter_mut().for_each(|g| map(&mut g.at_ms));
    s.reconnects.iter_mut().for_each(|r| map(&mut r.at_ms));
    s.cancels.iter_mut().for_each(|c| map(&mut c.at_ms));
    s.faults.iter_mut().filter_map(|f| f.at_ms.as_mut()).for_each(&mut map);
    for outage in &mut s.outages {
        map(&mut outage.from_ms);
        map(&mut outage.until_ms);
    }
    s.boots.iter_mut().for_each(&mut map);
    moved
}

/// The minimal scenario as a file: a header saying what fails and how to run it, then the
/// scenario.
pub fn file_text(shrunk: &Shrunk, plan: Plan, origin: &str) -> String {
    let mut text = String::new();
    text.push_str(&format!(
        "# Minimal scenario: under plan `{}`, {} fails.\n",
        plan.name(),
        shrunk.violation.invariant.title()
    ));
    for line in wrap(&format!("Plan `{}`: {}", plan.name(), plan.about()), 94) {
        text.push_str(&format!("# {line}\n"));
    }
    text.push_str(&format!("# Shrunk from {origin}.\n"));
    text.push_str(&format!("# Verdict: {}\n", shrunk.violation));
    text.push_str(&format!(
        "# Run it: cargo run --release -p quiesce-sim -- run FILE --plan {}\n\n",
        plan.name()
    ));
    text.push_str(&shrunk.scenario.to_toml_string());
    text
}

/// Words joined into lines of at most `width` characters (a longer word stands alone).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}
