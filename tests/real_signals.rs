//! The real signal source on real signals: each test sends signals to this test process with
//! `kill`. They live in a binary of their own because installing a handler for SIGTERM or
//! SIGINT keeps it installed for the life of the process: in the library's unit tests it would
//! stop a test runner's SIGTERM from ending a hung test (cargo-mutants ends timed-out mutants
//! that way).

// Real signals arrive in real time: the waits here are bounded in real time on purpose.
#![allow(clippy::disallowed_methods)]

use std::process::Command;
use std::time::Duration;

use quiesce::adapter::UnixSignals;
use quiesce::signal::{Origin, Signal, SignalKind, SignalSource};

/// Serializes the tests that raise real signals: every installed `UnixSignals` in this
/// process sees every signal, so two such tests at once would see each other's.
static RAISING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Bounds every wait on a real signal, so a lost signal fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(5);

/// How long "nothing more is pending" is given to show otherwise.
const QUIET: Duration = Duration::from_millis(200);

/// Sends `name` (as `kill -s` spells it) to this process and waits for `kill` to exit.
fn raise(name: &str) {
    let pid = std::process::id().to_string();
    let status = Command::new("sh").args(["-c", "kill -s \"$0\" \"$1\"", name, &pid]).status();
    assert!(matches!(status, Ok(s) if s.success()), "kill -s {name} failed: {status:?}");
}

/// Raises the signals, then gives their handlers time to run before anything polls.
async fn raise_all(names: &[&str]) {
    for name in names {
        raise(name);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The next signal, failing the test if none comes within [`WAIT`].
async fn next(signals: &mut UnixSignals) -> Signal {
    let received = tokio::time::timeout(WAIT, signals.recv()).await;
    received.ok().flatten().expect("a signal within the bound")
}

/// Whether `recv` stays empty for [`QUIET`].
async fn stays_quiet(signals: &mut UnixSignals) -> bool {
    tokio::time::timeout(QUIET, signals.recv()).await.is_err()
}

fn external(kind: SignalKind) -> Signal {
    Signal { kind, origin: Origin::External }
}

#[tokio::test]
async fn shutdown_comes_before_reload_and_repeats_coalesce() {
    let _raising = RAISING.lock().await;
    let mut signals = UnixSignals::install().expect("handlers install");

    raise_all(&["USR1", "USR1", "TERM"]).await;

    assert_eq!(next(&mut signals).await, external(SignalKind::Shutdown));
    assert_eq!(next(&mut signals).await, external(SignalKind::Reload));
    assert!(stays_quiet(&mut signals).await, "the second SIGUSR1 was not coalesced");
}

#[tokio::test]
async fn term_and_int_together_make_one_shutdown() {
    let _raising = RAISING.lock().await;
    let mut signals = UnixSignals::install().expect("handlers install");

    raise_all(&["INT", "TERM"]).await;

    assert_eq!(next(&mut signals).await, external(SignalKind::Shutdown));
    assert!(stays_quiet(&mut signals).await, "SIGTERM and SIGINT made two shutdowns");
}
