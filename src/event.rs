//! The typed events the core emits: what happened, in order, with ids from the input.
//!
//! The simulation's oracle checks these events instead of parsing logs, and the harness renders
//! them as the canonical event log. `tracing` output is for humans only.

use serde::{Deserialize, Serialize};

use crate::message::{ChannelId, Identity, Key, SessionId};
use crate::signal::{Origin, SignalKind};

/// A run's number, unique within a boot.
pub type RunId = u64;

/// An event with when and where it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamped {
    /// Virtual time in ms.
    pub at_ms: u64,
    /// The process lifetime, from 1.
    pub boot: u32,
    /// The generation within the boot, from 0.
    pub generation: u32,
    /// What happened.
    pub event: Event,
}

/// Why a message was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Its identity was accepted in the last 5 minutes.
    Duplicate,
    /// The intake is full; the sender should retry later.
    Busy,
    /// The gateway is stopping and has already handed over what it holds.
    Stopping,
}

/// What ended a debounce buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlushCause {
    /// The trailing window passed without a new message.
    Timer,
    /// The buffer reached its bounded wait, 5 x its first window.
    MaxWait,
    /// A message of the key that is not debounced arrived.
    Immediate,
    /// `flush_key` was called.
    FlushKey,
    /// A registry-wide flush, in a restart's phase 2.
    FlushAll,
    /// The channel disconnected or reconnected.
    Disconnect,
    /// Never buffered: the message was not debounced, or its key was beyond `keys_max`.
    Unbuffered,
}

/// Where an admitted batch went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// The session was idle: a run started with it.
    Run(RunId),
    /// The session was busy: it waits in the followup queue.
    Queued,
}

/// How an accepted message ended. The closed list of SPEC 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// A run that contained it completed successfully.
    Delivered,
    /// Its admission failed for a reason other than draining.
    Failed,
    /// Its runs failed `attempts_max` times.
    DeadLettered,
    /// Evicted from a full queue by the `old` or `summarize` policy.
    DroppedOverflow,
    /// Refused by a full queue under the `new` policy.
    RejectedOverflow,
    /// Removed by an explicit `cancel_key`.
    Cancelled,
}

impl OutcomeKind {
    /// The name used in logs and the event log.
    pub fn name(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::DeadLettered => "dead_lettered",
            Self::DroppedOverflow => "dropped_overflow",
            Self::RejectedOverflow => "rejected_overflow",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Why a message got its outcome; the oracle checks it against the scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The run that completed.
    Run(RunId),
    /// The admission error, as the admission check reported it.
    Admission(String),
    /// The number of failed runs.
    Attempts(u32),
    /// The queue's cap in messages, which was reached.
    Cap(usize),
    /// An explicit cancel of the key.
    Cancel,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// The agent completed it.
    Success,
    /// The agent reported a failure.
    Failure,
    /// It was still going after `run.timeout_ms`.
    Timeout,
    /// A stop cut it short; its batch is saved, marked interrupted.
    Interrupted,
}

/// A phase of the restart protocol (SPEC 4.2), in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// 1: new messages go to the intake.
    Hold,
    /// 2: the registry's `flush_all`.
    Flush,
    /// 3: `wait_for_drain`.
    Wait,
    /// 4: no new run starts in this generation.
    MarkDraining,
    /// 5: pending work and the intake are handed over.
    HandOver,
    /// 6: listeners and channels close.
    Close,
}

impl Phase {
    /// The phases of SPEC 4.2, in order.
    pub const ALL: [Phase; 6] = [
        Phase::Hold,
        Phase::Flush,
        Phase::Wait,
        Phase::MarkDraining,
        Phase::HandOver,
        Phase::Close,
    ];

    /// The name used in logs and the event log.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hold => "hold",
            Self::Flush => "flush",
            Self::Wait => "wait",
            Self::MarkDraining => "mark_draining",
            Self::HandOver => "hand_over",
            Self::Close => "close",
        }
    }
}

/// What a phase did, by number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseCounts {
    /// Flush: batches admitted.
    pub flushed: usize,
    /// Flush: buffers left; wait: what was still pending.
    pub remaining: usize,
    /// Flush and wait: whether it finished before the deadline.
    pub drained: bool,
    /// Hand over: messages of pending work handed over.
    pub pending: usize,
    /// Hand over: messages in the intake.
    pub intake: usize,
}

/// Why a signal changed nothing now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IgnoreReason {
    /// An external reload while `reload.allow_external` is false.
    ExternalReloadRefused,
    /// A reload during a stop.
    Stopping,
    /// A stop during a stop.
    AlreadyStopping,
}

/// One thing that happened in the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The state file of the previous boot was read; its content follows as a generation's
    /// handover.
    StateRestored {
        /// Every message in it.
        messages: Vec<Identity>,
    },
    /// A message was accepted; it is owed an outcome.
    Accepted {
        /// The message.
        message: Identity,
        /// Its key.
        key: Option<Key>,
        /// Its session.
        session: SessionId,
    },
    /// A message was refused at the door and never accepted.
    Refused {
        /// The message.
        message: Identity,
        /// Why.
        reason: Refusal,
    },
    /// A message went into its key's debounce buffer.
    Buffered {
        /// The message.
        message: Identity,
        /// The key.
        key: Key,
        /// When the buffer flushes unless more arrives.
        due_ms: u64,
    },
    /// A message went into the intake because a restart is in progress.
    Intake {
        /// The message.
        message: Identity,
    },
    /// A debounce buffer ended.
    Flushed {
        /// The key.
        key: Key,
        /// Its messages, in arrival order.
        messages: Vec<Identity>,
        /// Why it ended.
        cause: FlushCause,
    },
    /// The pipeline took a batch.
    Admitted {
        /// The session.
        session: SessionId,
        /// The batch's messages.
        messages: Vec<Identity>,
        /// Where it went.
        into: Admission,
    },
    /// Admission refused a batch because the gateway is draining; it went to the handover.
    Deferred {
        /// The batch's messages.
        messages: Vec<Identity>,
    },
    /// Admission failed for a reason other than draining; the error callback is told once.
    AdmissionFailed {
        /// The batch's messages; each ends `failed`.
        messages: Vec<Identity>,
        /// The admission error.
        error: String,
    },
    /// The error callback failed; logged, nothing else changes.
    CallbackFailed {
        /// The batch's messages.
        messages: Vec<Identity>,
        /// What the callback said.
        error: String,
    },
    /// A run started.
    RunStarted {
        /// Its number.
        run: RunId,
        /// The session.
        session: SessionId,
        /// 1 for a first try, higher for retries.
        attempt: u32,
        /// Its messages, in order.
        messages: Vec<Identity>,
        /// How many dropped messages its summary reports (0 for none).
        summarized: usize,
    },
    /// A run ended.
    RunFinished {
        /// Its number.
        run: RunId,
        /// The session.
        session: SessionId,
        /// How.
        end: RunEnd,
    },
    /// A failed run's messages went back to the head of their session's queue.
    Requeued {
        /// The run that failed.
        run: RunId,
        /// The session.
        session: SessionId,
        /// The messages, in order.
        messages: Vec<Identity>,
        /// The earliest time the retry may start.
        retry_at_ms: u64,
    },
    /// A message ended.
    Outcome {
        /// The message.
        message: Identity,
        /// How.
        kind: OutcomeKind,
        /// Why.
        cause: Cause,
    },
    /// A channel disconnected or reconnected; its debouncer was flushed and unregistered.
    ChannelClosed {
        /// The channel.
        channel: ChannelId,
    },
    /// A signal reached the run loop.
    Signal {
        /// What it asks for.
        kind: SignalKind,
        /// Who sent it.
        origin: Origin,
    },
    /// A signal was ignored (SPEC 4.1, 4.3).
    SignalIgnored {
        /// What it asked for.
        kind: SignalKind,
        /// Why it was ignored.
        reason: IgnoreReason,
    },
    /// A reload during a reload, remembered for right after it.
    SignalDeferred {
        /// What it asks for.
        kind: SignalKind,
    },
    /// A stop arrived during a reload: the restart became a stop.
    BecameStop {
        /// The new absolute deadline.
        deadline_ms: u64,
    },
    /// A restart began.
    RestartBegan {
        /// Reload or stop.
        kind: SignalKind,
        /// Its absolute deadline.
        deadline_ms: u64,
    },
    /// A restart phase completed.
    Phase {
        /// Which.
        phase: Phase,
        /// What it did.
        counts: PhaseCounts,
    },
    /// The drain deadline came with work still pending.
    DrainWarning {
        /// What was still pending (SPEC 3.5).
        remaining: usize,
    },
    /// What a generation passes on: pending work, then the intake.
    HandedOver {
        /// Messages of pending work, session by session, each in queue order.
        pending: Vec<Identity>,
        /// Queues whose pending summary of dropped messages was handed over.
        summaries: usize,
        /// Messages in the intake, in acceptance order.
        intake: Vec<Identity>,
    },
    /// A generation started: the handover's pending work is admitted first, as is, then its
    /// intake goes through the new debouncers.
    GenerationStarted {
        /// Messages of the pending work.
        pending: Vec<Identity>,
        /// Messages of the intake.
        intake: Vec<Identity>,
    },
    /// The handover was written to the state file.
    StateSaved {
        /// Every message in it.
        messages: Vec<Identity>,
    },
    /// The process exits.
    Exit {
        /// The exit code: 0 after a stop, 1 after the watchdog.
        code: i32,
    },
}
