//! Signals that restart or stop the gateway, and where they come from.

use serde::{Deserialize, Serialize};

/// What a signal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalKind {
    /// Restart into a new generation with the config read afresh (SIGUSR1).
    Reload,
    /// Drain, save the handover to the state file and exit (SIGTERM, SIGINT).
    Shutdown,
}

/// Who sent a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The operating system: another process sent it.
    External,
    /// The gateway asked for it itself, for instance after a config change.
    Internal,
}

/// One signal delivered to the run loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// What it asks for.
    pub kind: SignalKind,
    /// Who sent it.
    pub origin: Origin,
}
