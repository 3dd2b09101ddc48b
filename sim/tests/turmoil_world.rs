//! End-to-end worlds on turmoil's simulated network (DESIGN "turmoil's place", issue 5 part 3).
//!
//! A gateway host runs the real daemon: turmoil's TCP listener through the [`Listener`] seam,
//! a [`MemoryStore`] that lives outside the host's factory (so what one boot saves, the next
//! restores), [`TokioClock`] on the host's paused runtime, and a signal source fed by a channel
//! the test's driver loop owns, so a signal reaches the gateway at the virtual millisecond the
//! loop sends it. Channel clients are turmoil clients speaking the wire protocol.
//!
//! - `world_*`: clients retry until each message is acknowledged, across held and partitioned
//!   links and a graceful stop and start of the gateway host; every accepted message is
//!   delivered exactly once and in per-key order.
//! - `differential_*`: crash-free scenarios of the generator run through the event-jump driver
//!   and through turmoil give every message the same outcome.
//!
//! # Limitations
//!
//! The differential sample leaves out what this world does not model: stops and boots (crash
//! free by definition), admission faults (the daemon has no fault hooks), channel reconnects
//! and `cancel_key` (no wire request for them), agent outages, and slow closes (the daemon's
//! close is immediate). They are stripped from each generated scenario before both runs.
//! Scenarios whose inputs from different sources fall within [`INPUT_GAP_MS_MIN`] of each other,
//! or start before [`FIRST_INPUT_MS_MIN`], are skipped rather than run with a tolerance.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use quiesce::adapter::TokioClock;
use quiesce::clock::Clock;
use quiesce::config::Config;
use quiesce::daemon::{Daemon, DelayAgent, Listener, Outputs};
use quiesce::event::Event;
use quiesce::message::SessionId;
use quiesce::shell::{Agent, ConfigReadError, RunRequest};
use quiesce::signal::{Origin, Signal, SignalKind, SignalSource};
use quiesce::store::MemoryStore;
use quiesce_sim::driver::{self, Entry, Unobserved};
use quiesce_sim::generate::{Generator, Params};
use quiesce_sim::scenario::{RunOutcome, Scenario};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use turmoil::net::{TcpListener, TcpStream};

const GATEWAY: &str = "gateway";
const PORT: u16 = 7000;
const TERM: Signal = Signal { kind: SignalKind::Shutdown, origin: Origin::External };

/// A fixed epoch: turmoil's default is the real current time.
#[expect(
    clippy::disallowed_types,
    reason = "turmoil takes its epoch as a SystemTime; this one is a constant, not the wall clock"
)]
fn epoch() -> std::time::SystemTime {
    std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A turmoil simulation with every knob that matters set explicitly: seed, duration, epoch,
/// a 1 ms tick and no network latency (turmoil's default draws a random latency per message).
fn simulation<'a>(seed: u64, duration_ms: u64) -> turmoil::Sim<'a> {
    turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(epoch())
        .simulation_duration(Duration::from_millis(duration_ms))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::ZERO)
        .max_message_latency(Duration::ZERO)
        .build()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// turmoil's TCP listener behind the daemon's listener seam.
struct SimListener(TcpListener);

impl Listener for SimListener {
    type Connection = TcpStream;

    /// turmoil's `accept`, which takes a connection off its queue only when it returns one.
    async fn accept(&mut self) -> io::Result<TcpStream> {
        let (stream, _peer) = self.0.accept().await?;
        Ok(stream)
    }
}

/// The driver loop's end of the signal channel. Each boot opens a fresh channel, so a signal
/// sent while the host is down is lost, as it is for a real process.
#[derive(Clone, Default)]
struct SignalSlot(Arc<Mutex<Option<mpsc::UnboundedSender<Signal>>>>);

impl SignalSlot {
    fn open(&self) -> ChannelSignals {
        let (sender, receiver) = mpsc::unbounded_channel();
        *lock(&self.0) = Some(sender);
        ChannelSignals(receiver)
    }

    /// Sends `signal` to the running boot; false when no boot is listening.
    fn send(&self, signal: Signal) -> bool {
        lock(&self.0).as_ref().is_some_and(|sender| sender.send(signal).is_ok())
    }
}

/// The gateway's signal source: whatever the driver loop sends.
struct ChannelSignals(mpsc::UnboundedReceiver<Signal>);

impl SignalSource for ChannelSignals {
    /// Cancel safe: tokio's `UnboundedReceiver::recv` is.
    async fn recv(&mut self) -> Option<Signal> {
        self.0.recv().await
    }
}

/// An in-memory journal file, shared by every boot of the host.
#[derive(Clone, Default)]
struct Memory(Arc<Mutex<Vec<u8>>>);

impl Write for Memory {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Memory {
    fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.0)).into_owned()
    }
}

/// Everything the gateway host keeps across boots; the factory clones it for each boot.
#[derive(Clone)]
struct GatewayHost<F> {
    /// The config file: read at each boot and at each reload.
    config: Arc<Mutex<Config>>,
    store: MemoryStore,
    signals: SignalSlot,
    boots: Arc<AtomicU32>,
    exits: Arc<Mutex<Vec<i32>>>,
    event_log: Memory,
    deliveries: Memory,
    /// Builds the boot's agent on the boot's clock.
    agent: F,
}

impl<F, A> GatewayHost<F>
where
    F: Fn(TokioClock) -> A + Clone + 'static,
    A: Agent,
{
    fn new(config: Config, agent: F) -> Self {
        Self {
            config: Arc::new(Mutex::new(config)),
            store: MemoryStore::new(),
            signals: SignalSlot::default(),
            boots: Arc::default(),
            exits: Arc::default(),
            event_log: Memory::default(),
            deliveries: Memory::default(),
            agent,
        }
    }

    /// One boot: start the daemon on the shared store, bind, serve until it exits.
    async fn boot(self) -> turmoil::Result {
        let boot = self.boots.fetch_add(1, Ordering::SeqCst) + 1;
        let clock = TokioClock::new();
        let config = lock(&self.config).clone();
        let file = Arc::clone(&self.config);
        let source = move || Ok::<_, ConfigReadError>(lock(&file).clone());
        let outputs = Outputs {
            event_log: Some(Box::new(self.event_log.clone())),
            deliveries: Some(Box::new(self.deliveries.clone())),
            dead_letters: None,
        };

        let signals = self.signals.open();
        let agent = (self.agent)(clock);
        let store = self.store.clone();
        let daemon = Daemon::new(config, boot, clock, signals, store, agent, source, outputs);
        let started = daemon.start().await;
        let listener = TcpListener::bind(("0.0.0.0", PORT)).await?;
        let served = started.serve(SimListener(listener)).await;

        lock(&self.exits).push(served.exit.code);
        Ok(())
    }

    fn install(&self, sim: &mut turmoil::Sim<'_>) {
        let host = self.clone();
        sim.host(GATEWAY, move || host.clone().boot());
    }
}

/// A connection split into reply lines and a request writer.
type Connection = (Lines<BufReader<ReadHalf<TcpStream>>>, WriteHalf<TcpStream>);

fn split(stream: TcpStream) -> Connection {
    let (read, write) = tokio::io::split(stream);
    (BufReader::new(read).lines(), write)
}

/// Connects to the gateway, giving up after `patience_ms` (a partitioned link may swallow the
/// handshake).
async fn connect(clock: &TokioClock, patience_ms: u64) -> io::Result<Connection> {
    let until_ms = clock.now_ms() + patience_ms;
    tokio::select! {
        biased;
        stream = TcpStream::connect((GATEWAY, PORT)) => stream.map(split),
        () = clock.sleep_until(until_ms) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// The `reply` field of a reply line.
fn reply_of(line: &str) -> String {
    let value: Value = serde_json::from_str(line).expect("the gateway replies in JSON");
    value["reply"].as_str().expect("every reply names itself").to_owned()
}

// ---------------------------------------------------------------------------------------------
// The world: retrying clients, link faults, a stop and a start of the gateway host.
// ---------------------------------------------------------------------------------------------

const CLIENTS: usize = 3;
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
// The differential test: the same crash-free scenario through the driver and through turmoil.
// ---------------------------------------------------------------------------------------------

/// How much later a message reaches the gateway than its client sends it: turmoil moves
/// messages between hosts only at tick boundaries, so even with zero latency a line written at
/// virtual `t` is read by the gateway one 1 ms tick later. Signals are sent this much later
/// too, so the whole turmoil run is the driver's run shifted by this constant.
const NETWORK_DELAY_MS: u64 = 1;

/// Scripted inputs closer than this to an input from another source (another client, or the
/// signal channel) may swap order in turmoil; scenarios with such pairs are skipped.
const INPUT_GAP_MS_MIN: u64 = 3;

/// Inputs before this time could beat the clients' connections; such scenarios are skipped.
const FIRST_INPUT_MS_MIN: u64 = 20;

/// A generated scenario with what this world does not model taken out: stops, boots, admission
/// faults, reconnects, cancels, agent outages and slow closes (the daemon closes at once).
fn crash_free(seed: u64) -> Scenario {
    let mut scenario = Generator::new(&Params::standard()).generate(seed);
    scenario.signals.retain(|s| s.kind == SignalKind::Reload);
    scenario.boots.clear();
    scenario.faults.clear();
    scenario.reconnects.clear();
    scenario.cancels.clear();
    scenario.outages.clear();
    scenario.close_ms.clear();
    scenario
}

/// The client that sends a channel's arrivals; the signal channel is source `CLIENTS`.
fn client_of(scenario: &Scenario, channel: &str) -> usize {
    let channels: BTreeSet<&str> = scenario.keys.iter().map(|k| k.channel.as_str()).collect();
    channels.iter().position(|c| *c == channel).expect("a known channel") % CLIENTS
}

/// Whether every input is far enough from every input of another source, and late enough.
fn well_spaced(scenario: &Scenario) -> bool {
    let mut inputs: Vec<(u64, usize)> = scenario
        .arrivals
        .iter()
        .map(|a| {
            let key = scenario.key(&a.key).expect("validated");
            (a.at_ms, client_of(scenario, key.channel.as_str()))
        })
        .chain(scenario.signals.iter().map(|s| (s.at_ms, CLIENTS)))
        .collect();
    inputs.sort_unstable();
    let late = inputs.first().is_none_or(|&(at_ms, _)| at_ms >= FIRST_INPUT_MS_MIN);
    late && inputs.windows(2).all(|w| w[0].1 == w[1].1 || w[1].0 - w[0].0 >= INPUT_GAP_MS_MIN)
}

/// Runs go as the scenario says for the nth run of each session, on the host's clock.
#[derive(Clone)]
struct ScriptedAgent {
    scenario: Arc<Scenario>,
    runs: Arc<Mutex<BTreeMap<SessionId, u32>>>,
    clock: TokioClock,
}

impl Agent for ScriptedAgent {
    fn run(&mut self, request: RunRequest) -> impl Future<Output = bool> + Send + 'static {
        let nth = {
            let mut runs = lock(&self.runs);
            let nth = runs.entry(request.session.clone()).or_insert(0);
            *nth += 1;
            *nth
        };
        let behaviour = self.scenario.run_behaviour(&request.session, nth);
        let end_ms = self.clock.now_ms() + behaviour.duration_ms;
        let clock = self.clock;
        async move {
            if behaviour.outcome == RunOutcome::Hang {
                std::future::pending::<()>().await;
            }
            clock.sleep_until(end_ms).await;
            behaviour.outcome == RunOutcome::Success
        }
    }
}

/// Sends its arrivals at their virtual times on one connection, reading replies as they come
/// and never retrying (the driver offers each arrival once). It keeps the connection open to
/// the end, since a channel's last connection closing flushes its debouncers.
async fn timed_client(lines: Vec<(u64, String)>) -> turmoil::Result {
    let clock = TokioClock::new();
    let (mut replies, mut requests) = loop {
        match connect(&clock, 1_000).await {
            Ok(connection) => break connection,
            Err(_) => clock.sleep_until(clock.now_ms() + 1).await,
        }
    };
    let mut lines = lines.into_iter().peekable();
    loop {
        let next_ms = lines.peek().map_or(u64::MAX, |(at_ms, _)| *at_ms);
        tokio::select! {
            biased;
            reply = replies.next_line() => {
                reply?.expect("the gateway keeps the connection open");
            }
            () = clock.sleep_until(next_ms) => {
                let (_, line) = lines.next().expect("a line is due");
                requests.write_all(line.as_bytes()).await?;
            }
        }
    }
}

fn wire_line(scenario: &Scenario, n: usize) -> String {
    let message = scenario.message(&scenario.arrivals[n]);
    let mut line = json!({
        "channel": message.channel.as_str(),
        "id": message.id.as_str(),
        "key": message.key.as_ref().map(|k| k.as_str()),
        "session": message.session.as_str(),
        "destination": message.destination.as_str(),
        "text": &*message.text,
        "debounce": message.debounce,
    });
    if let Some(window_ms) = message.window_ms {
        line["window_ms"] = json!(window_ms);
    }
    format!("{line}\n")
}

/// Every message's outcomes, by `channel/id`, from the driver, and the time of the last one.
fn driver_outcomes(scenario: &Scenario) -> (BTreeMap<String, Vec<String>>, u64) {
    let report = driver::run(scenario, &mut Unobserved, true);
    assert!(report.violation.is_none(), "{:?}", report.violation);
    let mut outcomes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut last_ms = 0;
    for entry in &report.entries {
        if let Entry::Core(stamped) = entry
            && let Event::Outcome { message, kind, .. } = &stamped.event
        {
            outcomes.entry(message.to_string()).or_default().push(kind.name().to_owned());
            last_ms = stamped.at_ms;
        }
    }
    (outcomes, last_ms)
}

/// Every message's outcomes, by `channel/id`, from the daemon's event log.
fn logged_outcomes(event_log: &str) -> BTreeMap<String, Vec<String>> {
    let mut outcomes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in event_log.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.get(3) != Some(&"outcome") {
            continue;
        }
        let field = |name: &str| {
            words.iter().find_map(|w| w.strip_prefix(name)).expect("outcome fields").to_owned()
        };
        outcomes.entry(field("message=")).or_default().push(field("kind="));
    }
    outcomes
}

/// How long turmoil runs past the driver's last outcome. The driver's world settles much later
/// (timers with nothing left to decide), but stepping turmoil through those idle minutes costs
/// seconds; an outcome turmoil gives late, or never, still shows as a missing one, and a second
/// outcome would have to come this long after the last expected one to go unseen.
const OUTCOME_MARGIN_MS: u64 = 5_000;

fn run_turmoil(seed: u64, scenario: &Scenario, last_outcome_ms: u64) -> turmoil::Result<String> {
    let horizon_ms = last_outcome_ms + NETWORK_DELAY_MS + OUTCOME_MARGIN_MS;
    let mut sim = simulation(seed, horizon_ms + 1_000);
    let shared = Arc::new(scenario.clone());
    let runs = Arc::default();
    let agent = move |clock| ScriptedAgent {
        scenario: Arc::clone(&shared),
        runs: Arc::clone(&runs),
        clock,
    };
    let gateway = GatewayHost::new(scenario.config.clone(), agent);
    gateway.install(&mut sim);

    let mut per_client: Vec<Vec<(u64, String)>> = vec![Vec::new(); CLIENTS];
    for (n, arrival) in scenario.arrivals.iter().enumerate() {
        let key = scenario.key(&arrival.key).expect("validated");
        per_client[client_of(scenario, key.channel.as_str())]
            .push((arrival.at_ms, wire_line(scenario, n)));
    }
    for (client, mut lines) in per_client.into_iter().enumerate() {
        lines.sort_by_key(|(at_ms, _)| *at_ms);
        sim.client(format!("client-{client}"), timed_client(lines));
    }

    let mut signals: Vec<_> = scenario.signals.iter().collect();
    signals.sort_by_key(|s| s.at_ms);
    let mut signals = signals.into_iter().peekable();
    loop {
        let now_ms = u64::try_from(sim.elapsed().as_millis()).expect("short simulations");
        while let Some(spec) = signals.next_if(|s| s.at_ms + NETWORK_DELAY_MS == now_ms) {
            if let Some(config) = &spec.config {
                *lock(&gateway.config) = config.clone();
            }
            assert!(gateway.signals.send(spec.signal()), "the gateway listens at {now_ms} ms");
        }
        if now_ms >= horizon_ms {
            break;
        }
        sim.step()?;
    }
    Ok(gateway.event_log.text())
}

/// Checks the premise of [`NETWORK_DELAY_MS`]: the gateway accepted each message exactly that
/// long after one of its arrivals.
fn check_arrival_times(seed: u64, scenario: &Scenario, event_log: &str) {
    let mut sent: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for arrival in &scenario.arrivals {
        let identity = scenario.message(arrival).identity().to_string();
        sent.entry(identity).or_default().insert(arrival.at_ms + NETWORK_DELAY_MS);
    }
    for line in event_log.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(identity) = words.get(4).and_then(|w| w.strip_prefix("message=")) else {
            continue;
        };
        if words.get(3) != Some(&"accepted") {
            continue;
        }
        let at_ms: u64 = words[0].parse().expect("an event line starts with its time");
        let times = &sent[identity];
        assert!(
            times.contains(&at_ms),
            "SEED={seed}: {identity} accepted at {at_ms}, sent {times:?}"
        );
    }
}

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
