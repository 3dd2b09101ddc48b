//! Restart plans: SPEC 4.2, which production runs, and the historical plans the original
//! gateway shipped or proposed, each with a known way of losing or mistreating messages.
//!
//! A plan is a name for a set of the core's [`Quirks`]. The simulation runs a historical plan to
//! prove that it finds the plan's bug, and how fast (`docs/PLANS.md`); the oracle checks S3
//! against the plan's own phase order, so what finds a plan is the damage it does: a consequence
//! invariant (S1, S2, S6, L1, L2 or L3), never the order itself.

use std::str::FromStr;

use quiesce::event::Phase;
use quiesce::gateway::quirks::Quirks;

/// A restart plan the core runs under.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Plan {
    /// SPEC section 4, as the production core implements it.
    #[default]
    Spec,
    /// The original bug: no flush and no wait; buffers and queues are wiped by the restart.
    NoDrain,
    /// Flush, wait only when something was flushed, mark draining; no intake and no handover.
    FlushIfBuffered,
    /// Mark draining before the flush: the flushed batches are refused and dropped.
    DrainingFirst,
    /// The wait counts several busy queues as one and stops early.
    CountOne,
    /// A run refused while draining is retried at once, with no back-off.
    TightRetry,
}

/// The phases of a plan without the flush, the wait, the intake or the handover.
const NO_DRAIN: &[Phase] = &[Phase::MarkDraining, Phase::Close];
/// The phases of a plan that flushes and waits but has no intake and no handover.
const FLUSH_WAIT_MARK: &[Phase] = &[Phase::Flush, Phase::Wait, Phase::MarkDraining, Phase::Close];
/// The SPEC's phases with draining marked before the flush.
const DRAINING_FIRST: &[Phase] =
    &[Phase::Hold, Phase::MarkDraining, Phase::Flush, Phase::Wait, Phase::HandOver, Phase::Close];

impl Plan {
    /// Every plan, the SPEC's first.
    pub const ALL: [Plan; 6] = [
        Plan::Spec,
        Plan::NoDrain,
        Plan::FlushIfBuffered,
        Plan::DrainingFirst,
        Plan::CountOne,
        Plan::TightRetry,
    ];

    /// The historical plans, each with a known bug.
    pub const HISTORICAL: [Plan; 5] = [
        Plan::NoDrain,
        Plan::FlushIfBuffered,
        Plan::DrainingFirst,
        Plan::CountOne,
        Plan::TightRetry,
    ];

    /// The plan's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Spec => "spec",
            Self::NoDrain => "no-drain",
            Self::FlushIfBuffered => "flush-if-buffered",
            Self::DrainingFirst => "draining-first",
            Self::CountOne => "count-one",
            Self::TightRetry => "tight-retry",
        }
    }

    /// What the plan does, in one sentence.
    pub fn about(self) -> &'static str {
        match self {
            Self::Spec => "SPEC 4.2: hold, flush, wait, mark draining, hand over, close.",
            Self::NoDrain => {
                "no flush and no wait, no intake and no handover: a restart wipes the debounce \
                 buffers and the followup queues (the original bug)."
            }
            Self::FlushIfBuffered => {
                "flush, wait only when something was flushed, mark draining; no intake and no \
                 handover, so messages arriving after the flush and work left at the deadline \
                 are lost."
            }
            Self::DrainingFirst => {
                "mark draining before the flush: the draining pipeline refuses the flushed \
                 batches and they are dropped, as the original did."
            }
            Self::CountOne => {
                "the wait counts several busy queues as one: it stops once the first busy \
                 session is idle and reports only that session's work."
            }
            Self::TightRetry => {
                "a run refused while draining is retried at once: a run that ends without \
                 success after phase 4 goes back to its queue with no back-off."
            }
        }
    }

    /// The core's quirks that make this plan.
    pub fn quirks(self) -> Quirks {
        let spec = Quirks::SPEC;
        match self {
            Self::Spec => spec,
            Self::NoDrain => Quirks { phases: NO_DRAIN, ..spec },
            Self::FlushIfBuffered => {
                Quirks { phases: FLUSH_WAIT_MARK, wait_only_if_flushed: true, ..spec }
            }
            Self::DrainingFirst => Quirks { phases: DRAINING_FIRST, drop_refused: true, ..spec },
            Self::CountOne => Quirks { count_one: true, ..spec },
            Self::TightRetry => Quirks { tight_retry: true, ..spec },
        }
    }

    /// The restart's phases, in the order this plan runs them.
    pub fn phases(self) -> &'static [Phase] {
        self.quirks().phases
    }
}

impl FromStr for Plan {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        let known = Self::ALL.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ");
        let plan = Self::ALL.into_iter().find(|p| p.name() == name);
        plan.ok_or_else(|| format!("unknown plan `{name}` (known plans: {known})"))
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
