//! Bad input against the real daemon: each case shows the error it gives and that nothing
//! else was lost.

// The tests drive a real process on real time; see `daemon_support`.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod daemon_support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use daemon_support::{Client, Files, Process, message_line, now, pause_ms, run_to_end, wait_quiet};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// A config under which a message is delivered within milliseconds.
const QUICK: &str = "[queue]\nquiet_ms = 5\n";

fn start(files: &Files, extra: &[&str], stderr: &str) -> Process {
    let args = files.serve_args(extra);
    Process::start(&args, &files.path(stderr)).unwrap_or_else(|error| panic!("{error}"))
}

fn connect(daemon: &Process) -> Client {
    Client::connect(daemon.addr(), WAIT).expect("a connection to the daemon")
}

/// Offers message `id` (channel `tg`, key `k`, not debounced) and returns the reply's name.
fn offer(client: &mut Client, id: &str) -> String {
    let reply = client.request(&message_line("tg", id, "k", "s", false)).expect("a reply");
    reply["reply"].as_str().unwrap_or_default().to_owned()
}

/// Waits until `condition` holds; panics with `what` after [`WAIT`].
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let started = now();
    while !condition() {
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        pause_ms(20);
    }
}

/// Waits for quiet, stops the daemon, and returns the ids delivered over all boots.
fn stop_and_collect(files: &Files, daemon: &mut Process) -> Vec<String> {
    wait_quiet(daemon.addr(), WAIT);
    let status = daemon.stop();
    assert!(status.success(), "exit {status}:\n{}", daemon.stderr());
    files.delivered_ids()
}

#[test]
fn bad_config_at_start_exits_2_naming_the_field() {
    let files = Files::new("[queue]\nquiet_ms = 5\ncap = 0\n");

    let (code, stderr) = run_to_end(&files.serve_args(&[]));

    assert_eq!(code, Some(2), "{stderr}");
    let config = files.path("quiesce.toml").display().to_string();
    assert!(stderr.contains(&format!("{config}:3: queue.cap: must be at least 1")), "{stderr}");
    assert!(!files.path("state.json.lock").exists(), "a bad config touches no state file");
}

#[test]
fn bad_flag_exits_2_with_usage() {
    let files = Files::new(QUICK);

    let (code, stderr) = run_to_end(&files.serve_args(&["--agent-fail-every", "none"]));

    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--agent-fail-every: \"none\" is not valid"), "{stderr}");
    assert!(stderr.contains("usage: quiesce serve"), "{stderr}");
}

#[test]
fn state_path_that_is_a_directory_exits_2_and_is_left_alone() {
    let files = Files::new(QUICK);
    let directory = files.path("state-dir");
    std::fs::create_dir(&directory).expect("make the directory");
    let state = directory.to_string_lossy().into_owned();

    let (code, stderr) = run_to_end(&files.serve_args(&["--state", &state]));

    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("is a directory, not a file"), "{stderr}");
    assert!(directory.is_dir(), "the directory is where it was");
}

#[test]
fn bad_config_on_reload_keeps_the_old_one() {
    let files = Files::new(QUICK);
    let mut daemon = start(&files, &[], "stderr.log");
    let mut client = connect(&daemon);
    assert_eq!(offer(&mut client, "before"), "accepted");

    std::fs::write(files.path("quiesce.toml"), "[queue]\nmode = \"sometimes\"\n").expect("write");
    daemon.signal("USR1");
    wait_for("the reload's error", || daemon.stderr().contains("config not read"));
    wait_for("the next generation", || client.status()["generation"] == 1);

    let stderr = daemon.stderr();
    assert!(stderr.contains("queue.mode: expected one of collect, followup"), "{stderr}");
    assert_eq!(offer(&mut client, "after"), "accepted");
    assert_eq!(stop_and_collect(&files, &mut daemon), ["tg/before", "tg/after"]);
}

#[test]
fn bad_lines_get_errors_and_the_connection_stays_open() {
    let files = Files::new(QUICK);
    let mut daemon = start(&files, &[], "stderr.log");
    let mut client = connect(&daemon);
    let mut error = |line: &[u8]| -> Value {
        client.send_raw(line).expect("sent");
        let reply = client.reply().expect("an error reply");
        assert_eq!((&reply["reply"], &reply["retry"]), (&"error".into(), &false.into()));
        reply
    };

    assert_eq!(error(b"{not json")["error"], "bad_json");
    assert_eq!(error(b"[1, 2]")["error"], "bad_json");
    let missing = error(br#"{"channel":"tg","id":"m9","destination":"d","text":"t"}"#);
    assert_eq!(
        (&missing["error"], &missing["field"]),
        (&"missing_field".into(), &"session".into())
    );
    assert_eq!((&missing["channel"], &missing["id"]), (&"tg".into(), &"m9".into()));
    let typed = error(br#"{"channel":"tg","id":1,"session":"s","destination":"d","text":"t"}"#);
    assert_eq!((&typed["error"], &typed["field"]), (&"bad_field".into(), &"id".into()));
    let unknown = error(br#"{"channel":"tg","id":"m9","sesion":"s","destination":"d","text":""}"#);
    assert_eq!((&unknown["error"], &unknown["field"]), (&"unknown_field".into(), &"sesion".into()));
    assert_eq!(error(br#"{"control":"restart"}"#)["error"], "unknown_control");
    let long = error(&vec![b'x'; 100_000]);
    assert_eq!(long["error"], "line_too_long");
    assert!(long["detail"].as_str().unwrap_or_default().contains("100000 bytes"), "{long}");

    assert_eq!(offer(&mut client, "m1"), "accepted");
    assert_eq!(offer(&mut client, "m1"), "duplicate");
    assert_eq!(stop_and_collect(&files, &mut daemon), ["tg/m1"]);
}

#[test]
fn pipelined_requests_get_replies_in_order() {
    let files = Files::new(QUICK);
    let mut daemon = start(&files, &[], "stderr.log");
    let mut client = connect(&daemon);

    let lines = [
        message_line("tg", "m1", "k", "s", true),
        "{oops".to_owned(),
        String::new(),
        r#"{"control":"status"}"#.to_owned(),
        message_line("tg", "m2", "k", "s", true),
    ];
    client.send_raw(lines.join("\n").as_bytes()).expect("sent");
    let replies: Vec<String> = (0..4)
        .map(|_| client.reply().expect("a reply")["reply"].as_str().unwrap_or("?").to_owned())
        .collect();

    assert_eq!(replies, ["accepted", "error", "status", "accepted"], "a blank line gets no reply");
    assert_eq!(stop_and_collect(&files, &mut daemon), ["tg/m1", "tg/m2"]);
}

#[test]
fn stop_saves_held_messages_and_the_next_boot_delivers_them() {
    let files = Files::new("[queue]\nquiet_ms = 5\n[stop]\ndeadline_ms = 50\n");
    let mut first = start(&files, &["--agent-delay-ms", "60000"], "stderr-1.log");
    let mut client = connect(&first);
    for id in ["m1", "m2", "m3"] {
        assert_eq!(offer(&mut client, id), "accepted");
    }

    assert!(first.stop().success(), "{}", first.stderr());
    let mut second = start(&files, &[], "stderr-2.log");

    assert_eq!((second.ready.boot, second.ready.restored), (2, 3));
    assert!(!files.path("state.json").exists(), "a restored state file is removed");
    assert_eq!(stop_and_collect(&files, &mut second), ["tg/m1", "tg/m2", "tg/m3"]);
    let events = files.read("events.log");
    assert!(events.contains(" b1 g0 run_finished run=1 session=s end=interrupted"), "{events}");
    assert!(events.contains(" b2 g0 state_restored messages=[tg/m1,tg/m2,tg/m3]"), "{events}");
}

/// Writes `content` as the state file, starts a daemon on it, and checks that the file was set
/// aside as `aside` with its bytes intact, the error says so, and a message still goes through.
fn check_set_aside(content: &str, aside: &str, reason: &str) {
    let files = Files::new(QUICK);
    std::fs::write(files.path("state.json"), content).expect("state written");

    let mut daemon = start(&files, &[], "stderr.log");

    assert_eq!(daemon.ready.restored, 0);
    let aside_path = files.path(aside);
    assert_eq!(std::fs::read_to_string(&aside_path).ok().as_deref(), Some(content));
    let stderr = daemon.stderr();
    assert!(stderr.contains("state file set aside"), "{stderr}");
    assert!(stderr.contains(&aside_path.display().to_string()), "{stderr}");
    assert!(stderr.contains(reason), "{stderr}");
    let mut client = connect(&daemon);
    assert_eq!(offer(&mut client, "m1"), "accepted");
    assert_eq!(stop_and_collect(&files, &mut daemon), ["tg/m1"]);
}

#[test]
fn corrupt_state_file_is_set_aside_and_the_daemon_starts() {
    check_set_aside("{\"format\":\"quiesce-state\",\"vers", "state.json.corrupt.1", "corrupt");
}

#[test]
fn unknown_version_state_file_is_set_aside_and_the_daemon_starts() {
    let future = r#"{"format":"quiesce-state","version":99,"handover":{}}"#;
    check_set_aside(future, "state.json.unknown-version.1", "version 99");
}

#[test]
fn second_daemon_on_the_same_state_file_fails_and_the_first_goes_on() {
    let files = Files::new(QUICK);
    let mut first = start(&files, &[], "stderr-1.log");
    let mut client = connect(&first);
    assert_eq!(offer(&mut client, "m1"), "accepted");

    let (code, stderr) = run_to_end(&files.serve_args(&[]));

    assert_eq!(code, Some(2), "{stderr}");
    let state = files.path("state.json").display().to_string();
    assert!(
        stderr.contains(&format!("state file {state} is locked by another process")),
        "{stderr}"
    );
    assert_eq!(files.read("state.json.boot"), "1\n", "the second daemon touched nothing");
    assert_eq!(offer(&mut client, "m2"), "accepted");
    assert_eq!(stop_and_collect(&files, &mut first), ["tg/m1", "tg/m2"]);
}

#[test]
fn sigint_stops_like_sigterm() {
    let files = Files::new(QUICK);
    let mut daemon = start(&files, &[], "stderr.log");

    daemon.signal("INT");

    assert!(daemon.wait().success(), "{}", daemon.stderr());
    assert!(files.read("events.log").contains(" exit code=0"));
}

#[test]
fn unix_socket_serves_the_same_protocol() {
    let files = Files::new(QUICK);
    let socket = files.path("quiesce.sock").display().to_string();
    let args: Vec<String> = files
        .serve_args(&[])
        .into_iter()
        .filter(|arg| arg != "--listen" && arg != "127.0.0.1:0")
        .chain(["--unix".to_owned(), socket.clone()])
        .collect();
    let mut daemon = Process::start(&args, &files.path("stderr.log")).expect("ready");

    let mut stream = UnixStream::connect(&socket).expect("connected");
    let line = message_line("tg", "m1", "k", "s", false);
    stream.write_all(format!("{line}\n").as_bytes()).expect("sent");
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).expect("a reply");

    assert_eq!(reply, "{\"reply\":\"accepted\",\"channel\":\"tg\",\"id\":\"m1\"}\n");
    assert!(daemon.stop().success(), "{}", daemon.stderr());
    assert!(!files.path("quiesce.sock").exists(), "the socket file is removed at exit");
    assert_eq!(files.delivered_ids(), ["tg/m1"]);
}
