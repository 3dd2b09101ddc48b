//! The daemon: a real gateway process built on the tokio shell (`quiesce serve`).
//!
//! [`Daemon`] wires the shell to the daemon's parts and decides nothing itself, like the shell:
//!
//! - [`listener`]: the [`Listener`] seam, and one task per connection that speaks the
//!   [`wire`] protocol to the gateway through a [`ShellHandle`];
//! - [`agent`]: the default [`DelayAgent`] and the [`Recording`] wrapper that notes each run
//!   request for the journal;
//! - [`journal`]: the event log, the deliveries file and the dead-letters file, written from the
//!   core's typed events;
//! - [`cli`]: the command line, the real files, sockets and signals, and the exit codes.
//!
//! Everything real comes in through a seam: the [`Clock`], the [`SignalSource`], the
//! [`StateStore`], the [`Listener`], the agent and the journal's writers. A simulated world
//! (turmoil) runs the same daemon with its own network and an in-memory store.
//!
//! # Start order
//!
//! [`Daemon::start`] spawns the shell, which restores the state file before it takes any
//! input, and waits until it has; only then does the caller bind its listener (and print its
//! readiness line) and call [`Started::serve`]. The caller installs its signal handlers before
//! anything else, so an early SIGUSR1 cannot kill the process.
//!
//! # Limitations
//!
//! A reload closes nothing: the listener and the connections belong to the process, not to a
//! generation, so channels stay connected across reloads (the [`crate::shell::NoListeners`]
//! closer). They close when the process exits after a stop. The number of connections is not
//! bounded by the daemon; the operating system's limits apply.

pub mod agent;
pub mod cli;
pub mod journal;
pub mod listener;
pub mod wire;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::Clock;
use crate::config::Config;
use crate::event::Stamped;
use crate::gateway::NoHooks;
use crate::shell::{Agent, ConfigSource, Shell, ShellExit, ShellHandle};
use crate::signal::{Origin, Signal, SignalKind, SignalSource};
use crate::store::StateStore;

pub use agent::{DelayAgent, Recording, RunBook};
pub use journal::{Journal, JournalReport, Outputs};
pub use listener::{Listener, PipeDialer, PipeListener, pipes};

/// How long the daemon waits before accepting again after `accept` failed (for instance when
/// the process is out of file descriptors), so a lasting failure does not spin.
const ACCEPT_RETRY_MS: u64 = 100;

/// A signal source that also delivers the daemon's own requests, ahead of the outer source's.
///
/// The daemon uses it to stop the gateway when it cannot serve after the state file was
/// restored (the listener could not be bound): the stop saves the restored messages again.
pub struct DaemonSignals<S> {
    outer: S,
    outer_open: bool,
    own: mpsc::UnboundedReceiver<Signal>,
}

impl<S: SignalSource> SignalSource for DaemonSignals<S> {
    /// The daemon's own requests first, then the outer source's signals; when the outer source
    /// closes, only the daemon's own.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: both awaits are (tokio's `mpsc::UnboundedReceiver::recv`, and the outer
    /// source by the trait's contract).
    async fn recv(&mut self) -> Option<Signal> {
        if self.outer_open {
            tokio::select! {
                biased;
                Some(signal) = self.own.recv() => return Some(signal),
                signal = self.outer.recv() => match signal {
                    Some(signal) => return Some(signal),
                    None => self.outer_open = false,
                },
            }
        }
        self.own.recv().await
    }
}

/// A daemon built and not started yet.
pub struct Daemon<C, S, A> {
    shell: Shell<C, DaemonSignals<S>, Recording<A>>,
    clock: C,
    journal: Journal,
    events: mpsc::UnboundedReceiver<Stamped>,
    own_signals: mpsc::UnboundedSender<Signal>,
}

impl<C, S, A> Daemon<C, S, A>
where
    C: Clock + Clone + 'static,
    S: SignalSource + 'static,
    A: Agent,
{
    /// A daemon for boot `boot` (from 1) with `config`, on these seams, writing its journal to
    /// `outputs`. `config_source` reads the config afresh on each reload.
    ///
    /// # Panics
    ///
    /// Panics when `boot` is 0.
    #[expect(clippy::too_many_arguments, reason = "one argument per seam the daemon is built on")]
    pub fn new(
        config: Config,
        boot: u32,
        clock: C,
        signals: S,
        store: impl StateStore + 'static,
        agent: A,
        config_source: impl ConfigSource,
        outputs: Outputs,
    ) -> Self {
        assert!(boot >= 1, "boots count from 1");
        let book = RunBook::default();
        let (own_signals, own) = mpsc::unbounded_channel();
        let signals = DaemonSignals { outer: signals, outer_open: true, own };
        let (events_tx, events) = mpsc::unbounded_channel();

        let agent = Recording::new(agent, book.clone());
        let shell = Shell::new(
            config,
            boot,
            Box::new(NoHooks),
            clock.clone(),
            signals,
            store,
            agent,
            config_source,
        )
        .with_events(events_tx);
        let journal = Journal::new(outputs, book);
        Self { shell, clock, journal, events, own_signals }
    }

    /// Starts the gateway and returns once it has restored the state file, before any
    /// connection is accepted.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future after the shell was spawned leaves the gateway
    /// running with no one to serve or stop it; a restored state file is already removed.
    pub async fn start(self) -> Started<C> {
        let Self { shell, clock, mut journal, mut events, own_signals } = self;
        let handle = shell.handle();
        let shell = tokio::spawn(shell.run());

        // A status is answered only after the shell has started the gateway, and the shell
        // publishes the start's events before it takes its first command.
        let _started = handle.status().await;
        journal.record_ready(&mut events);
        let restored = journal.report().restored;
        let journal = tokio::spawn(journal.run(events));

        Started { handle, shell, journal, own_signals, clock, restored }
    }
}

/// A daemon whose gateway has started: it restored the state file and takes requests through
/// its handle, but no connection is accepted yet.
pub struct Started<C> {
    handle: ShellHandle,
    shell: JoinHandle<ShellExit>,
    journal: JoinHandle<JournalReport>,
    own_signals: mpsc::UnboundedSender<Signal>,
    clock: C,
    restored: usize,
}

/// How a daemon ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    /// How the shell ended, with its exit code.
    pub exit: ShellExit,
    /// What the journal wrote.
    pub journal: JournalReport,
}

impl<C: Clock> Started<C> {
    /// How many messages the state file held when the gateway restored it.
    pub fn restored(&self) -> usize {
        self.restored
    }

    /// A handle on the gateway, as each connection has.
    pub fn handle(&self) -> ShellHandle {
        self.handle.clone()
    }

    /// Accepts connections and serves each in its own task until the gateway exits (after a
    /// stop, or the watchdog), then closes every connection and waits for the journal.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future drops the handles on the shell and journal tasks
    /// without stopping them.
    pub async fn serve<L: Listener>(self, mut listener: L) -> Served {
        let channels = listener::Channels::default();
        let mut connections = JoinSet::new();
        let mut shell = self.shell;
        let exit = loop {
            tokio::select! {
                biased;
                exit = &mut shell => break shell_exit(exit),
                Some(_ended) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok(connection) => {
                        let served = listener::serve_connection(
                            connection,
                            self.handle.clone(),
                            channels.clone(),
                        );
                        connections.spawn(served);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "accept failed; retrying");
                        let retry_ms = self.clock.now_ms().saturating_add(ACCEPT_RETRY_MS);
                        self.clock.sleep_until(retry_ms).await;
                    }
                },
            }
        };

        connections.shutdown().await;
        drop(listener);
        Served { exit, journal: journal_report(self.journal).await }
    }

    /// Stops the gateway without serving: the state it restored is saved again. For a caller
    /// that could not bind its listener.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`Started::serve`].
    pub async fn stop(self) -> Served {
        let stop = Signal { kind: SignalKind::Shutdown, origin: Origin::Internal };
        if self.own_signals.send(stop).is_err() {
            tracing::debug!("the gateway has exited already");
        }
        let exit = shell_exit(self.shell.await);
        Served { exit, journal: journal_report(self.journal).await }
    }
}

/// The shell's exit; a shell task that panicked exits with code 1.
fn shell_exit(joined: Result<ShellExit, tokio::task::JoinError>) -> ShellExit {
    joined.unwrap_or_else(|error| {
        tracing::error!(%error, "the gateway's task failed");
        ShellExit { code: 1, runs_started: 0, runs_aborted: 0, messages_saved: 0 }
    })
}

async fn journal_report(journal: JoinHandle<JournalReport>) -> JournalReport {
    journal.await.unwrap_or_else(|error| {
        tracing::error!(%error, "the journal's task failed");
        JournalReport { write_errors: 1, ..JournalReport::default() }
    })
}
