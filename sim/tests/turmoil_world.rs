//! End-to-end worlds on turmoil's simulated network (DESIGN "turmoil's place", issue 5 part 3),
//! and the differential runs on turmoil and on a paused tokio runtime. The gateway host, the
//! connection helpers and the differential machinery are in `support/worlds.rs`, shared with
//! the benchmarks; the world's retrying clients and link faults are here.
//!
//! - `world_*`: clients retry until each message is acknowledged, across held and partitioned
//!   links and a graceful stop and start of the gateway host; every accepted message is
//!   delivered exactly once and in per-key order.
//! - `differential_*`: crash-free scenarios of the generator run through the event-jump driver
//!   and through the daemon, on turmoil and on a paused tokio runtime, give every message the
//!   same outcome. What the daemon's worlds leave out is listed in `support/worlds.rs`.

#[path = "support/worlds.rs"]
mod worlds;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use quiesce::adapter::TokioClock;
use quiesce::clock::Clock;
use quiesce::config::Config;
use quiesce::daemon::DelayAgent;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use worlds::*;

const MESSAGES_PER_CLIENT: usize = 30;
/// How long a client waits for a reply before it drops the connection and sends again.
const REPLY_PATIENCE_MS: u64 = 400;
const BACKOFF_MS: u64 = 25;
/// How long the world runs on after the clients are done, before the final stop.
const SETTLE_MS: u64 = 1_000;

/// A small deterministic stream of numbers for the world's choices (splitmix64).
struct Dice(u64);

impl Dice {
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

/// One message a world client sends, after waiting `gap_ms`.
#[derive(Clone)]
struct Planned {
    gap_ms: u64,
    key: String,
    id: String,
    line: String,
}

fn world_plan(client: usize, dice: &mut Dice) -> Vec<Planned> {
    (0..MESSAGES_PER_CLIENT)
        .map(|n| {
            let key = format!("k{client}{}", ["a", "b"][dice.below(2) as usize]);
            let id = format!("c{client}-{n}");
            let line = json!({
                "channel": format!("ch{client}"),
                "id": id,
                "key": key,
                "session": format!("s-{key}"),
                "destination": key,
                "text": id,
            });
            Planned { gap_ms: dice.below(40), key, id, line: format!("{line}\n") }
        })
        .collect()
}

/// What the clients learnt: ids acknowledged `accepted`, and ids refused as duplicates (their
/// first copy was accepted but its reply was lost).
#[derive(Clone, Default)]
struct Acks {
    accepted: Arc<Mutex<Vec<(String, String)>>>,
    duplicates: Arc<Mutex<Vec<String>>>,
    /// Requests sent again after busy, stopping, a lost connection or no reply.
    retries: Arc<AtomicU32>,
}

/// Sends one request and waits for its reply; an error means the connection is gone.
async fn exchange(
    clock: &TokioClock,
    connection: &mut Connection,
    line: &str,
) -> io::Result<String> {
    let (replies, requests) = connection;
    requests.write_all(line.as_bytes()).await?;
    let until_ms = clock.now_ms() + REPLY_PATIENCE_MS;
    tokio::select! {
        biased;
        reply = replies.next_line() => match reply? {
            Some(reply) => Ok(reply_of(&reply)),
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        },
        () = clock.sleep_until(until_ms) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Sends each planned message until the gateway acknowledges it, one at a time, so a key's
/// messages are accepted in the order they are sent.
async fn retrying_client(plan: Vec<Planned>, acks: Acks) -> turmoil::Result {
    let clock = TokioClock::new();
    let mut connection = None;
    for message in plan {
        clock.sleep_until(clock.now_ms() + message.gap_ms).await;
        loop {
            let open = match connection.take() {
                Some(open) => Ok(open),
                None => connect(&clock, REPLY_PATIENCE_MS).await,
            };
            let mut open = match open {
                Ok(open) => open,
                Err(_) => {
                    acks.retries.fetch_add(1, Ordering::SeqCst);
                    clock.sleep_until(clock.now_ms() + BACKOFF_MS).await;
                    continue;
                }
            };
            let reply = exchange(&clock, &mut open, &message.line).await;
            if reply.is_ok() {
                connection = Some(open);
            }
            match reply.as_deref() {
                Ok("accepted") => {
                    lock(&acks.accepted).push((message.key.clone(), message.id.clone()));
                    break;
                }
                Ok("duplicate") => {
                    lock(&acks.duplicates).push(message.id.clone());
                    break;
                }
                // busy, stopping, an error, or no connection: try again a little later.
                _ => {
                    acks.retries.fetch_add(1, Ordering::SeqCst);
                    clock.sleep_until(clock.now_ms() + BACKOFF_MS).await;
                }
            }
        }
    }
    Ok(())
}

fn world_config() -> Config {
    let mut config = Config::default();
    config.inbound.window_ms = 50;
    config.queue.quiet_ms = 5;
    config.queue.cap = 1_000;
    config.stop.deadline_ms = 60;
    config
}

/// What a world run leaves to check.
struct WorldEnd {
    acks: Acks,
    deliveries: String,
    event_log: String,
    exits: Vec<i32>,
    boots: u32,
}

/// Link faults, a graceful stop and a start of the gateway, at times drawn from the seed.
struct Script {
    hold: (u64, u64),
    partition: (u64, u64),
    stop_ms: u64,
    down_ms: u64,
}

impl Script {
    /// Carries out what is due at `now_ms`: a link fault or its end, the stop, and the start
    /// `down_ms` after the stopped host's future returned.
    fn apply(
        &self,
        sim: &mut turmoil::Sim<'_>,
        signals: &SignalSlot,
        now_ms: u64,
        stopped_at_ms: &mut Option<u64>,
    ) {
        if now_ms == self.hold.0 {
            sim.hold("client-1", GATEWAY);
        } else if now_ms == self.hold.1 {
            sim.release("client-1", GATEWAY);
        }
        if now_ms == self.partition.0 {
            sim.partition("client-2", GATEWAY);
        } else if now_ms == self.partition.1 {
            sim.repair("client-2", GATEWAY);
        }
        if now_ms == self.stop_ms {
            assert!(signals.send(TERM), "the first boot listens at {now_ms} ms");
        }

        let running = sim.is_host_running(GATEWAY);
        match *stopped_at_ms {
            None if !running => *stopped_at_ms = Some(now_ms),
            Some(at_ms) if !running && now_ms == at_ms + self.down_ms => sim.bounce(GATEWAY),
            _ => {}
        }
    }
}

fn script(dice: &mut Dice) -> Script {
    let hold_ms = 100 + dice.below(300);
    let partition_ms = 200 + dice.below(400);
    Script {
        hold: (hold_ms, hold_ms + 100 + dice.below(300)),
        partition: (partition_ms, partition_ms + 100 + dice.below(300)),
        stop_ms: 300 + dice.below(500),
        down_ms: 50 + dice.below(300),
    }
}

fn run_world(seed: u64) -> turmoil::Result<WorldEnd> {
    let mut dice = Dice(seed);
    let script = script(&mut dice);
    let mut sim = simulation(seed, 60_000);
    let gateway = GatewayHost::new(world_config(), |clock| DelayAgent::new(clock, 30));
    gateway.install(&mut sim);
    let acks = Acks::default();
    for client in 0..CLIENTS {
        let plan = world_plan(client, &mut dice);
        sim.client(format!("client-{client}"), retrying_client(plan, acks.clone()));
    }

    let mut stopped_at_ms = None;
    let mut settle_until_ms = None;
    loop {
        let now_ms = u64::try_from(sim.elapsed().as_millis()).expect("short simulations");
        script.apply(&mut sim, &gateway.signals, now_ms, &mut stopped_at_ms);
        if settle_until_ms.is_some_and(|until_ms| now_ms >= until_ms) {
            break;
        }
        // Once every client has its messages acknowledged, let the last debounce windows and
        // runs end before the final stop.
        if sim.step()? && settle_until_ms.is_none() {
            settle_until_ms = Some(now_ms + SETTLE_MS);
        }
    }

    assert!(gateway.signals.send(TERM), "the second boot listens");
    while sim.is_host_running(GATEWAY) {
        sim.step()?;
    }
    Ok(WorldEnd {
        acks,
        deliveries: gateway.deliveries.text(),
        event_log: gateway.event_log.text(),
        exits: lock(&gateway.exits).clone(),
        boots: gateway.boots.load(Ordering::SeqCst),
    })
}

/// Every delivered message as (key, id), in the order of the deliveries file.
fn delivered(deliveries: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in deliveries.lines() {
        let run: Value = serde_json::from_str(line).expect("a delivery line is JSON");
        for message in run["messages"].as_array().expect("a delivery names its messages") {
            let key = message["key"].as_str().expect("world messages have keys");
            out.push((key.to_owned(), message["id"].as_str().expect("an id").to_owned()));
        }
    }
    out
}

fn check_world(seed: u64, end: &WorldEnd) {
    let context = || format!("SEED={seed}\nevent log:\n{}", end.event_log);
    let delivered = delivered(&end.deliveries);
    let accepted = lock(&end.acks.accepted).clone();
    let duplicates = lock(&end.acks.duplicates).clone();

    let mut seen = BTreeSet::new();
    for (_, id) in &delivered {
        assert!(seen.insert(id.clone()), "{id} delivered twice; {}", context());
    }
    for (_, id) in &accepted {
        assert!(seen.contains(id), "accepted {id} never delivered; {}", context());
    }
    for id in &duplicates {
        assert!(seen.contains(id), "{id} refused as a duplicate, never delivered; {}", context());
    }
    assert_eq!(delivered.len(), CLIENTS * MESSAGES_PER_CLIENT, "{}", context());

    // Each client sends a key's messages one after another, so their ids grow per key.
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for (key, id) in &delivered {
        let n: u64 = id.rsplit('-').next().and_then(|n| n.parse().ok()).expect("cN-M ids");
        let before = last.insert(key, n);
        assert!(before.is_none_or(|b| b < n), "{key}: {id} after #{before:?}; {}", context());
    }

    assert_eq!(end.boots, 2, "{}", context());
    assert_eq!(end.exits, [0, 0], "{}", context());
    assert!(end.event_log.contains(" b2 g0 state_restored "), "{}", context());
}

const WORLD_SEEDS: [u64; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

#[test]
fn world_delivers_every_accepted_message_once_in_key_order() {
    let mut retries = 0;
    for seed in WORLD_SEEDS {
        let end = run_world(seed).unwrap_or_else(|e| panic!("SEED={seed}: {e}"));
        check_world(seed, &end);
        retries += end.acks.retries.load(Ordering::SeqCst);
    }
    assert!(retries > 0, "no link fault or stop ever made a client send again");
}

#[test]
fn world_is_deterministic() {
    let first = run_world(7).expect("the world runs");
    let second = run_world(7).expect("the world runs");

    assert_eq!(first.event_log, second.event_log);
    assert_eq!(first.deliveries, second.deliveries);
}

// ---------------------------------------------------------------------------------------------
// The differential tests: the same crash-free scenario through the driver and through the
// daemon, on turmoil and on a paused tokio runtime.
// ---------------------------------------------------------------------------------------------
const DIFFERENTIAL_SEEDS: std::ops::Range<u64> = 0..80;
const DIFFERENTIAL_SAMPLE: usize = 10;

#[test]
fn differential_outcomes_match_the_driver() {
    let seeds = DIFFERENTIAL_SEEDS.filter(|&seed| well_spaced(&crash_free(seed)));
    let mut sampled = Vec::new();
    for seed in seeds.take(DIFFERENTIAL_SAMPLE) {
        let scenario = crash_free(seed);
        let (expected, last_outcome_ms) = driver_outcomes(&scenario);
        let event_log = run_turmoil(seed, &scenario, last_outcome_ms)
            .unwrap_or_else(|e| panic!("SEED={seed}: {e}"));
        check_arrival_times(seed, &scenario, &event_log);
        let got = logged_outcomes(&event_log);

        assert_eq!(got, expected, "SEED={seed}\nturmoil's event log:\n{event_log}");
        sampled.push(seed);
    }
    assert_eq!(sampled.len(), DIFFERENTIAL_SAMPLE, "too few well-spaced seeds: {sampled:?}");
}

#[test]
fn differential_paused_tokio_outcomes_match_the_driver() {
    let seeds = DIFFERENTIAL_SEEDS.filter(|&seed| well_spaced(&crash_free(seed)));
    let mut sampled = Vec::new();
    for seed in seeds.take(DIFFERENTIAL_SAMPLE) {
        let scenario = crash_free(seed);
        let (expected, last_outcome_ms) = driver_outcomes(&scenario);
        let event_log = run_paused(&scenario, last_outcome_ms);
        let got = logged_outcomes(&event_log);

        assert_eq!(got, expected, "SEED={seed}\nthe paused runtime's event log:\n{event_log}");
        sampled.push(seed);
    }
    assert_eq!(sampled.len(), DIFFERENTIAL_SAMPLE, "too few well-spaced seeds: {sampled:?}");
}
