//! Time to find: how many seeds the simulation needs to catch each historical plan's bug.
//!
//! From each of several starting seeds spread far apart, seeds are run in order under the plan
//! until the first one fails; the count, the failing seed included, is that start's time to
//! find. The median and the maximum over the starts say how good the generator is at aiming
//! at the bug, independently of any one lucky start (DESIGN "Performance targets": a median of
//! at most 50).
//!
//! Every failure found must be a consequence invariant (S1, S2, S6, L1, L2 or L3): a plan is
//! caught by the damage it does. A panic or an S3, S4 or S5 failure is reported as such, so a
//! table that hides one cannot be produced.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::explore::{self, Failure, Problem};
use crate::generate::{Generator, Params};
use crate::oracle::Invariant;
use crate::plan::Plan;

/// How far apart the starting seeds are: start `k` is `k * START_STRIDE`.
pub const START_STRIDE: u64 = 1_000_003;

/// How many starting seeds the table uses by default.
pub const STARTS: u64 = 20;

/// How many seeds one start may run before it counts as not found.
pub const SEEDS_MAX: u64 = 5_000;

/// The invariants whose failure counts as finding a plan.
pub const CONSEQUENCES: [Invariant; 6] =
    [Invariant::S1, Invariant::S2, Invariant::S6, Invariant::L1, Invariant::L2, Invariant::L3];

/// One start's hunt for a plan's first failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hunt {
    /// The first seed tried.
    pub start: u64,
    /// The first failure, if one came within the limit.
    pub failure: Option<Failure>,
    /// Seeds run, the failing one included.
    pub seeds: u64,
}

impl Hunt {
    /// The invariant that failed, if it was one.
    pub fn invariant(&self) -> Option<Invariant> {
        match &self.failure.as_ref()?.problem {
            Problem::Violation(violation) => Some(violation.invariant),
            Problem::Panic(_) => None,
        }
    }

    /// Whether the failure is a consequence invariant.
    pub fn found(&self) -> bool {
        self.invariant().is_some_and(|i| CONSEQUENCES.contains(&i))
    }
}

/// Runs seeds from `start` under `plan` until one fails or `seeds_max` have run.
pub fn hunt(generator: &Generator, plan: Plan, start: u64, seeds_max: u64) -> Hunt {
    for n in 0..seeds_max {
        let seed = start.wrapping_add(n);
        let checked = explore::check_seed(generator, seed, plan, false);
        if let Some(problem) = checked.problem {
            let failure = Some(Failure { seed, problem });
            return Hunt { start, failure, seeds: n + 1 };
        }
    }
    Hunt { start, failure: None, seeds: seeds_max }
}

/// A plan's hunts from every start, in start order.
#[derive(Clone, Debug)]
pub struct TimeToFind {
    /// The plan.
    pub plan: Plan,
    /// One hunt per start.
    pub hunts: Vec<Hunt>,
}

impl TimeToFind {
    /// Seeds to the first failure per start, sorted.
    fn sorted(&self) -> Vec<u64> {
        let mut seeds: Vec<u64> = self.hunts.iter().map(|h| h.seeds).collect();
        seeds.sort_unstable();
        seeds
    }

    /// The median in half seeds (an even count averages the middle two): `2 * median`.
    pub fn median_x2(&self) -> u64 {
        let seeds = self.sorted();
        match seeds.len() {
            0 => 0,
            n if !n.is_multiple_of(2) => 2 * seeds[n / 2],
            n => seeds[n / 2 - 1] + seeds[n / 2],
        }
    }

    /// The median, written with `.5` when it falls between two counts.
    pub fn median(&self) -> String {
        let x2 = self.median_x2();
        if x2.is_multiple_of(2) { (x2 / 2).to_string() } else { format!("{}.5", x2 / 2) }
    }

    /// The largest count.
    pub fn max(&self) -> u64 {
        self.sorted().last().copied().unwrap_or(0)
    }

    /// How many starts found the plan by a consequence invariant.
    pub fn found(&self) -> usize {
        self.hunts.iter().filter(|h| h.found()).count()
    }

    /// The invariants that caught it, each with how many starts it caught, in SPEC order;
    /// `panic` and `none` for starts that panicked or found nothing.
    pub fn caught_by(&self) -> Vec<(String, usize)> {
        let mut names: Vec<(String, usize)> = Vec::new();
        for hunt in &self.hunts {
            let name = match (&hunt.failure, hunt.invariant()) {
                (_, Some(invariant)) => format!("{invariant:?}"),
                (Some(_), None) => "panic".to_owned(),
                (None, None) => "none".to_owned(),
            };
            match names.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => *count += 1,
                None => names.push((name, 1)),
            }
        }
        names.sort();
        names
    }
}

/// The starting seeds: `k * START_STRIDE` for `k` below `starts`.
pub fn starts(starts: u64) -> Vec<u64> {
    (0..starts).map(|k| k * START_STRIDE).collect()
}

/// Hunts every plan from every start on `jobs` threads; the result does not depend on `jobs`.
pub fn time_to_find(
    params: &Params,
    plans: &[Plan],
    starts: &[u64],
    seeds_max: u64,
    jobs: usize,
) -> Vec<TimeToFind> {
    let tasks: Vec<(usize, usize)> =
        (0..plans.len()).flat_map(|p| (0..starts.len()).map(move |s| (p, s))).collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Hunt>>> = Mutex::new(vec![None; tasks.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                let generator = Generator::new(params);
                while let Some(&(p, s)) = tasks.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let found = hunt(&generator, plans[p], starts[s], seeds_max);
                    let index = p * starts.len() + s;
                    results.lock().expect("no hunt panics while holding the lock")[index] =
                        Some(found);
                }
            });
        }
    });
    let mut results = results.into_inner().expect("every hunt finished").into_iter();
    plans
        .iter()
        .map(|&plan| TimeToFind {
            plan,
            hunts: (0..starts.len()).map(|_| results.next().flatten().expect("hunted")).collect(),
        })
        .collect()
}

/// The table as Markdown: one row per plan.
pub fn markdown(rows: &[TimeToFind]) -> String {
    let mut out = String::from(
        "| plan | median seeds | max seeds | found | caught by |\n|---|---|---|---|---|\n",
    );
    for row in rows {
        let caught: Vec<String> = row.caught_by().iter().map(|(n, c)| format!("{n} {c}")).collect();
        out.push_str(&format!(
            "| `{}` | {} | {} | {}/{} | {} |\n",
            row.plan.name(),
            row.median(),
            row.max(),
            row.found(),
            row.hunts.len(),
            caught.join(", ")
        ));
    }
    out
}
