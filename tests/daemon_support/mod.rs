//! Driving the real `quiesce` binary from tests: start it, read its readiness line, talk to it
//! over loopback, signal it, and wait for it with a bound.
//!
//! Every wait is bounded by the wall clock, so a daemon that hangs fails the test instead of
//! hanging it; a daemon still running when its [`Process`] is dropped is killed. Only loopback
//! addresses and files inside the test's temporary directory are used.

// These tests drive a real process on real time: their waits are bounded with the wall clock
// and their pauses are real sleeps. The production code's ban on both does not apply here.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
#![allow(dead_code, reason = "each test crate uses a part of the helpers")]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a daemon may take to print its readiness line.
pub const READY_WAIT: Duration = Duration::from_secs(20);

/// How long a stopped daemon may take to exit.
pub const EXIT_WAIT: Duration = Duration::from_secs(20);

/// The daemon binary cargo built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_quiesce")
}

/// Sleeps on the wall clock.
pub fn pause_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// The wall clock, for bounding waits.
pub fn now() -> Instant {
    Instant::now()
}

/// What the readiness line said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The TCP address, for a daemon listening on TCP.
    pub addr: Option<SocketAddr>,
    /// The boot number.
    pub boot: u32,
    /// Messages restored from the state file.
    pub restored: usize,
}

impl Ready {
    /// Reads `ready listen=ADDR boot=N restored=N`.
    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.strip_prefix("ready ")?.split(' ');
        let address = fields.next()?;
        let addr = address.strip_prefix("listen=").and_then(|a| a.parse().ok());
        let boot = fields.next()?.strip_prefix("boot=")?.parse().ok()?;
        let restored = fields.next()?.strip_prefix("restored=")?.parse().ok()?;
        Some(Self { addr, boot, restored })
    }
}

/// The files of one daemon setup, in a temporary directory.
pub struct Files {
    /// Kept so the directory lives as long as the files.
    pub dir: tempfile::TempDir,
}

impl Files {
    /// A fresh directory holding `config` as `quiesce.toml`.
    pub fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("quiesce.toml"), config).expect("config written");
        Self { dir }
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The usual arguments: config, loopback port 0, state, deliveries, dead letters and event
    /// log, all in the directory, plus `extra`.
    pub fn serve_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["serve".to_owned(), "--listen".to_owned(), "127.0.0.1:0".to_owned()];
        for (flag, name) in [
            ("--config", "quiesce.toml"),
            ("--state", "state.json"),
            ("--deliveries", "deliveries.jsonl"),
            ("--dead-letters", "dead-letters.jsonl"),
            ("--event-log", "events.log"),
        ] {
            args.push(flag.to_owned());
            args.push(self.path(name).display().to_string());
        }
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    }

    /// A file's text; empty if it does not exist.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// A JSON-lines file, parsed.
    pub fn json_lines(&self, name: &str) -> Vec<Value> {
        let text = self.read(name);
        let parse = |line: &str| serde_json::from_str(line).expect("a JSON line");
        text.lines().map(parse).collect()
    }

    /// The ids (`channel/id`) of every delivered message, in file order.
    pub fn delivered_ids(&self) -> Vec<String> {
        let lines = self.json_lines("deliveries.jsonl");
        let messages =
            lines.iter().flat_map(|line| line["messages"].as_array().cloned().unwrap_or_default());
        messages.map(|m| identity(&m)).collect()
    }
}

/// `channel/id` of a JSON object with those fields.
pub fn identity(value: &Value) -> String {
    format!("{}/{}", value["channel"].as_str().unwrap_or("?"), value["id"].as_str().unwrap_or("?"))
}

/// A running daemon.
pub struct Process {
    child: Child,
    /// What its readiness line said.
    pub ready: Ready,
    stderr: PathBuf,
}

impl Process {
    /// Starts the daemon with `args`, its stderr going to `stderr`, and waits for its readiness
    /// line.
    ///
    /// # Errors
    ///
    /// The exit status and stderr of a daemon that ended before it was ready.
    pub fn start(args: &[String], stderr: &Path) -> Result<Self, String> {
        let log = std::fs::File::create(stderr).expect("stderr file");
        let mut child = Command::new(binary())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("the daemon starts");

        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines, line) = mpsc::channel();
        std::thread::spawn(move || {
            let mut first = String::new();
            let _read = BufReader::new(stdout).read_line(&mut first);
            let _gone = lines.send(first);
        });

        let first = line.recv_timeout(READY_WAIT).unwrap_or_default();
        if let Some(ready) = Ready::parse(first.trim_end()) {
            return Ok(Self { child, ready, stderr: stderr.to_path_buf() });
        }
        let _killed = child.kill();
        let status = child.wait().ok();
        let errors = std::fs::read_to_string(stderr).unwrap_or_default();
        Err(format!("daemon not ready (stdout {first:?}, status {status:?}):\n{errors}"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The TCP address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.ready.addr.expect("the daemon listens on TCP")
    }

    /// Sends a signal by its `kill -s` name (`USR1`, `TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for it to exit; panics after [`EXIT_WAIT`].
    pub fn wait(&mut self) -> ExitStatus {
        let started = now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(started.elapsed() < EXIT_WAIT, "daemon still running:\n{}", self.stderr());
            pause_ms(10);
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.running() {
            let _killed = self.child.kill();
            let _reaped = self.child.wait();
        }
    }
}

/// Sends a signal to a process with `kill -s NAME PID`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").args(["-s", name, &pid.to_string()]).status();
    assert!(matches!(status, Ok(s) if s.success()), "kill -s {name} {pid}: {status:?}");
}

/// Runs the daemon with `args` to its end (a start that fails), bounded by [`EXIT_WAIT`], and
/// returns its exit code and stderr.
pub fn run_to_end(args: &[String]) -> (Option<i32>, String) {
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the daemon starts");
    let started = now();
    while matches!(child.try_wait(), Ok(None)) {
        if started.elapsed() > EXIT_WAIT {
            let _killed = child.kill();
            panic!("the daemon did not exit on its own");
        }
        pause_ms(10);
    }
    let output = child.wait_with_output().expect("the daemon's output");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// One connection to a daemon, sending a request line and reading its reply line.
pub struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    /// Connects to `addr`, with reads bounded by `timeout`.
    ///
    /// # Errors
    ///
    /// The connection's error (refused while no daemon listens).
    pub fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Self { stream, reader })
    }

    /// Sends raw bytes followed by a newline, without reading.
    ///
    /// # Errors
    ///
    /// The connection's error.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.write_all(b"\n")
    }

    /// Reads one reply line.
    ///
    /// # Errors
    ///
    /// The connection's error; `UnexpectedEof` when the daemon closed it.
    pub fn reply(&mut self) -> std::io::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        serde_json::from_str(&line).map_err(std::io::Error::other)
    }

    /// Sends one request line and reads its reply.
    ///
    /// # Errors
    ///
    /// As [`Client::send_raw`] and [`Client::reply`].
    pub fn request(&mut self, line: &str) -> std::io::Result<Value> {
        self.send_raw(line.as_bytes())?;
        self.reply()
    }

    /// The daemon's status reply.
    pub fn status(&mut self) -> Value {
        self.request(r#"{"control":"status"}"#).expect("a status reply")
    }
}

/// A message request line.
pub fn message_line(channel: &str, id: &str, key: &str, session: &str, debounce: bool) -> String {
    serde_json::json!({
        "channel": channel,
        "id": id,
        "key": key,
        "session": session,
        "destination": key,
        "text": format!("text of {id}"),
        "debounce": debounce,
    })
    .to_string()
}

/// Whether a status reply shows nothing held: no restart, nothing buffered, queued, running
/// or in the intake.
pub fn is_quiet(status: &Value) -> bool {
    let zero = |field: &str| status[field].as_u64() == Some(0);
    status["reply"] == "status"
        && status["phase"].is_null()
        && ["buffered", "queued", "running", "intake"].into_iter().all(zero)
}

/// Polls the daemon's status until it is quiet; panics after `timeout`.
pub fn wait_quiet(addr: SocketAddr, timeout: Duration) {
    let started = now();
    let mut client = Client::connect(addr, Duration::from_secs(5)).expect("a status connection");
    loop {
        let status = client.status();
        if is_quiet(&status) {
            return;
        }
        assert!(started.elapsed() < timeout, "not quiet after {timeout:?}: {status}");
        pause_ms(20);
    }
}
