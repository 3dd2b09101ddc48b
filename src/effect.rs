//! What the core asks its driver to do, and the outbox that collects it with the events.

use crate::event::{Event, RunId, Stamped};
use crate::handover::Handover;

/// An action for the driver: the tokio shell or the simulation carries it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Start the agent on a run; report its end with `Gateway::run_finished`. The run's
    /// messages and input text are in `Gateway::run`.
    StartRun {
        /// Its number.
        run: RunId,
    },
    /// Stop a run: it timed out or the process is stopping. Its end is no longer wanted.
    CancelRun {
        /// Its number.
        run: RunId,
    },
    /// Close listeners and channels, then report `Gateway::close_finished`.
    Close,
    /// Write the handover to the state file, before exiting.
    Save(Box<Handover>),
    /// Exit the process with this code.
    Exit(i32),
}

/// Collects the effects and events of one input, stamped with when and where.
#[derive(Debug, Default)]
pub struct Outbox {
    /// The time of the input being handled.
    pub at_ms: u64,
    /// The boot being run.
    pub boot: u32,
    /// The generation being run.
    pub generation: u32,
    /// Effects, in order.
    pub effects: Vec<Effect>,
    /// Events, in order.
    pub events: Vec<Stamped>,
}

impl Outbox {
    /// Records an event.
    pub fn event(&mut self, event: Event) {
        let (at_ms, boot, generation) = (self.at_ms, self.boot, self.generation);
        self.events.push(Stamped { at_ms, boot, generation, event });
    }

    /// Asks for an effect.
    pub fn effect(&mut self, effect: Effect) {
        self.effects.push(effect);
    }
}
