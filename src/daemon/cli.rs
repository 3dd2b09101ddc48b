//! `quiesce serve`: the command line, and the real files, sockets and signals behind the
//! daemon's seams.
//!
//! The start order is fixed (DESIGN "The daemon"): the signal handlers first, so an early
//! SIGUSR1 cannot kill the process; then the config, the state file's lock and the output
//! files, each of which ends the process with code 2 and a one-line error when it is bad; then
//! the gateway restores the state file; then the listener is bound and one readiness line goes
//! to stdout:
//!
//! ```text
//! ready listen=127.0.0.1:45321 boot=2 restored=17
//! ```
//!
//! Exit codes: 0 after a stop, 1 when the watchdog ended a restart or the state file could not
//! be saved, 2 for bad input at start (a flag, the config, a locked or unusable state file, an
//! output file or an address that cannot be opened).

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio::net::{TcpListener, UnixListener};

use crate::adapter::{TokioClock, UnixSignals};
use crate::config::Config;
use crate::daemon::{Daemon, DelayAgent, Outputs, Served, Started};
use crate::store::FileStore;

/// The exit code after a stop.
const EXIT_OK: u8 = 0;
/// The exit code after the watchdog, a state file that could not be saved, or a failure of
/// the process itself.
const EXIT_FAILED: u8 = 1;
/// The exit code for bad input at start.
const EXIT_BAD_INPUT: u8 = 2;

const USAGE: &str = "\
usage: quiesce serve --config FILE [options]

Runs the gateway daemon until SIGTERM or SIGINT; SIGUSR1 reloads the config file.

options:
  --config FILE            the config file (TOML; see docs/CONFIG.md); required
  --listen ADDR            listen on this TCP address (default 127.0.0.1:0; port 0 picks one)
  --unix PATH              listen on a Unix socket at PATH instead of TCP
  --state FILE             the state file (default: the config file's path + .state)
  --deliveries FILE        append one JSON line per delivered run
  --dead-letters FILE      append one JSON line per message that ends other than delivered
  --event-log FILE         append the event log, in the simulation's format
  --agent-delay-ms N       how long the built-in agent takes per run (default 0)
  --agent-fail-every N     make every Nth run of the built-in agent fail (N >= 1)
  -h, --help               print this help

stdout gets one line once the daemon is ready: `ready listen=ADDR boot=N restored=N`
(`unix=PATH` for a Unix socket). Logs go to stderr; RUST_LOG sets their level (default info).
exit codes: 0 stopped, 1 watchdog or state not saved, 2 bad input at start.";

/// Where the daemon listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address; port 0 lets the system pick one.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// The options of `quiesce serve`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// The config file, read at start and again on each reload.
    pub config: PathBuf,
    /// Where channels connect.
    pub listen: Listen,
    /// The state file.
    pub state: PathBuf,
    /// The deliveries file, if any.
    pub deliveries: Option<PathBuf>,
    /// The dead-letters file, if any.
    pub dead_letters: Option<PathBuf>,
    /// The event-log file, if any.
    pub event_log: Option<PathBuf>,
    /// How long the built-in agent takes per run.
    pub agent_delay_ms: u64,
    /// Every how many runs the built-in agent fails one, if it does.
    pub agent_fail_every: Option<NonZeroU64>,
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Print the usage.
    Help,
    /// Run the daemon.
    Serve(ServeOptions),
}

/// A command line that cannot be run; its text says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The options as they are read, before the defaults and checks.
#[derive(Default)]
struct Flags {
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    unix: Option<PathBuf>,
    state: Option<PathBuf>,
    deliveries: Option<PathBuf>,
    dead_letters: Option<PathBuf>,
    event_log: Option<PathBuf>,
    agent_delay_ms: Option<u64>,
    agent_fail_every: Option<NonZeroU64>,
}

/// Reads the arguments after the program name.
///
/// Flags take their value as the next argument or after `=` (`--listen=127.0.0.1:0`).
///
/// # Errors
///
/// A [`UsageError`] naming the unknown command or flag, the missing or bad value, or the
/// conflict.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let mut args = args.into_iter();
    match args.next().as_deref().and_then(|a| a.to_str()) {
        Some("serve") => {}
        Some("-h" | "--help") => return Ok(Command::Help),
        None => return Err(UsageError("a command is required: serve".into())),
        Some(other) => {
            return Err(UsageError(format!("unknown command {other:?}; expected serve")));
        }
    }

    let mut flags = Flags::default();
    while let Some(arg) = args.next() {
        let arg =
            arg.into_string().map_err(|a| UsageError(format!("argument {a:?} is not UTF-8")))?;
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(OsString::from(value))),
            None => (arg, None),
        };
        let value = inline.or_else(|| args.next());
        let value = value.ok_or_else(|| UsageError(format!("{name} needs a value")))?;
        flags.set(&name, value)?;
    }
    flags.finish().map(Command::Serve)
}

impl Flags {
    fn set(&mut self, name: &str, value: OsString) -> Result<(), UsageError> {
        let path = || PathBuf::from(&value);
        match name {
            "--config" => self.config = Some(path()),
            "--listen" => self.listen = Some(parse_value(name, &value)?),
            "--unix" => self.unix = Some(path()),
            "--state" => self.state = Some(path()),
            "--deliveries" => self.deliveries = Some(path()),
            "--dead-letters" => self.dead_letters = Some(path()),
            "--event-log" => self.event_log = Some(path()),
            "--agent-delay-ms" => self.agent_delay_ms = Some(parse_value(name, &value)?),
            "--agent-fail-every" => self.agent_fail_every = Some(parse_value(name, &value)?),
            _ => return Err(UsageError(format!("unknown flag {name}"))),
        }
        Ok(())
    }

    fn finish(self) -> Result<ServeOptions, UsageError> {
        let config = self.config.ok_or_else(|| UsageError("--config FILE is required".into()))?;
        let listen = match (self.listen, self.unix) {
            (Some(_), Some(_)) => {
                return Err(UsageError("give --listen or --unix, not both".into()));
            }
            (_, Some(path)) => Listen::Unix(path),
            (Some(addr), None) => Listen::Tcp(addr),
            (None, None) => Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))),
        };
        let state = self.state.unwrap_or_else(|| with_suffix(&config, "state"));
        if state.is_dir() {
            // Setting a directory aside as an unreadable state file would move the user's
            // directory; refuse it before anything is touched.
            let shown = state.display();
            return Err(UsageError(format!("--state {shown} is a directory, not a file")));
        }
        Ok(ServeOptions {
            config,
            listen,
            state,
            deliveries: self.deliveries,
            dead_letters: self.dead_letters,
            event_log: self.event_log,
            agent_delay_ms: self.agent_delay_ms.unwrap_or(0),
            agent_fail_every: self.agent_fail_every,
        })
    }
}

fn parse_value<T: std::str::FromStr>(name: &str, value: &OsString) -> Result<T, UsageError>
where
    T::Err: std::fmt::Display,
{
    let text = value.to_str().ok_or_else(|| UsageError(format!("{name}: value is not UTF-8")))?;
    text.parse().map_err(|e| UsageError(format!("{name}: {text:?} is not valid: {e}")))
}

/// `<path>.<suffix>`, beside `path`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// The `quiesce` program: parses the command line, runs the daemon and returns its exit code.
pub fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("quiesce: error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    ExitCode::from(runtime.block_on(run(std::env::args_os().skip(1))))
}

async fn run(args: impl IntoIterator<Item = OsString>) -> u8 {
    // First of all, so that a SIGUSR1 sent as soon as the process exists cannot kill it.
    let signals = match UnixSignals::install() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("quiesce: error: cannot install signal handlers: {error}");
            return EXIT_FAILED;
        }
    };
    init_logs();

    match parse(args) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            EXIT_OK
        }
        Ok(Command::Serve(options)) => serve(options, signals).await,
        Err(error) => {
            eprintln!("quiesce: error: {error}\n\n{USAGE}");
            EXIT_BAD_INPUT
        }
    }
}

fn init_logs() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let installed = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(filter)
        .with_ansi(false)
        .try_init();
    if let Err(error) = installed {
        eprintln!("quiesce: logs not set up: {error}");
    }
}

/// Prints a start error and gives the bad-input exit code.
fn bad_input(what: &str, error: &dyn std::fmt::Display) -> u8 {
    eprintln!("quiesce: error: {what}: {error}");
    EXIT_BAD_INPUT
}

async fn serve(options: ServeOptions, signals: UnixSignals) -> u8 {
    let config = match Config::from_file(&options.config) {
        Ok(config) => config,
        Err(error) => return bad_input("bad config", &error),
    };
    let store = match FileStore::open(&options.state) {
        Ok(store) => store,
        Err(error) => return bad_input("cannot use the state file", &error),
    };
    let boot = match next_boot(&options.state) {
        Ok(boot) => boot,
        Err(error) => return bad_input("cannot count boots beside the state file", &error),
    };
    let outputs = match open_outputs(&options) {
        Ok(outputs) => outputs,
        Err(error) => return bad_input("cannot open an output file", &error),
    };

    let clock = TokioClock::new();
    let mut agent = DelayAgent::new(clock, options.agent_delay_ms);
    if let Some(n) = options.agent_fail_every {
        agent = agent.failing_every(n);
    }
    let config_path = options.config.clone();
    let config_source = move || Config::from_file(&config_path);
    let daemon = Daemon::new(config, boot, clock, signals, store, agent, config_source, outputs);
    let started = daemon.start().await;

    let served = match &options.listen {
        Listen::Tcp(addr) => match TcpListener::bind(addr).await {
            Ok(listener) => {
                let bound = listener.local_addr().map_or(addr.to_string(), |a| a.to_string());
                ready(&format!("listen={bound}"), boot, &started);
                started.serve(listener).await
            }
            Err(error) => return cannot_bind(&addr.to_string(), &error, started).await,
        },
        Listen::Unix(path) => match bind_unix(path) {
            Ok(listener) => {
                ready(&format!("unix={}", path.display()), boot, &started);
                let served = started.serve(listener).await;
                remove_socket(path);
                served
            }
            Err(error) => return cannot_bind(&path.display().to_string(), &error, started).await,
        },
    };
    exit_code(&served)
}

/// Prints the one readiness line and flushes it, so a supervisor or test reading stdout sees
/// it at once.
fn ready(address: &str, boot: u32, started: &Started<TokioClock>) {
    let mut stdout = io::stdout().lock();
    let written = writeln!(stdout, "ready {address} boot={boot} restored={}", started.restored())
        .and_then(|()| stdout.flush());
    if let Err(error) = written {
        tracing::warn!(%error, "readiness line not written");
    }
    tracing::info!(address, boot, restored = started.restored(), "daemon ready");
}

/// The listener could not be bound after the state file was restored: the gateway is stopped,
/// which saves what it restored, and the process exits with the bad-input code.
async fn cannot_bind(address: &str, error: &io::Error, started: Started<TokioClock>) -> u8 {
    eprintln!("quiesce: error: cannot listen on {address}: {error}");
    let served = started.stop().await;
    tracing::info!(saved = served.exit.messages_saved, "stopped without serving");
    EXIT_BAD_INPUT
}

fn exit_code(served: &Served) -> u8 {
    let code = u8::try_from(served.exit.code).unwrap_or(EXIT_FAILED);
    if served.journal.write_errors > 0 && code == EXIT_OK {
        tracing::error!(errors = served.journal.write_errors, "journal files incomplete");
        return EXIT_FAILED;
    }
    code
}

/// Binds a Unix socket, replacing a socket file that no process listens on any more (left by
/// a process that was killed); a live socket or any other file is an error.
fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(error) if error.kind() == io::ErrorKind::AddrInUse && is_stale_socket(path) => {
            tracing::info!(path = %path.display(), "removing a stale socket file");
            fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        bound => bound,
    }
}

fn is_stale_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    is_socket && std::os::unix::net::UnixStream::connect(path).is_err()
}

fn remove_socket(path: &Path) {
    if let Err(error) = fs::remove_file(path) {
        tracing::warn!(path = %path.display(), %error, "socket file not removed");
    }
}

/// Reads the previous boot's number from `<state>.boot`, and writes this boot's.
///
/// The number only labels the event log and the status, so a missing or unreadable count
/// starts again from 1 with a warning rather than refusing to start. Called with the state
/// file's lock held, so no other daemon writes it at the same time.
fn next_boot(state: &Path) -> io::Result<u32> {
    let path = with_suffix(state, "boot");
    let previous = match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u32>().unwrap_or_else(|error| {
            let path = path.display();
            tracing::warn!(%path, %error, "boot count unreadable; counting from 1");
            0
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => 0,
        Err(error) => return Err(error),
    };
    let boot = previous.saturating_add(1);

    let tmp = with_suffix(&path, "tmp");
    fs::write(&tmp, format!("{boot}\n"))?;
    fs::rename(&tmp, &path)?;
    Ok(boot)
}

fn open_outputs(options: &ServeOptions) -> io::Result<Outputs> {
    Ok(Outputs {
        event_log: options.event_log.as_deref().map(append).transpose()?,
        deliveries: options.deliveries.as_deref().map(append).transpose()?,
        dead_letters: options.dead_letters.as_deref().map(append).transpose()?,
    })
}

/// Opens `path` for appending, creating it if needed, so a restarted daemon adds to the files
/// of the boots before it.
fn append(path: &Path) -> io::Result<Box<dyn Write + Send>> {
    let file =
        OpenOptions::new().create(true).append(true).open(path).map_err(|error| {
            io::Error::new(error.kind(), format!("{}: {error}", path.display()))
        })?;
    Ok(Box::new(BufWriter::new(file)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    fn serve_options(line: &str) -> ServeOptions {
        match parse(args(line)) {
            Ok(Command::Serve(options)) => options,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn defaults_fill_in() {
        let options = serve_options("serve --config q.toml");

        assert_eq!(options.listen, Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))));
        assert_eq!(options.state, PathBuf::from("q.toml.state"));
        assert_eq!((options.agent_delay_ms, options.agent_fail_every), (0, None));
    }

    #[test]
    fn reads_every_flag() {
        let options = serve_options(
            "serve --config=q.toml --unix /tmp/q.sock --state s --deliveries d \
             --dead-letters x --event-log e --agent-delay-ms 5 --agent-fail-every 3",
        );

        assert_eq!(options.listen, Listen::Unix(PathBuf::from("/tmp/q.sock")));
        assert_eq!(options.state, PathBuf::from("s"));
        assert_eq!(options.event_log, Some(PathBuf::from("e")));
        assert_eq!(options.agent_fail_every, NonZeroU64::new(3));
    }

    #[test]
    fn refuses_bad_command_lines() {
        let error = |line: &str| parse(args(line)).err().map(|e| e.0).unwrap_or_default();

        assert_eq!(error(""), "a command is required: serve");
        assert_eq!(error("start"), "unknown command \"start\"; expected serve");
        assert_eq!(error("serve"), "--config FILE is required");
        assert_eq!(error("serve --config q --port 1"), "unknown flag --port");
        assert_eq!(error("serve --config"), "--config needs a value");
        assert!(error("serve --config q --agent-fail-every 0").starts_with("--agent-fail-every"));
        assert!(error("serve --config q --listen localhost").starts_with("--listen"));
        assert_eq!(
            error("serve --config q --listen 127.0.0.1:0 --unix s"),
            "give --listen or --unix, not both"
        );
    }
}
