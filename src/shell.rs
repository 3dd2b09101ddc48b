//! The tokio shell: feeds the gateway core its inputs and carries out its effects, deciding
//! nothing itself.
//!
//! [`Shell::run`] owns a [`Gateway`] and waits, in one biased `select!`, for the next input: a
//! signal, a closing that completed, a run that ended, a command from a [`ShellHandle`], or the
//! core's next deadline on the [`Clock`]. It hands the input to the core with the clock's time,
//! then carries out the effects the core asked for: a run becomes an [`Agent`] call spawned as a
//! tokio task, a cancel aborts that task, a close goes to the [`Closer`], a save writes the
//! state file through the [`StateStore`], and an exit ends the loop. Every choice (what to run,
//! when to restart, what to save) is the core's; the shell only turns futures into inputs and
//! effects into futures, so the simulation's event-jump driver and this shell run the same
//! decisions.
//!
//! # Order of the branches
//!
//! The `select!` is biased, so two inputs ready at once are always taken in this order:
//!
//! 1. signals, so a stop never waits behind a flood of offers;
//! 2. a completed closing, then ended runs: they finish work already under way;
//! 3. commands from handles (offers, disconnects, internal reloads, status);
//! 4. the core's deadline. It may come last without starving: the core fires every timer due
//!    at an input's time before it handles the input, whichever input that is.
//!
//! # Cancel safety of the branches
//!
//! Each turn of the loop builds the branch futures afresh and drops the ones that lost, so each
//! must lose nothing when dropped:
//!
//! - signals: [`SignalSource::recv`] is cancel safe by contract;
//! - closing: the branch polls the boxed closing future by reference, so dropping the branch
//!   leaves the closing where it was, and the next turn polls it again;
//! - ended runs: `JoinSet::join_next_with_id` is cancel safe: an ended task's result stays in
//!   the set until it is taken;
//! - commands: tokio's `mpsc::Receiver::recv` is cancel safe;
//! - deadline: [`Clock::sleep_until`] is cancel safe, and the deadline is read from the core
//!   again on every turn.
//!
//! # What is lost if `run` is dropped
//!
//! Dropping the future of [`Shell::run`] before it returns drops the gateway with everything it
//! holds in memory: debounce buffers, followup queues, the intake and a handover in progress.
//! Those messages were accepted and are lost, as when the process is killed without a stop
//! (SPEC 4.6). Runs in progress are aborted with their tasks and their end is never reported.
//! A state file restored at the start was already removed, so its messages are lost too. A
//! save is never cut in half: it is a synchronous call between two awaits. Offers not yet
//! answered are answered `Stopping`: they were never accepted.
//!
//! # Limitations
//!
//! An accepted message lives in memory until it is delivered or saved by a stop, so a process
//! killed without a stop (SIGKILL, out of memory, power loss) loses what it held; a write-ahead
//! intake is future work. [`ConfigSource::read`] and [`Agent::run`] are called on the loop's
//! task and must not block: the first reads a small file, the second only builds a future.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt;
use std::pin::Pin;

use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, Id as TaskId, JoinError, JoinSet};

use crate::clock::Clock;
use crate::config::Config;
use crate::effect::Effect;
use crate::event::{Refusal, RunId, Stamped};
use crate::gateway::{Gateway, Hooks, Reply, Status};
use crate::handover::{self, DecodeError, Handover};
use crate::message::{ChannelId, Message, SessionId};
use crate::pipeline::Run;
use crate::signal::{Origin, Signal, SignalKind, SignalSource};
use crate::store::StateStore;

/// How many commands may wait for the run loop before a handle's send waits for room.
///
/// Each command's sender also waits for its answer, so the queue never holds more commands
/// than there are callers; the bound only keeps a burst of callers from growing it unchecked.
const COMMANDS_MAX: usize = 256;

/// What the agent is asked to do: one run of one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRequest {
    /// The run's number, unique within a boot.
    pub run: RunId,
    /// The session the run belongs to.
    pub session: SessionId,
    /// 1 for a first try, higher for retries.
    pub attempt: u32,
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// The agent's input text, as the core composed it (SPEC 3.4).
    pub text: String,
}

impl RunRequest {
    /// The request for a run the core started.
    fn of(run: &Run) -> Self {
        Self {
            run: run.id,
            session: run.session.clone(),
            attempt: run.attempt,
            messages: run.messages().cloned().collect(),
            text: run.text(),
        }
    }
}

/// Runs one agent turn.
///
/// The shell spawns the returned future as a tokio task and reports its output to the core:
/// `true` delivers the run's messages, `false` is a failure that the core retries or
/// dead-letters. A panic counts as a failure. When the core cancels the run (a timeout, or a
/// stop), the shell aborts the task: the future is dropped at its next await and its end is
/// ignored, so an agent must not treat reaching an await as having delivered anything.
///
/// Any `FnMut(RunRequest) -> impl Future<Output = bool>` is an agent.
pub trait Agent: Send + 'static {
    /// Starts a run. Called on the run loop's task: build the future and return, do the work
    /// inside it.
    fn run(&mut self, request: RunRequest) -> impl Future<Output = bool> + Send + 'static;
}

impl<F, Fut> Agent for F
where
    F: FnMut(RunRequest) -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    fn run(&mut self, request: RunRequest) -> impl Future<Output = bool> + Send + 'static {
        self(request)
    }
}

/// Why a config could not be read afresh.
pub type ConfigReadError = Box<dyn Error + Send + Sync>;

/// Reads the config afresh when a reload begins (SPEC 4.1).
///
/// An error keeps the current config: the shell logs it and the reload goes on with what the
/// gateway already has. Any `FnMut() -> Result<Config, E>` whose error converts into a
/// [`ConfigReadError`] (a `String`, any `std::error::Error`) is a config source.
pub trait ConfigSource: Send + 'static {
    /// The config as it is now, or why it cannot be had.
    ///
    /// # Errors
    ///
    /// Whatever kept the config from being read or validated; the reload keeps the current
    /// config.
    fn read(&mut self) -> Result<Config, ConfigReadError>;
}

impl<F, E> ConfigSource for F
where
    F: FnMut() -> Result<Config, E> + Send + 'static,
    E: Into<ConfigReadError>,
{
    fn read(&mut self) -> Result<Config, ConfigReadError> {
        self().map_err(Into::into)
    }
}

/// A closing of listeners and channels under way; it completes once they are closed.
pub type Closing = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Closes the listeners and channels in phase 6 of a restart (`Effect::Close`).
///
/// The shell reports `close_finished` to the core when the returned future completes. The core
/// stops waiting after `close_budget_ms` whatever happens; a closing that is still under way
/// when the next one is asked for is dropped in favour of the new one, so an old closing can
/// never end a later restart's close early.
pub trait Closer: Send + 'static {
    /// Starts closing; the future completes when everything is closed.
    fn close(&mut self) -> Closing;
}

/// The closer of a shell that owns no listeners or channels: closing is done at once.
///
/// The shell's default; the daemon plugs in its own with [`Shell::with_closer`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NoListeners;

impl Closer for NoListeners {
    fn close(&mut self) -> Closing {
        Box::pin(std::future::ready(()))
    }
}

/// How [`Shell::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShellExit {
    /// The process exit code: the core's (0 after a stop, 1 after the watchdog), or 1 when
    /// the state file could not be saved.
    pub code: i32,
    /// Runs spawned over the boot.
    pub runs_started: u64,
    /// Runs aborted: cancelled by the core, or still in progress at the exit.
    pub runs_aborted: u64,
    /// Messages in the last state file saved; 0 if none was saved.
    pub messages_saved: usize,
}

/// A request from a [`ShellHandle`] to the run loop, with where its answer goes.
enum Command {
    Offer(Message, oneshot::Sender<Reply>),
    Disconnected(ChannelId, oneshot::Sender<()>),
    Reload(oneshot::Sender<()>),
    Status(oneshot::Sender<Status>),
}

/// The outside world's way into a running shell: listeners offer messages through it, a
/// control socket asks for status or a reload. Cheap to clone; every clone reaches the same
/// shell.
///
/// Every method waits until the run loop has handled the request, so requests from one caller
/// reach the core in the order they were made.
#[derive(Clone)]
pub struct ShellHandle {
    commands: mpsc::Sender<Command>,
}

impl fmt::Debug for ShellHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShellHandle").field("closed", &self.commands.is_closed()).finish()
    }
}

impl ShellHandle {
    /// Offers a message for acceptance and returns the core's reply; `Stopping` once the shell
    /// has exited.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe. Dropped before the request was sent, the message was never offered.
    /// Dropped after, the core may still accept it and the reply is lost: the sender does not
    /// learn that the gateway took responsibility, and if it offers the message again, dedupe
    /// refuses the copy as a duplicate (SPEC 5.2).
    pub async fn offer(&self, message: Message) -> Reply {
        let reply = self.ask(|answer| Command::Offer(message, answer)).await;
        reply.unwrap_or(Reply::Refused(Refusal::Stopping))
    }

    /// Tells the core that a channel's last connection closed, so its debouncer is flushed and
    /// unregistered (SPEC 2.5). Returns false if the shell has exited.
    ///
    /// # Cancel safety
    ///
    /// Dropped before the request was sent, the core never hears of the disconnect: the
    /// channel's buffers then flush on their timers instead, so nothing is lost, only later.
    /// Dropped after, the disconnect is handled all the same.
    pub async fn channel_disconnected(&self, channel: ChannelId) -> bool {
        self.ask(|answer| Command::Disconnected(channel, answer)).await.is_some()
    }

    /// Asks for an internal reload, as after a config change on the control socket; the
    /// config is read afresh. Returns false if the shell has exited.
    ///
    /// # Cancel safety
    ///
    /// Dropped before the request was sent, no reload happens; dropped after, it happens all
    /// the same. No message is involved either way.
    pub async fn reload(&self) -> bool {
        self.ask(Command::Reload).await.is_some()
    }

    /// What the gateway holds, by number; `None` once the shell has exited.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a status changes nothing, and a dropped request is simply not answered.
    pub async fn status(&self) -> Option<Status> {
        self.ask(Command::Status).await
    }

    /// Sends a command and waits for its answer; `None` if the run loop is gone.
    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (answer, answered) = oneshot::channel();
        self.commands.send(command(answer)).await.ok()?;
        answered.await.ok()
    }
}

/// The agent tasks of the runs in progress.
///
/// A run's task is looked up by its tokio task id when it ends, because a panicked task
/// returns no value to name its run by.
#[derive(Default)]
struct Runs {
    tasks: JoinSet<bool>,
    /// The run of every task not yet taken from `tasks`, aborted ones included.
    by_task: BTreeMap<TaskId, RunId>,
    /// Runs whose end the core still wants.
    live: BTreeMap<RunId, AbortHandle>,
    started: u64,
    aborted: u64,
}

impl Runs {
    fn spawn(&mut self, run: RunId, agent_turn: impl Future<Output = bool> + Send + 'static) {
        let abort = self.tasks.spawn(agent_turn);
        self.by_task.insert(abort.id(), run);
        self.live.insert(run, abort);
        self.started += 1;
    }

    /// Aborts a run's task; its end will be ignored.
    fn abort(&mut self, run: RunId) {
        let Some(abort) = self.live.remove(&run) else { return };
        abort.abort();
        self.aborted += 1;
    }

    fn abort_all(&mut self) {
        let runs: Vec<RunId> = self.live.keys().copied().collect();
        runs.into_iter().for_each(|run| self.abort(run));
    }

    /// Whether tasks are left to take, aborted ones included.
    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Waits for the next task to end: `Some((run, success))` for a run whose end the core
    /// wants, `None` for one it no longer does (aborted, or ended as it was being aborted).
    ///
    /// Cancel safe: the one await is `join_next_with_id`, which is.
    async fn next_end(&mut self) -> Option<(RunId, bool)> {
        let ended = self.tasks.join_next_with_id().await?;
        let (task, success) = match ended {
            Ok((task, success)) => (task, success),
            Err(error) => {
                log_panic(&error);
                (error.id(), false)
            }
        };
        let run = self.by_task.remove(&task)?;
        self.live.remove(&run)?;
        Some((run, success))
    }
}

/// Logs a task that panicked; its run counts as failed. The other way a task fails is a
/// cancellation, which is only ever an abort the shell asked for, whose end is ignored anyway.
fn log_panic(error: &JoinError) {
    if error.is_panic() {
        tracing::error!(task = %error.id(), "agent panicked; the run counts as failed");
    }
}

/// One input for the core, as the run loop received it.
enum Input {
    Signal(Option<Signal>),
    ClosingDone,
    RunEnded(Option<(RunId, bool)>),
    Command(Option<Command>),
    Deadline,
}

/// The tokio shell around one boot's [`Gateway`]. Build it, take [`ShellHandle`]s, then
/// [`Shell::run`] it.
pub struct Shell<C, S, A> {
    gateway: Gateway,
    clock: C,
    signals: S,
    /// False once the signal source said it is closed: it is no longer polled.
    signals_open: bool,
    store: Box<dyn StateStore>,
    agent: A,
    config_source: Box<dyn ConfigSource>,
    closer: Box<dyn Closer>,
    closing: Option<Closing>,
    runs: Runs,
    commands: mpsc::Receiver<Command>,
    /// Kept so the command channel never closes: the loop always has an input to wait for,
    /// even when every handle is gone and the signal source is closed.
    commands_tx: mpsc::Sender<Command>,
    events: Option<mpsc::UnboundedSender<Stamped>>,
    save_failed: bool,
    messages_saved: usize,
}

impl<C, S, A> fmt::Debug for Shell<C, S, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shell").field("gateway", &self.gateway).finish_non_exhaustive()
    }
}

impl<C: Clock, S: SignalSource, A: Agent> Shell<C, S, A> {
    /// A shell for boot `boot` (from 1) of a gateway with `config` and `hooks`, on these seams.
    ///
    /// It closes nothing of its own ([`NoListeners`]) and publishes no events until told
    /// otherwise with [`Shell::with_closer`] and [`Shell::with_events`].
    #[expect(clippy::too_many_arguments, reason = "one argument per seam the shell is built on")]
    pub fn new(
        config: Config,
        boot: u32,
        hooks: Box<dyn Hooks>,
        clock: C,
        signals: S,
        store: impl StateStore + 'static,
        agent: A,
        config_source: impl ConfigSource,
    ) -> Self {
        let (commands_tx, commands) = mpsc::channel(COMMANDS_MAX);
        Self {
            gateway: Gateway::new(config, boot, hooks),
            clock,
            signals,
            signals_open: true,
            store: Box::new(store),
            agent,
            config_source: Box::new(config_source),
            closer: Box::new(NoListeners),
            closing: None,
            runs: Runs::default(),
            commands,
            commands_tx,
            events: None,
            save_failed: false,
            messages_saved: 0,
        }
    }

    /// Closes listeners and channels with `closer` in phase 6 of a restart.
    pub fn with_closer(mut self, closer: impl Closer) -> Self {
        self.closer = Box::new(closer);
        self
    }

    /// Sends every event the core records to `events`, in order, for an event log.
    ///
    /// Unbounded, so a slow log writer never holds up the gateway; it holds up memory instead.
    pub fn with_events(mut self, events: mpsc::UnboundedSender<Stamped>) -> Self {
        self.events = Some(events);
        self
    }

    /// A handle on this shell, for listeners and the control socket.
    pub fn handle(&self) -> ShellHandle {
        ShellHandle { commands: self.commands_tx.clone() }
    }

    /// Restores the state file, starts the gateway, then feeds it inputs and carries out its
    /// effects until it exits.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future mid-way loses every accepted message the gateway
    /// holds in memory and aborts the runs in progress; see the module docs.
    pub async fn run(mut self) -> ShellExit {
        self.start();
        loop {
            if let Some(code) = self.carry_out() {
                return self.exit(code);
            }
            let input = self.next_input().await;
            self.take_input(input);
        }
    }

    /// Restores the state file if there is a good one and starts generation 0 with it.
    fn start(&mut self) {
        let restored = self.restore();
        let was_restored = restored.is_some();
        self.gateway.start(self.clock.now_ms(), restored);

        if was_restored {
            self.remove_state_file();
        }
    }

    /// Reads the state file. A corrupt, unknown-version or unreadable file is set aside, and
    /// the gateway starts empty: nothing but that file's content is lost, and that is kept
    /// for a person to inspect.
    fn restore(&mut self) -> Option<Handover> {
        let bytes = match self.store.load() {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(error) => {
                self.set_aside("unreadable", &error);
                return None;
            }
        };

        match handover::decode(&bytes) {
            Ok(handover) => Some(handover),
            Err(error) => {
                let why = match error {
                    DecodeError::Corrupt(_) => "corrupt",
                    DecodeError::UnknownVersion(_) => "unknown-version",
                };
                self.set_aside(why, &error);
                None
            }
        }
    }

    fn set_aside(&mut self, why: &str, error: &dyn fmt::Display) {
        match self.store.set_aside(why) {
            Ok(aside) => tracing::error!(%error, aside, "state file set aside; starting empty"),
            Err(aside_error) => {
                tracing::error!(%error, %aside_error, "state file unreadable and not set aside");
            }
        }
    }

    /// Removes the restored state file, so it is restored once. If that fails, the file stays
    /// until the next stop overwrites it; a crash before then restores it again, which repeats
    /// deliveries rather than losing messages.
    fn remove_state_file(&mut self) {
        if let Err(error) = self.store.remove() {
            tracing::error!(%error, "restored state file not removed");
        }
    }

    /// Waits for the next input; see the module docs for the order and cancel safety.
    async fn next_input(&mut self) -> Input {
        let deadline_ms = self.gateway.next_deadline();
        let wake_ms = deadline_ms.unwrap_or(u64::MAX);
        tokio::select! {
            biased;
            signal = self.signals.recv(), if self.signals_open => Input::Signal(signal),
            () = closed(&mut self.closing), if self.closing.is_some() => Input::ClosingDone,
            ended = self.runs.next_end(), if !self.runs.is_empty() => Input::RunEnded(ended),
            command = self.commands.recv() => Input::Command(command),
            () = self.clock.sleep_until(wake_ms), if deadline_ms.is_some() => Input::Deadline,
        }
    }

    /// Hands one input to the core.
    fn take_input(&mut self, input: Input) {
        let now_ms = self.clock.now_ms();
        match input {
            Input::Signal(Some(signal)) => self.signal(signal),
            Input::Signal(None) => {
                tracing::debug!("signal source closed");
                self.signals_open = false;
            }
            Input::ClosingDone => {
                self.closing = None;
                self.gateway.close_finished(now_ms);
            }
            Input::RunEnded(Some((run, success))) => {
                self.gateway.run_finished(now_ms, run, success)
            }
            Input::RunEnded(None) => {}
            Input::Command(Some(command)) => self.command(command),
            Input::Command(None) => {}
            Input::Deadline => self.gateway.tick(now_ms),
        }
    }

    fn command(&mut self, command: Command) {
        let now_ms = self.clock.now_ms();
        // A caller that went away no longer wants its answer; what the core did stands.
        match command {
            Command::Offer(message, answer) => {
                let _gone = answer.send(self.gateway.accept(now_ms, message));
            }
            Command::Disconnected(channel, answer) => {
                self.gateway.channel_disconnected(now_ms, &channel);
                let _gone = answer.send(());
            }
            Command::Reload(answer) => {
                self.signal(Signal { kind: SignalKind::Reload, origin: Origin::Internal });
                let _gone = answer.send(());
            }
            Command::Status(answer) => {
                let _gone = answer.send(self.gateway.status());
            }
        }
    }

    /// Hands a signal to the core, with the config read afresh for a reload.
    ///
    /// The config is read for every reload, even one the core will refuse or defer: whether
    /// it is honoured is the core's decision.
    fn signal(&mut self, signal: Signal) {
        let next_config = match signal.kind {
            SignalKind::Reload => self.read_config(),
            SignalKind::Shutdown => None,
        };
        self.gateway.signal(self.clock.now_ms(), signal, next_config);
    }

    fn read_config(&mut self) -> Option<Config> {
        match self.config_source.read() {
            Ok(config) => Some(config),
            Err(error) => {
                tracing::error!(%error, "config not read; the reload keeps the current config");
                None
            }
        }
    }

    /// Publishes the core's events and carries out its effects, in order. Returns the exit
    /// code once the core asked to exit.
    fn carry_out(&mut self) -> Option<i32> {
        self.publish_events();
        let mut exit = None;
        for effect in self.gateway.take_effects() {
            match effect {
                Effect::StartRun { run } => self.start_run(run),
                Effect::CancelRun { run } => self.runs.abort(run),
                Effect::Close => self.closing = Some(self.closer.close()),
                Effect::Save(handover) => self.save(&handover),
                Effect::Exit(code) => exit = Some(code),
            }
        }
        exit
    }

    fn publish_events(&mut self) {
        let events = self.gateway.take_events();
        let Some(sender) = &self.events else { return };
        for event in events {
            if sender.send(event).is_err() {
                tracing::debug!("event receiver gone; events are no longer published");
                self.events = None;
                return;
            }
        }
    }

    fn start_run(&mut self, run: RunId) {
        // A run can end within the input that started it (a stop interrupts every run).
        let Some(request) = self.gateway.run(run).map(RunRequest::of) else {
            tracing::debug!(run, "run ended before its agent started");
            return;
        };
        let agent_turn = self.agent.run(request);
        self.runs.spawn(run, agent_turn);
    }

    fn save(&mut self, handover: &Handover) {
        let messages = handover.messages().count();
        match self.store.save(&handover::encode(handover)) {
            Ok(()) => {
                tracing::info!(messages, "state file saved");
                self.messages_saved = messages;
            }
            Err(error) => {
                tracing::error!(%error, messages, "state file not saved; exiting with code 1");
                self.save_failed = true;
            }
        }
    }

    /// Aborts the runs still in progress (the core saved them, marked interrupted) and ends.
    fn exit(mut self, code: i32) -> ShellExit {
        self.runs.abort_all();
        let code = if self.save_failed && code == 0 { 1 } else { code };
        tracing::info!(code, "shell exited");
        ShellExit {
            code,
            runs_started: self.runs.started,
            runs_aborted: self.runs.aborted,
            messages_saved: self.messages_saved,
        }
    }
}

/// Completes when the closing under way completes; never if there is none.
///
/// Polls the closing by reference, so dropping this future leaves the closing intact.
async fn closed(closing: &mut Option<Closing>) {
    match closing {
        Some(closing) => closing.as_mut().await,
        None => std::future::pending().await,
    }
}
