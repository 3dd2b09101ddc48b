//! Chaos against the real daemon: thousands of messages over loopback from several clients,
//! dozens of real SIGUSR1 within seconds (some with a changed config file), then SIGTERM, a
//! second boot on the same state file, and a wait for quiet.
//!
//! Then every accepted message must be delivered exactly once, or dead-lettered (failures are
//! configured: every 17th agent run fails and three failures dead-letter a batch); each key's
//! messages must be delivered in acceptance order across both boots; and the second boot must
//! have restored exactly what the first saved.
//!
//! The run is seeded: `SEED=<n>` is printed first, and `QUIESCE_CHAOS_SEED=<n>` replays the
//! same traffic and signal schedule (the real process's timing still varies).

// The test drives a real process on real time; see `daemon_support`.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod daemon_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use daemon_support::{Client, Files, Process, message_line, now, pause_ms, wait_quiet};

/// Short deadlines, so restarts overlap with traffic and a stop can cut runs short. The stop
/// deadline is drawn per seed (see [`Draw`]).
const CONFIG: &str = "\
close_budget_ms = 200
intake_max = 64

[inbound]
window_ms = 15

[queue]
cap = 100000
drop = \"new\"
quiet_ms = 5

[run]
timeout_ms = 5000
attempts_max = 3

[reload]
deadline_ms = 400

[stop]
deadline_ms = STOP_DEADLINE_MS
";

const CLIENTS: u64 = 4;
const MESSAGES_PER_CLIENT: u64 = 1_000;
const KEYS_PER_CLIENT: u64 = 6;
/// The pause between two messages of one client, so traffic outlasts the signals.
const PACE_MS: u64 = 3;
/// How long each agent run takes.
const AGENT_DELAY_MS: &str = "6";
/// The whole test's bound on the wall clock.
const TEST_BOUND: Duration = Duration::from_secs(60);
const REPLY_WAIT: Duration = Duration::from_secs(5);

/// splitmix64: small, seeded, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The options drawn from the seed, printed first.
#[derive(Clone, Copy, Debug)]
struct Draw {
    /// 5 and 30 ms end a stop's wait with runs still going, so they are interrupted, saved
    /// and run again after the restart; 300 ms usually lets them finish.
    stop_deadline_ms: u64,
    /// Every how many agent runs one fails; three failures of one batch dead-letter it.
    fail_every: u64,
}

impl Draw {
    fn new(rng: &mut Rng) -> Self {
        let stop_deadline_ms = [5, 30, 300][usize::try_from(rng.below(3)).unwrap_or(0)];
        let fail_every = [5, 17][usize::try_from(rng.below(2)).unwrap_or(0)];
        Self { stop_deadline_ms, fail_every }
    }

    fn config(&self, window_ms: u64) -> String {
        CONFIG
            .replace("STOP_DEADLINE_MS", &self.stop_deadline_ms.to_string())
            .replace("window_ms = 15", &format!("window_ms = {window_ms}"))
    }
}

/// Where the clients find the daemon; the test changes it when the second boot is ready.
type Board = Arc<Mutex<SocketAddr>>;

/// One accepted message, as its client saw it.
#[derive(Clone, Debug)]
struct Acked {
    key: String,
    identity: String,
}

/// What one client did.
#[derive(Debug, Default)]
struct ClientLog {
    /// Accepted messages in acceptance order (a `duplicate` after a lost reply counts: the
    /// first copy was accepted).
    acked: Vec<Acked>,
    attempts: u64,
    busy: u64,
    stopping: u64,
    duplicates: u64,
    /// Connections lost (the daemon stopped) and dropped on purpose.
    reconnects: u64,
    dropped_on_purpose: u64,
}

/// Sends this client's messages one at a time, each until it is accepted, reconnecting when
/// the daemon goes away and now and then on purpose (a channel disconnect).
fn client(c: u64, seed: u64, board: Board) -> ClientLog {
    let started = now();
    let mut rng = Rng(seed ^ (c + 1).wrapping_mul(0x51_7CC1_B727_220A));
    let mut log = ClientLog::default();
    let mut connection: Option<Client> = None;

    for n in 0..MESSAGES_PER_CLIENT {
        let k = rng.below(KEYS_PER_CLIENT);
        let (channel, key, id) = (format!("ch{}", c % 2), format!("c{c}k{k}"), format!("c{c}-{n}"));
        let line = message_line(&channel, &id, &key, &format!("c{c}s{}", k % 3), rng.below(5) > 0);
        if rng.below(250) == 0 && connection.take().is_some() {
            log.dropped_on_purpose += 1;
        }

        let mut lost_reply = false;
        loop {
            assert!(started.elapsed() < TEST_BOUND, "client {c} still sending {id}");
            let Some(open) = connection.as_mut() else {
                let addr = *board.lock().expect("board");
                connection = Client::connect(addr, REPLY_WAIT).ok();
                if connection.is_none() {
                    pause_ms(10);
                }
                continue;
            };
            log.attempts += 1;
            let reply = match open.request(&line) {
                Ok(reply) => reply,
                Err(_) => {
                    // The reply may be lost after the daemon accepted: a retry may say duplicate.
                    lost_reply = true;
                    connection = None;
                    log.reconnects += 1;
                    pause_ms(10);
                    continue;
                }
            };
            match reply["reply"].as_str() {
                Some("accepted") => break,
                Some("duplicate") => {
                    assert!(lost_reply, "{channel}/{id} refused as duplicate on its first send");
                    log.duplicates += 1;
                    break;
                }
                Some("busy") => {
                    log.busy += 1;
                    pause_ms(5);
                }
                Some("stopping") => {
                    log.stopping += 1;
                    pause_ms(20);
                }
                _ => panic!("unexpected reply to {line}: {reply}"),
            }
        }
        log.acked.push(Acked { key, identity: format!("{channel}/{id}") });
        pause_ms(PACE_MS);
    }
    log
}

/// The config with another debounce window, written whole before it replaces the file.
fn rewrite_config(files: &Files, draw: &Draw, window_ms: u64) {
    let text = draw.config(window_ms);
    let tmp = files.path("quiesce.toml.tmp");
    std::fs::write(&tmp, text).expect("config written");
    std::fs::rename(&tmp, files.path("quiesce.toml")).expect("config replaced");
}

/// Sends dozens of SIGUSR1 at seeded gaps, sometimes after changing the config; returns how
/// many were sent.
fn signal_reloads(daemon: &Process, files: &Files, draw: &Draw, rng: &mut Rng) -> u64 {
    let count = 30 + rng.below(15);
    for _ in 0..count {
        pause_ms(10 + rng.below(110));
        if rng.below(4) == 0 {
            rewrite_config(files, draw, 5 + rng.below(40));
        }
        daemon.signal("USR1");
    }
    count
}

/// How many messages a state file holds: pending work and the intake.
fn messages_in_state(files: &Files) -> usize {
    let state: serde_json::Value =
        serde_json::from_str(&files.read("state.json")).expect("the state file is JSON");
    let handover = &state["handover"];
    let batches = handover["pending"].as_array().into_iter().flatten().flat_map(|session| {
        session["work"].as_array().into_iter().flatten().map(|work| &work["batch"]["messages"])
    });
    let pending: usize = batches.map(|m| m.as_array().map_or(0, Vec::len)).sum();
    pending + handover["intake"].as_array().map_or(0, Vec::len)
}

#[test]
fn every_accepted_message_is_delivered_once_across_reloads_and_a_restart() {
    let seed = std::env::var("QUIESCE_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    println!("SEED={seed}");
    println!("replay: QUIESCE_CHAOS_SEED={seed} cargo test --test daemon_chaos -- --nocapture");
    let started = now();
    let mut rng = Rng(seed);
    let draw = Draw::new(&mut rng);
    println!("{draw:?}");
    let files = Files::new(&draw.config(15));
    let fail_every = draw.fail_every.to_string();
    let args =
        files.serve_args(&["--agent-delay-ms", AGENT_DELAY_MS, "--agent-fail-every", &fail_every]);

    let mut first = Process::start(&args, &files.path("stderr-1.log")).expect("first boot ready");
    let board: Board = Arc::new(Mutex::new(first.addr()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let board = board.clone();
            std::thread::spawn(move || client(c, seed, board))
        })
        .collect();

    pause_ms(300);
    let reloads = signal_reloads(&first, &files, &draw, &mut rng);
    let status = first.stop();
    assert!(status.success(), "first boot exited with {status}:\n{}", first.stderr());
    let saved = messages_in_state(&files);

    let mut second = Process::start(&args, &files.path("stderr-2.log")).expect("second boot ready");
    *board.lock().expect("board") = second.addr();
    assert_eq!(second.ready.boot, 2);
    assert_eq!(second.ready.restored, saved, "the second boot restores what the first saved");
    assert!(!files.path("state.json").exists(), "a restored state file is removed");

    let logs: Vec<ClientLog> =
        clients.into_iter().map(|c| c.join().expect("client finished")).collect();
    wait_quiet(second.addr(), Duration::from_secs(20));
    let status = second.stop();
    assert!(status.success(), "second boot exited with {status}:\n{}", second.stderr());

    let summary = check(&files, &logs, saved);
    let total = |field: fn(&ClientLog) -> u64| logs.iter().map(field).sum::<u64>();
    let events = files.read("events.log");
    let count = |pattern: &str| events.lines().filter(|l| l.contains(pattern)).count();
    let generations_b1 = events
        .lines()
        .filter(|l| l.contains(" b1 g") && l.contains(" generation_started "))
        .count();
    println!(
        "SEED={seed} stop_deadline_ms={} fail_every={} sent={} attempts={} accepted={} \
         delivered={} dead_lettered={}",
        draw.stop_deadline_ms,
        draw.fail_every,
        CLIENTS * MESSAGES_PER_CLIENT,
        total(|l| l.attempts),
        summary.accepted,
        summary.delivered,
        summary.dead_lettered,
    );
    println!(
        "  duplicates_after_lost_reply={} busy={} stopping={} reconnects={} dropped={}",
        total(|l| l.duplicates),
        total(|l| l.busy),
        total(|l| l.stopping),
        total(|l| l.reconnects),
        total(|l| l.dropped_on_purpose),
    );
    println!(
        "  sigusr1={reloads} generations_b1={generations_b1} deferred={} runs_failed={} \
         interrupted={} saved={saved} restored={} duration_ms={}",
        count(" signal_deferred "),
        count(" end=failure"),
        count(" end=interrupted"),
        second.ready.restored,
        started.elapsed().as_millis(),
    );
    assert!(started.elapsed() < TEST_BOUND, "the chaos run took {:?}", started.elapsed());
}

struct Summary {
    accepted: usize,
    delivered: usize,
    dead_lettered: usize,
}

/// Every accepted message delivered exactly once or dead-lettered, nothing else delivered,
/// each key in acceptance order, and the restore in the event log.
fn check(files: &Files, logs: &[ClientLog], saved: usize) -> Summary {
    let acked: Vec<&Acked> = logs.iter().flat_map(|l| &l.acked).collect();
    let delivered = files.delivered_ids();
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for id in &delivered {
        *times.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");

    let dead_letters = files.json_lines("dead-letters.jsonl");
    for line in &dead_letters {
        assert_eq!(line["outcome"], "dead_lettered", "only failures are configured: {line}");
    }
    let dead: BTreeSet<String> = dead_letters.iter().map(daemon_support::identity).collect();
    let both: Vec<_> = dead.iter().filter(|id| times.contains_key(id.as_str())).collect();
    assert!(both.is_empty(), "delivered and dead-lettered: {both:?}");

    let accepted: BTreeSet<&str> = acked.iter().map(|a| a.identity.as_str()).collect();
    let missing: Vec<_> =
        accepted.iter().filter(|id| !times.contains_key(*id) && !dead.contains(**id)).collect();
    assert!(missing.is_empty(), "{} accepted, never delivered: {missing:?}", missing.len());
    let unknown: Vec<_> = times.keys().filter(|id| !accepted.contains(*id)).collect();
    assert!(unknown.is_empty(), "delivered, never accepted: {unknown:?}");

    check_key_order(&acked, &delivered, &dead);
    if saved > 0 {
        let restored =
            files.read("events.log").lines().any(|l| l.contains(" b2 g0 state_restored "));
        assert!(restored, "the second boot's event log shows no state_restored");
    }
    Summary { accepted: accepted.len(), delivered: delivered.len(), dead_lettered: dead.len() }
}

/// Within each key, the delivered messages come in acceptance order, across both boots.
fn check_key_order(acked: &[&Acked], delivered: &[String], dead: &BTreeSet<String>) {
    let key_of: BTreeMap<&str, &str> =
        acked.iter().map(|a| (a.identity.as_str(), a.key.as_str())).collect();
    let mut expected: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for a in acked.iter().filter(|a| !dead.contains(&a.identity)) {
        expected.entry(&a.key).or_default().push(&a.identity);
    }
    let mut actual: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for id in delivered {
        actual.entry(key_of[id.as_str()]).or_default().push(id);
    }
    for (key, order) in &expected {
        assert_eq!(actual.get(key), Some(order), "key {key} delivered out of acceptance order");
    }
}
