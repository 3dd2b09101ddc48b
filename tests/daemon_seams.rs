//! The daemon on its seams, in process and on paused time: in-memory connections instead of
//! sockets, scripted signals, an in-memory state store and in-memory journal files. This is
//! how a simulated network (turmoil) plugs in, and it pins the order of a boot, a reload, a
//! stop and the next boot without a real process.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use quiesce::adapter::TokioClock;
use quiesce::config::Config;
use quiesce::daemon::{Daemon, DelayAgent, Outputs, PipeDialer, PipeListener, Served, Started};
use quiesce::shell::ConfigReadError;
use quiesce::signal::{Origin, ScriptedSignals, Signal, SignalKind};
use quiesce::store::MemoryStore;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const USR1: Signal = Signal { kind: SignalKind::Reload, origin: Origin::External };
const TERM: Signal = Signal { kind: SignalKind::Shutdown, origin: Origin::External };

/// An in-memory journal file a test reads back.
#[derive(Clone, Default)]
struct Memory(Arc<Mutex<Vec<u8>>>);

impl Write for Memory {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("no writer panicked").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Memory {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("no writer panicked")).into_owned()
    }
}

/// One boot's daemon on the shared store, with its own journal files.
struct Boot {
    started: Started<TokioClock>,
    dial: PipeDialer,
    listener: PipeListener,
    deliveries: Memory,
    events: Memory,
}

fn config() -> Config {
    let mut config = Config::default();
    config.inbound.window_ms = 50;
    config.queue.quiet_ms = 5;
    config.stop.deadline_ms = 100;
    config
}

async fn boot(n: u32, store: &MemoryStore, schedule: &[(u64, Signal)], run_ms: u64) -> Boot {
    let clock = TokioClock::new();
    let (deliveries, events) = (Memory::default(), Memory::default());
    let outputs = Outputs {
        event_log: Some(Box::new(events.clone())),
        deliveries: Some(Box::new(deliveries.clone())),
        dead_letters: None,
    };
    let signals = ScriptedSignals::new(schedule.iter().copied(), clock);
    let agent = DelayAgent::new(clock, run_ms);
    let source = || Ok::<_, ConfigReadError>(config());
    let daemon = Daemon::new(config(), n, clock, signals, store.clone(), agent, source, outputs);

    let started = daemon.start().await;
    let (dial, listener) = quiesce::daemon::pipes();
    Boot { started, dial, listener, deliveries, events }
}

/// Connects to the boot and sends `lines`, returning the reply lines.
async fn exchange(dial: &PipeDialer, lines: &[String]) -> Vec<String> {
    let client = dial.dial().expect("the listener is there");
    let (read, mut write) = tokio::io::split(client);
    let mut replies = BufReader::new(read).lines();

    let mut got = Vec::new();
    for line in lines {
        write.write_all(format!("{line}\n").as_bytes()).await.expect("sent");
        got.push(replies.next_line().await.expect("read").expect("a reply"));
    }
    got
}

fn message(id: &str) -> String {
    format!(
        r#"{{"channel":"tg","id":"{id}","key":"k","session":"s","destination":"k","text":"{id}"}}"#
    )
}

#[tokio::test(start_paused = true)]
async fn stop_during_a_reload_saves_to_the_store_and_the_next_boot_delivers() {
    let store = MemoryStore::new();
    let first = boot(1, &store, &[(200, USR1), (1_000, TERM)], 60_000).await;
    let serving = tokio::spawn(first.started.serve(first.listener));

    let replies = exchange(&first.dial, &[message("m1"), message("m2")]).await;
    let Served { exit, .. } = serving.await.expect("the first boot ends");

    assert_eq!(replies.len(), 2);
    assert!(replies.iter().all(|r| r.starts_with(r#"{"reply":"accepted""#)), "{replies:?}");
    assert_eq!(exit.code, 0);
    assert_eq!((exit.messages_saved, first.deliveries.text()), (2, String::new()));
    let events = first.events.text();
    assert!(events.contains(" b1 g0 became_stop "), "the stop overtook the reload:\n{events}");

    let second = boot(2, &store, &[(500, TERM)], 10).await;
    assert_eq!(second.started.restored(), 2);
    let served = second.started.serve(second.listener).await;

    assert_eq!(served.exit.code, 0);
    assert_eq!(served.journal.delivered, 2);
    let delivered = second.deliveries.text();
    let both = r#"[{"channel":"tg","id":"m1","key":"k"},{"channel":"tg","id":"m2","key":"k"}]"#;
    assert!(delivered.contains(&format!(r#""messages":{both}"#)), "{delivered}");
    assert!(second.events.text().contains(" b2 g0 state_restored messages=[tg/m1,tg/m2]"));
}

#[tokio::test(start_paused = true)]
async fn status_and_reload_control_lines() {
    let store = MemoryStore::new();
    let boot = boot(1, &store, &[(5_000, TERM)], 10).await;
    let serving = tokio::spawn(boot.started.serve(boot.listener));

    let lines = [r#"{"control":"reload"}"#.to_owned(), r#"{"control":"status"}"#.to_owned()];
    let replies = exchange(&boot.dial, &lines).await;

    assert_eq!(replies[0], r#"{"reply":"reload"}"#);
    assert!(replies[1].starts_with(r#"{"reply":"status","boot":1,"generation":1,"#), "{replies:?}");
    assert_eq!(serving.await.expect("the boot ends").exit.code, 0);
    assert!(boot.events.text().contains(" signal kind=reload origin=internal"));
}
