//! Exploration: many seeds on several threads, each checked by its own oracle, ending in the
//! lowest failing seed and the merged coverage.
//!
//! Jobs take seeds from one shared counter in increasing order. A job that finds a failure
//! lowers a shared bound, and every job stops at the first seed beyond it. Every seed below a
//! failing one was handed out before it, so it is still checked: the lowest failing seed is the
//! same whatever the number of jobs and however the threads interleave.
//!
//! A panic in the core or the driver is a failure like a broken invariant: the seed is caught,
//! reported and replayable, instead of taking the whole exploration down with it.
//!
//! The wall clock stays out of this module; the command line measures throughput around it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::driver::{self, Entry, Observer, Report, View};
use crate::generate::{Generator, Params};
use crate::oracle::{Coverage, Oracle, Violation};
use crate::scenario::Scenario;

pub use crate::plan::Plan;

/// One of `count` disjoint parts of the seed space: the seeds with `seed % count == index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Which part, from 0.
    pub index: u64,
    /// How many parts.
    pub count: u64,
}

impl Default for Shard {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl FromStr for Shard {
    type Err = String;

    /// Parses `i/n`, with `i < n`.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a shard: write i/n with i < n, such as 0/4");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let index: u64 = index.trim().parse().map_err(|_| bad())?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        if index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What to explore.
#[derive(Clone, Debug)]
pub struct Exploration {
    /// The generator's parameters.
    pub params: Params,
    /// The restart plan.
    pub plan: Plan,
    /// The first seed considered.
    pub start: u64,
    /// How many seeds of the shard to run.
    pub seeds: u64,
    /// Which seeds from `start` on are this run's.
    pub shard: Shard,
    /// How many threads run seeds.
    pub jobs: usize,
}

impl Exploration {
    /// The `n`th seed of this exploration, if it fits in a `u64`.
    pub fn seed(&self, n: u64) -> Option<u64> {
        let Shard { index, count } = self.shard;
        let first = self.start.checked_add((index + count - self.start % count) % count)?;
        first.checked_add(n.checked_mul(count)?)
    }
}

/// What went wrong in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// An invariant failed.
    Violation(Violation),
    /// The core or the driver panicked: an assertion of theirs failed.
    Panic(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Violation(violation) => write!(f, "{violation}"),
            Self::Panic(message) => write!(f, "panicked: {message}"),
        }
    }
}

/// A seed whose run went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// What went wrong.
    pub problem: Problem,
}

/// One run, checked by a fresh oracle.
#[derive(Debug, Default)]
pub struct Checked {
    /// The driver's report; after a panic, only what the entries show is known.
    pub report: Report,
    /// What went wrong, if anything.
    pub problem: Option<Problem>,
    /// The coverage facts the run reached (none after a panic).
    pub coverage: Coverage,
    /// Every entry up to the end or the panic, when recording was asked for.
    pub entries: Vec<Entry>,
}

/// Runs a scenario under `plan` and a fresh oracle for that plan, catching a panic; keeps the
/// entries if `record`.
///
/// Recording goes through an observer rather than the driver's own recording, so the entries
/// before a panic survive it.
pub fn check(scenario: &Scenario, plan: Plan, record: bool) -> Checked {
    let mut oracle = Oracle::with_phases(plan.phases());
    let mut recording = Recording { oracle: &mut oracle, entries: Vec::new() };
    let observer: &mut dyn Observer = if record { &mut recording } else { &mut *recording.oracle };
    let run = catch_unwind(AssertUnwindSafe(|| driver::run_plan(scenario, plan, observer, false)));
    let entries = recording.entries;

    match run {
        Ok(report) => {
            let problem = report.violation.clone().map(Problem::Violation);
            Checked { report, problem, coverage: oracle.coverage().clone(), entries }
        }
        Err(payload) => {
            let problem = Some(Problem::Panic(panic_message(payload.as_ref())));
            Checked { problem, entries, ..Checked::default() }
        }
    }
}

/// Runs one seed's scenario; see [`check`].
pub fn check_seed(generator: &Generator, seed: u64, plan: Plan, record: bool) -> Checked {
    check(&generator.generate(seed), plan, record)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload.downcast_ref::<&str>().copied();
    let owned = payload.downcast_ref::<String>().map(String::as_str);
    text.or(owned).unwrap_or("a panic without a message").to_owned()
}

/// An observer that keeps every entry before passing it on to the oracle.
struct Recording<'a> {
    oracle: &'a mut Oracle,
    entries: Vec<Entry>,
}

impl Observer for Recording<'_> {
    fn after_input(&mut self, view: &View<'_>, entries: &[Entry]) -> Result<(), Violation> {
        self.entries.extend_from_slice(entries);
        self.oracle.after_input(view, entries)
    }

    fn at_end(&mut self, view: &View<'_>) -> Result<(), Violation> {
        self.oracle.at_end(view)
    }
}

/// What an exploration found.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Seeds run to the end or to their first violation.
    pub seeds_run: u64,
    /// Inputs fed to the core, over all seeds.
    pub inputs: u64,
    /// Events the core emitted, over all seeds.
    pub events: u64,
    /// Coverage facts, over all seeds.
    pub coverage: Coverage,
    /// Every failing seed found, lowest first. Jobs stop at the first failure they see, so
    /// only the lowest is certain to be the lowest failing seed of the range.
    pub failures: Vec<Failure>,
}

impl Summary {
    /// The lowest failing seed.
    pub fn first_failure(&self) -> Option<&Failure> {
        self.failures.first()
    }

    fn add_seed(&mut self, report: &Report, coverage: &Coverage) {
        self.seeds_run += 1;
        self.inputs += report.inputs;
        self.events += report.events;
        self.coverage.merge(coverage);
    }

    fn merge(&mut self, other: Summary) {
        self.seeds_run += other.seeds_run;
        self.inputs += other.inputs;
        self.events += other.events;
        self.coverage.merge(&other.coverage);
        self.failures.extend(other.failures);
        self.failures.sort_by_key(|f| f.seed);
    }
}

/// Runs the exploration on `exploration.jobs` threads. `done` counts finished seeds as they
/// finish, for a progress display.
pub fn explore(exploration: &Exploration, done: &AtomicU64) -> Summary {
    let next = AtomicU64::new(0);
    let bound = AtomicU64::new(exploration.seeds);
    let jobs = exploration.jobs.max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..jobs).map(|_| scope.spawn(|| job(exploration, &next, &bound, done))).collect();
        let mut summary = Summary::default();
        for handle in handles {
            summary.merge(handle.join().expect("an exploration job panicked"));
        }
        summary
    })
}

/// One thread's share: seeds from the shared counter until the range or a failure ends it.
fn job(
    exploration: &Exploration,
    next: &AtomicU64,
    bound: &AtomicU64,
    done: &AtomicU64,
) -> Summary {
    let generator = Generator::new(&exploration.params);
    let mut summary = Summary::default();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let Some(seed) = exploration.seed(n).filter(|_| n < bound.load(Ordering::Relaxed)) else {
            return summary;
        };

        let checked = check_seed(&generator, seed, exploration.plan, false);
        summary.add_seed(&checked.report, &checked.coverage);
        done.fetch_add(1, Ordering::Relaxed);

        if let Some(problem) = checked.problem {
            bound.fetch_min(n, Ordering::Relaxed);
            summary.failures.push(Failure { seed, problem });
            return summary;
        }
    }
}
