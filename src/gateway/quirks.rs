//! Historical restart plans: the quirks of restart protocols the original gateway shipped or
//! proposed, so the simulation can measure how fast it finds their bugs (`docs/PLANS.md`).
//!
//! This module exists only under the cargo feature `quirks`. Production builds never enable it:
//! `cargo build -p quiesce` alone never has it; the simulation crate turns it on for its own
//! dependency on `quiesce`. Even with the feature on, a gateway runs the SPEC plan unless
//! [`Gateway::with_quirks`] gives it other quirks.
//!
//! The core calls in here through one-line hooks marked `#[cfg(feature = "quirks")]` in
//! `gateway.rs` and `pipeline.rs`; every decision a quirk makes lives in this file, which is
//! outside the mutation-testing scope because it is not production behaviour.

use crate::event::{Event, Phase, PhaseCounts};
use crate::handover::Handover;
use crate::pipeline::DrainReport;

use super::Gateway;

/// How a historical plan departs from SPEC 4.2. [`Quirks::SPEC`] departs in nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quirks {
    /// The restart's phases, in the order they run. Without [`Phase::Hold`] there is no
    /// intake: a message accepted during a restart goes through the debouncers as usual.
    /// Without [`Phase::HandOver`] an ending generation passes nothing on, neither to the next
    /// generation nor to the state file: what it still holds is wiped.
    pub phases: &'static [Phase],
    /// Phase 3 waits only when phase 2 flushed a batch; otherwise it ends at once.
    pub wait_only_if_flushed: bool,
    /// Batches the flush has to refuse because the gateway is already draining are dropped
    /// instead of joining the handover.
    pub drop_refused: bool,
    /// The wait counts only the first busy session, as if several busy queues were one, so it
    /// stops as soon as that one is idle.
    pub count_one: bool,
    /// While draining, a run that ends without success goes back to its queue due at once,
    /// with no back-off: the original drain retried a refused run in a tight loop.
    pub tight_retry: bool,
}

impl Quirks {
    /// SPEC 4.2, as production runs it.
    pub const SPEC: Quirks = Quirks {
        phases: &Phase::ALL,
        wait_only_if_flushed: false,
        drop_refused: false,
        count_one: false,
        tight_retry: false,
    };

    fn runs(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }

    fn reorders(&self) -> bool {
        self.phases != Phase::ALL
    }

    /// The back-off before a failed batch runs again; `spec_ms` is the SPEC's.
    pub(crate) fn back_off_ms(&self, draining: bool, spec_ms: u64) -> u64 {
        if self.tight_retry && draining { 0 } else { spec_ms }
    }
}

impl Default for Quirks {
    fn default() -> Self {
        Self::SPEC
    }
}

/// The quirks a gateway runs with, and how far its restart is in their phases.
#[derive(Debug, Default)]
pub(super) struct QuirkState {
    quirks: Quirks,
    /// The index of the next phase to run, in a reordered plan.
    next: usize,
    /// Batches the last flush admitted.
    flushed: usize,
}

impl QuirkState {
    /// Whether `phase` may complete after `last`; `spec` is the SPEC's answer.
    pub(super) fn in_order(&self, last: Phase, phase: Phase, spec: bool) -> bool {
        let phases = self.quirks.phases;
        if !self.quirks.reorders() {
            return spec;
        }
        let rank = |p: Phase| phases.iter().position(|q| *q == p);
        let first = phases.first() == Some(&phase);
        first || rank(last).is_none() || rank(last) < rank(phase)
    }
}

impl Gateway {
    /// Runs a historical plan instead of SPEC 4.2 (the simulation only).
    pub fn with_quirks(mut self, quirks: Quirks) -> Self {
        self.pipeline.set_quirks(quirks);
        self.quirks = QuirkState { quirks, ..QuirkState::default() };
        self
    }

    /// Whether a message accepted now goes to the intake; `held` is the SPEC's answer.
    pub(super) fn quirk_holds(&self, held: bool) -> bool {
        held && self.quirks.quirks.runs(Phase::Hold)
    }

    /// Runs a reordered plan's phases from its first; false for the SPEC order.
    pub(super) fn quirk_begin_restart(&mut self, now_ms: u64) -> bool {
        if !self.quirks.quirks.reorders() {
            return false;
        }
        self.quirks.next = 0;
        self.quirks.flushed = 0;
        self.quirk_run_phases(now_ms);
        true
    }

    /// The wait's result under the quirks; `spec` is the SPEC's.
    pub(super) fn quirk_wait(
        &self,
        now_ms: u64,
        deadline_ms: u64,
        spec: Option<DrainReport>,
    ) -> Option<DrainReport> {
        let quirks = self.quirks.quirks;
        if quirks.wait_only_if_flushed && self.quirks.flushed == 0 {
            return self.pipeline.wait_for_drain(now_ms, now_ms);
        }
        if !quirks.count_one {
            return spec;
        }
        // Everything SPEC 3.5 counts, less the runs and queued messages of every busy session
        // but the first.
        let runs = self.pipeline.runs().map(|r| &r.session);
        let queued = self.pipeline.queued().map(|m| &m.session);
        let first = runs.chain(queued).min();
        let others = |session: &&crate::message::SessionId| Some(*session) != first;
        let other_runs = self.pipeline.runs().map(|r| &r.session).filter(others).count();
        let other_queued = self.pipeline.queued().map(|m| &m.session).filter(others).count();
        let count = self.pipeline.remaining() - other_runs - other_queued;
        (count == 0 || now_ms >= deadline_ms)
            .then_some(DrainReport { drained: count == 0, remaining: count })
    }

    /// The end of the wait in a reordered plan, then its later phases; false for the SPEC
    /// order.
    pub(super) fn quirk_end_wait(&mut self, drained: bool, remaining: usize) -> bool {
        if !self.quirks.quirks.reorders() {
            return false;
        }
        if !drained {
            tracing::warn!(remaining, "drain deadline reached");
            self.out.event(Event::DrainWarning { remaining });
        }
        self.complete_phase(Phase::Wait, PhaseCounts { drained, remaining, ..Default::default() });
        self.quirks.next += 1;
        self.quirk_run_phases(self.out.at_ms);
        true
    }

    /// Runs the plan's phases from the next one until one takes time: the wait or the close.
    fn quirk_run_phases(&mut self, now_ms: u64) {
        let phases = self.quirks.quirks.phases;
        while let Some(&phase) = phases.get(self.quirks.next) {
            match phase {
                Phase::Hold => self.complete_phase(Phase::Hold, PhaseCounts::default()),
                Phase::Flush => self.quirk_flush(now_ms),
                // The restart waits from its start; `quirk_end_wait` goes on from here.
                Phase::Wait => return,
                Phase::MarkDraining => self.mark_draining(),
                Phase::HandOver => self.hand_over(),
                Phase::Close => self.close(),
            }
            self.quirks.next += 1;
        }
    }

    fn quirk_flush(&mut self, now_ms: u64) {
        let deadline_ms = self.restart.as_ref().map_or(now_ms, |r| r.deadline_ms);
        self.quirks.flushed = self.flush(now_ms, deadline_ms);
        if self.quirks.quirks.drop_refused
            && let Some(handover) = &mut self.handover
        {
            // The batches the draining pipeline refused are the handover's only pending work
            // so far: the original dropped them.
            handover.pending.clear();
        }
    }

    /// What an ending generation passes on: without a handover phase, nothing, and what it
    /// still holds is wiped.
    pub(super) fn quirk_passed_on(&mut self, handover: Handover) -> Handover {
        if self.quirks.quirks.runs(Phase::HandOver) {
            return handover;
        }
        drop(self.pipeline.take_pending(self.out.at_ms));
        drop(self.registry.take_buffers());
        self.intake.clear();
        Handover::default()
    }
}
