//! quiesce: restart a message gateway under live traffic without losing or reordering a
//! message.
//!
//! The decisions live in [`Gateway`], a synchronous core that takes the current virtual time
//! with each [`Input`] and returns effects and typed events; it never reads a clock, sleeps or
//! does I/O. [`shell`] runs it on tokio with an injected [`Clock`] and [`SignalSource`], and the
//! simulation crate runs the very same core on an event-jump driver.
//!
//! # Limitations
//!
//! An accepted message lives in memory until it is delivered or saved by a stop. A process
//! killed without a stop (SIGKILL, out of memory, power loss) loses what it held. A write-ahead
//! intake that would close this gap is future work.

pub mod adapter;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod debounce;
pub mod dedupe;
pub mod effect;
pub mod event;
pub mod event_log;
pub mod gateway;
pub mod handover;
pub mod message;
pub mod pipeline;
pub mod shell;
pub mod signal;
pub mod store;

pub use clock::Clock;
pub use config::Config;
pub use gateway::{Gateway, Hooks, Reply};
pub use message::{Batch, Message};
pub use shell::{Agent, Shell, ShellExit, ShellHandle};
pub use signal::{Signal, SignalKind, SignalSource};
