//! The daemon in simulated worlds, shared by `tests/turmoil_world.rs` and the exploration
//! benchmark (`benches/explore.rs`, which includes this file by path).
//!
//! - A gateway host on turmoil's simulated network: the real daemon behind the [`Listener`]
//!   seam, a [`MemoryStore`] that outlives each boot, [`TokioClock`] on the host's paused
//!   runtime, and signals fed by the driver loop at the virtual millisecond it sends them.
//! - The differential runs: a crash-free generated scenario through the daemon, on turmoil
//!   ([`run_turmoil`]) or on a plain paused tokio runtime with in-memory connections
//!   ([`run_paused`]), read back as each message's outcomes from the daemon's event log, to
//!   compare with the event-jump driver's ([`driver_outcomes`]).
//!
//! # Limitations
//!
//! The differential runs leave out what these worlds do not model: stops and boots (crash
//! free by definition), admission faults (the daemon has no fault hooks), channel reconnects
//! and `cancel_key` (no wire request for them), agent outages, and slow closes (the daemon's
//! close is immediate). [`crash_free`] strips them from each generated scenario before every
//! run. Scenarios whose inputs from different sources fall within [`INPUT_GAP_MS_MIN`] of each
//! other, or start before [`FIRST_INPUT_MS_MIN`], are skipped rather than run with a tolerance.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use quiesce::adapter::TokioClock;
use quiesce::clock::Clock;
use quiesce::config::Config;
use quiesce::daemon::{Daemon, Listener, Outputs};
use quiesce::event::Event;
use quiesce::message::SessionId;
use quiesce::shell::{Agent, ConfigReadError, RunRequest};
use quiesce::signal::{Origin, Signal, SignalKind, SignalSource};
use quiesce::store::MemoryStore;
use quiesce_sim::driver::{self, Entry, Unobserved};
use quiesce_sim::generate::{Generator, Params};
use quiesce_sim::scenario::{RunOutcome, Scenario};
use serde_json::{Value, json};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream, Lines,
    ReadHalf, WriteHalf,
};
use tokio::sync::mpsc;
use turmoil::net::{TcpListener, TcpStream};

/// The channel clients of a world, one connection each.
pub(crate) const CLIENTS: usize = 3;
pub(crate) const GATEWAY: &str = "gateway";
pub(crate) const PORT: u16 = 7000;
pub(crate) const TERM: Signal = Signal { kind: SignalKind::Shutdown, origin: Origin::External };

/// A fixed epoch: turmoil's default is the real current time.
#[expect(
    clippy::disallowed_types,
    reason = "turmoil takes its epoch as a SystemTime; this one is a constant, not the wall clock"
)]
pub(crate) fn epoch() -> std::time::SystemTime {
    std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A turmoil simulation with every knob that matters set explicitly: seed, duration, epoch,
/// a 1 ms tick and no network latency (turmoil's default draws a random latency per message).
pub(crate) fn simulation<'a>(seed: u64, duration_ms: u64) -> turmoil::Sim<'a> {
    turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(epoch())
        .simulation_duration(Duration::from_millis(duration_ms))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::ZERO)
        .max_message_latency(Duration::ZERO)
        .build()
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// turmoil's TCP listener behind the daemon's listener seam.
pub(crate) struct SimListener(TcpListener);

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
pub(crate) struct SignalSlot(Arc<Mutex<Option<mpsc::UnboundedSender<Signal>>>>);

impl SignalSlot {
    pub(crate) fn open(&self) -> ChannelSignals {
        let (sender, receiver) = mpsc::unbounded_channel();
        *lock(&self.0) = Some(sender);
        ChannelSignals(receiver)
    }

    /// Sends `signal` to the running boot; false when no boot is listening.
    pub(crate) fn send(&self, signal: Signal) -> bool {
        lock(&self.0).as_ref().is_some_and(|sender| sender.send(signal).is_ok())
    }
}

/// The gateway's signal source: whatever the driver loop sends.
pub(crate) struct ChannelSignals(mpsc::UnboundedReceiver<Signal>);

impl SignalSource for ChannelSignals {
    /// Cancel safe: tokio's `UnboundedReceiver::recv` is.
    async fn recv(&mut self) -> Option<Signal> {
        self.0.recv().await
    }
}

/// An in-memory journal file, shared by every boot of the host.
#[derive(Clone, Default)]
pub(crate) struct Memory(Arc<Mutex<Vec<u8>>>);

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
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.0)).into_owned()
    }
}

/// Everything the gateway host keeps across boots; the factory clones it for each boot.
#[derive(Clone)]
pub(crate) struct GatewayHost<F> {
    /// The config file: read at each boot and at each reload.
    pub(crate) config: Arc<Mutex<Config>>,
    pub(crate) store: MemoryStore,
    pub(crate) signals: SignalSlot,
    pub(crate) boots: Arc<AtomicU32>,
    pub(crate) exits: Arc<Mutex<Vec<i32>>>,
    pub(crate) event_log: Memory,
    pub(crate) deliveries: Memory,
    /// Builds the boot's agent on the boot's clock.
    pub(crate) agent: F,
}

impl<F, A> GatewayHost<F>
where
    F: Fn(TokioClock) -> A + Clone + 'static,
    A: Agent,
{
    pub(crate) fn new(config: Config, agent: F) -> Self {
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
    pub(crate) async fn boot(self) -> turmoil::Result {
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

    pub(crate) fn install(&self, sim: &mut turmoil::Sim<'_>) {
        let host = self.clone();
        sim.host(GATEWAY, move || host.clone().boot());
    }
}

/// A connection split into reply lines and a request writer.
pub(crate) type Connection = (Lines<BufReader<ReadHalf<TcpStream>>>, WriteHalf<TcpStream>);

pub(crate) fn split(stream: TcpStream) -> Connection {
    let (read, write) = tokio::io::split(stream);
    (BufReader::new(read).lines(), write)
}

/// Connects to the gateway, giving up after `patience_ms` (a partitioned link may swallow the
/// handshake).
pub(crate) async fn connect(clock: &TokioClock, patience_ms: u64) -> io::Result<Connection> {
    let until_ms = clock.now_ms() + patience_ms;
    tokio::select! {
        biased;
        stream = TcpStream::connect((GATEWAY, PORT)) => stream.map(split),
        () = clock.sleep_until(until_ms) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// The `reply` field of a reply line.
pub(crate) fn reply_of(line: &str) -> String {
    let value: Value = serde_json::from_str(line).expect("the gateway replies in JSON");
    value["reply"].as_str().expect("every reply names itself").to_owned()
}

// ---------------------------------------------------------------------------------------------
// The differential run on turmoil: a crash-free scenario's arrivals sent at their times.
// ---------------------------------------------------------------------------------------------

/// How much later a message reaches the gateway than its client sends it: turmoil moves
/// messages between hosts only at tick boundaries, so even with zero latency a line written at
/// virtual `t` is read by the gateway one 1 ms tick later. Signals are sent this much later
/// too, so the whole turmoil run is the driver's run shifted by this constant.
pub(crate) const NETWORK_DELAY_MS: u64 = 1;

/// Scripted inputs closer than this to an input from another source (another client, or the
/// signal channel) may swap order in turmoil; scenarios with such pairs are skipped.
pub(crate) const INPUT_GAP_MS_MIN: u64 = 3;

/// Inputs before this time could beat the clients' connections; such scenarios are skipped.
pub(crate) const FIRST_INPUT_MS_MIN: u64 = 20;

/// A generated scenario with what this world does not model taken out: stops, boots, admission
/// faults, reconnects, cancels, agent outages and slow closes (the daemon closes at once).
pub(crate) fn crash_free(seed: u64) -> Scenario {
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
pub(crate) fn client_of(scenario: &Scenario, channel: &str) -> usize {
    let channels: BTreeSet<&str> = scenario.keys.iter().map(|k| k.channel.as_str()).collect();
    channels.iter().position(|c| *c == channel).expect("a known channel") % CLIENTS
}

/// Whether every input is far enough from every input of another source, and late enough.
pub(crate) fn well_spaced(scenario: &Scenario) -> bool {
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
pub(crate) struct ScriptedAgent {
    pub(crate) scenario: Arc<Scenario>,
    pub(crate) runs: Arc<Mutex<BTreeMap<SessionId, u32>>>,
    pub(crate) clock: TokioClock,
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
pub(crate) async fn timed_client(lines: Vec<(u64, String)>) -> turmoil::Result {
    let clock = TokioClock::new();
    let (replies, requests) = loop {
        match connect(&clock, 1_000).await {
            Ok(connection) => break connection,
            Err(_) => clock.sleep_until(clock.now_ms() + 1).await,
        }
    };
    send_at_times(&clock, replies, requests, lines).await?;
    Ok(())
}

/// Writes each line at its virtual time and reads replies as they come, until the gateway
/// closes the connection (an error) or forever.
pub(crate) async fn send_at_times<R, W>(
    clock: &TokioClock,
    mut replies: Lines<BufReader<R>>,
    mut requests: W,
    lines: Vec<(u64, String)>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
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

pub(crate) fn wire_line(scenario: &Scenario, n: usize) -> String {
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
pub(crate) fn driver_outcomes(scenario: &Scenario) -> (BTreeMap<String, Vec<String>>, u64) {
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
pub(crate) fn logged_outcomes(event_log: &str) -> BTreeMap<String, Vec<String>> {
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
pub(crate) const OUTCOME_MARGIN_MS: u64 = 5_000;

pub(crate) fn run_turmoil(
    seed: u64,
    scenario: &Scenario,
    last_outcome_ms: u64,
) -> turmoil::Result<String> {
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

    for (client, lines) in client_lines(scenario).into_iter().enumerate() {
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
pub(crate) fn check_arrival_times(seed: u64, scenario: &Scenario, event_log: &str) {
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

/// Each client's wire lines with their send times, in time order.
pub(crate) fn client_lines(scenario: &Scenario) -> Vec<Vec<(u64, String)>> {
    let mut per_client: Vec<Vec<(u64, String)>> = vec![Vec::new(); CLIENTS];
    for (n, arrival) in scenario.arrivals.iter().enumerate() {
        let key = scenario.key(&arrival.key).expect("validated");
        per_client[client_of(scenario, key.channel.as_str())]
            .push((arrival.at_ms, wire_line(scenario, n)));
    }
    for lines in &mut per_client {
        lines.sort_by_key(|(at_ms, _)| *at_ms);
    }
    per_client
}

// ---------------------------------------------------------------------------------------------
// The same differential run on a plain paused tokio runtime: in-memory pipes, no network.
// ---------------------------------------------------------------------------------------------

/// [`timed_client`] on an in-memory pipe: a line sent at `t` is read at `t`, with no tick of
/// network delay.
pub(crate) async fn piped_client(pipe: DuplexStream, lines: Vec<(u64, String)>) -> io::Result<()> {
    let clock = TokioClock::new();
    let (read, requests) = tokio::io::split(pipe);
    send_at_times(&clock, BufReader::new(read).lines(), requests, lines).await
}

/// Runs a crash-free scenario through the daemon on a current-thread tokio runtime started
/// paused, up to [`OUTCOME_MARGIN_MS`] past the driver's last outcome; returns the event log.
pub(crate) fn run_paused(scenario: &Scenario, last_outcome_ms: u64) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    runtime.block_on(paused_world(scenario, last_outcome_ms + OUTCOME_MARGIN_MS))
}

async fn paused_world(scenario: &Scenario, horizon_ms: u64) -> String {
    let clock = TokioClock::new();
    let config = Arc::new(Mutex::new(scenario.config.clone()));
    let file = Arc::clone(&config);
    let source = move || Ok::<_, ConfigReadError>(lock(&file).clone());
    let event_log = Memory::default();
    let outputs = Outputs {
        event_log: Some(Box::new(event_log.clone())),
        deliveries: None,
        dead_letters: None,
    };
    let signals = SignalSlot::default();
    let agent = ScriptedAgent { scenario: Arc::new(scenario.clone()), runs: Arc::default(), clock };
    let daemon = Daemon::new(
        scenario.config.clone(),
        1,
        clock,
        signals.open(),
        MemoryStore::new(),
        agent,
        source,
        outputs,
    );
    let started = daemon.start().await;

    let (dialer, listener) = quiesce::daemon::pipes();
    for lines in client_lines(scenario) {
        let client = dialer.dial().expect("the listener is alive");
        tokio::spawn(piped_client(client, lines));
    }
    let script = async {
        let mut specs: Vec<_> = scenario.signals.iter().collect();
        specs.sort_by_key(|s| s.at_ms);
        for spec in specs {
            clock.sleep_until(spec.at_ms).await;
            if let Some(next) = &spec.config {
                *lock(&config) = next.clone();
            }
            assert!(signals.send(spec.signal()), "the gateway listens at {} ms", spec.at_ms);
        }
        clock.sleep_until(horizon_ms).await;
    };
    tokio::select! {
        biased;
        () = script => {}
        served = started.serve(listener) => panic!("the daemon exited early: {:?}", served.exit),
    }
    event_log.text()
}
