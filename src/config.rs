//! The one typed config schema (SPEC 5.1), shared by the daemon, scenario files and the library.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::message::{ChannelId, SessionId};

/// Everything the gateway can be configured with. `Default` gives the SPEC defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The inbound debouncers.
    pub inbound: InboundConfig,
    /// The followup queues.
    pub queue: QueueConfig,
    /// Agent runs.
    pub run: RunConfig,
    /// Restarts on SIGUSR1 or on the gateway's own request.
    pub reload: ReloadConfig,
    /// Stops on SIGTERM or SIGINT.
    pub stop: StopConfig,
    /// How long closing listeners and channels may take, in phase 6 of a restart.
    pub close_budget_ms: u64,
    /// How many messages the intake holds during a restart before replying "busy".
    pub intake_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            inbound: InboundConfig::default(),
            queue: QueueConfig::default(),
            run: RunConfig::default(),
            reload: ReloadConfig::default(),
            stop: StopConfig::default(),
            close_budget_ms: 5_000,
            intake_max: 10_000,
        }
    }
}

/// The inbound debouncers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboundConfig {
    /// The default debounce window; 0 turns debouncing off.
    pub window_ms: u64,
    /// How many keys one debouncer buffers at once; a new key beyond it is admitted at once.
    pub keys_max: usize,
    /// Per-channel settings.
    pub channels: BTreeMap<ChannelId, ChannelInbound>,
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self { window_ms: 0, keys_max: 2_048, channels: BTreeMap::new() }
    }
}

/// One channel's inbound settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelInbound {
    /// The channel's default window, over `inbound.window_ms`.
    pub window_ms: Option<u64>,
}

/// How queued batches of one destination are run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueMode {
    /// All queued batches with the head's destination run together as one run.
    #[default]
    Collect,
    /// One run per queued batch.
    Followup,
}

/// What a full queue does with one more batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DropPolicy {
    /// Refuse the new batch: `rejected_overflow`.
    New,
    /// Append, then drop the oldest messages: `dropped_overflow`.
    Old,
    /// As `Old`, and keep a summary of what was dropped for the next run.
    #[default]
    Summarize,
}

/// Queue settings that a session or channel can override.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueOverride {
    /// Overrides `queue.mode`.
    pub mode: Option<QueueMode>,
    /// Overrides `queue.cap`.
    pub cap: Option<usize>,
    /// Overrides `queue.drop`.
    pub drop: Option<DropPolicy>,
    /// Overrides `queue.quiet_ms`.
    pub quiet_ms: Option<u64>,
}

/// The followup queues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// How queued batches run.
    pub mode: QueueMode,
    /// How many messages a queue holds.
    pub cap: usize,
    /// What a full queue does.
    pub drop: DropPolicy,
    /// How long the drain waits after the last append before a run.
    pub quiet_ms: u64,
    /// Per-channel overrides, below per-session ones.
    pub channels: BTreeMap<ChannelId, QueueOverride>,
    /// Per-session overrides, the strongest.
    pub sessions: BTreeMap<SessionId, QueueOverride>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            mode: QueueMode::Collect,
            cap: 20,
            drop: DropPolicy::Summarize,
            quiet_ms: 500,
            channels: BTreeMap::new(),
            sessions: BTreeMap::new(),
        }
    }
}

/// The settings one queue runs with, after precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSettings {
    /// How queued batches run.
    pub mode: QueueMode,
    /// How many messages the queue holds.
    pub cap: usize,
    /// What a full queue does.
    pub drop: DropPolicy,
    /// How long the drain waits after the last append.
    pub quiet_ms: u64,
}

/// Agent runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// A run not finished after this long counts as failed.
    pub timeout_ms: u64,
    /// After this many failed runs a batch is dead-lettered.
    pub attempts_max: u32,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self { timeout_ms: 600_000, attempts_max: 5 }
    }
}

/// Reloads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadConfig {
    /// Whether an external SIGUSR1 is honoured.
    pub allow_external: bool,
    /// The absolute deadline of a reload, from the signal.
    pub deadline_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self { allow_external: true, deadline_ms: 90_000 }
    }
}

/// Stops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StopConfig {
    /// The absolute deadline of a stop, from the signal.
    pub deadline_ms: u64,
}

impl Default for StopConfig {
    fn default() -> Self {
        Self { deadline_ms: 25_000 }
    }
}

impl Config {
    /// The default window of a channel's debouncer: the channel's own, else the global one.
    pub fn window_ms(&self, channel: &ChannelId) -> u64 {
        let own = self.inbound.channels.get(channel).and_then(|c| c.window_ms);
        own.unwrap_or(self.inbound.window_ms)
    }

    /// The queue settings of a session, first fed from `channel`: per session, then per
    /// channel, then global.
    pub fn queue_settings(&self, session: &SessionId, channel: &ChannelId) -> QueueSettings {
        let layers = [self.queue.sessions.get(session), self.queue.channels.get(channel)];
        let global = &self.queue;
        QueueSettings {
            mode: layered(layers, |o| o.mode).unwrap_or(global.mode),
            cap: layered(layers, |o| o.cap).unwrap_or(global.cap),
            drop: layered(layers, |o| o.drop).unwrap_or(global.drop),
            quiet_ms: layered(layers, |o| o.quiet_ms).unwrap_or(global.quiet_ms),
        }
    }
}

/// The first override layer, strongest first, that sets a field.
fn layered<T>(
    layers: [Option<&QueueOverride>; 2],
    field: impl Fn(&QueueOverride) -> Option<T>,
) -> Option<T> {
    layers.into_iter().flatten().find_map(field)
}
