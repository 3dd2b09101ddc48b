//! The core's hot path against the limits of DESIGN "Performance targets" (issue 6).
//!
//! - `core/accept_10k_keys`: one `Gateway::accept` into a debounce buffer while 10,000 keys
//!   hold one (target: at most 200 ns). Dedupe memory is full, as on a busy gateway.
//! - `core/flush_all_10k_buffers`: `Debouncer::flush_all` of 10,000 buffers into a real
//!   pipeline over 1,000 sessions (target: at most 5 ms); `..._counted` is the debouncer's own
//!   share, the batches only counted.
//! - `core/queue_append_drain`: 101 batches admitted to one session (the first starts a run,
//!   the rest wait in its followup queue), then drained run by run to empty.
//! - memory per buffered message: printed before the timings, measured as the growth of the
//!   process's resident memory while 1,000,000 messages are buffered.
//!
//! Run: `cargo bench -p quiesce --bench core`. A benchmark, not a test: CI only builds it.

#![expect(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "a benchmark measures wall time, and reads /proc for the memory figure"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use quiesce::config::{Config, QueueMode, QueueSettings};
use quiesce::debounce::Debouncer;
use quiesce::effect::Outbox;
use quiesce::event::FlushCause;
use quiesce::gateway::{Gateway, NoHooks, Reply};
use quiesce::message::{Batch, Message, Work};
use quiesce::pipeline::Pipeline;

const LIVE_KEYS: usize = 10_000;
/// Long enough that no buffer comes due while a benchmark runs.
const WINDOW_MS: u64 = 3_600_000;
/// Accepts timed against one gateway before a fresh one is built (untimed), so buffers stay
/// short and memory bounded however many iterations criterion asks for.
const ACCEPTS_PER_GATEWAY: u64 = 10_000;

fn message(n: usize, key: usize, session: usize) -> Message {
    Message {
        channel: "telegram".into(),
        id: format!("m{n}").as_str().into(),
        key: Some(format!("k{key}").as_str().into()),
        session: format!("s{session}").as_str().into(),
        destination: format!("chat-{key}").as_str().into(),
        text: "a short line of chat".into(),
        debounce: true,
        window_ms: None,
    }
}

/// A started gateway whose debouncer holds one message for each of `LIVE_KEYS` keys.
fn gateway_with_live_keys() -> Gateway {
    let mut config = Config::default();
    config.inbound.window_ms = WINDOW_MS;
    config.inbound.keys_max = 2 * LIVE_KEYS;
    let mut gateway = Gateway::new(config, 1, Box::new(NoHooks));
    gateway.start(0, None);
    for key in 0..LIVE_KEYS {
        let reply = gateway.accept(0, message(key, key, key % 1_000));
        assert_eq!(reply, Reply::Accepted);
    }
    drop(gateway.take_events());
    gateway
}

fn accept(c: &mut Criterion) {
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(1));
    group.bench_function("accept_10k_keys", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let count = (iters - done).min(ACCEPTS_PER_GATEWAY);
                total += time_accepts(count as usize);
                done += count;
            }
            total
        })
    });
    group.finish();
}

/// Times `count` accepts into existing buffers, the events taken every thousand as a shell
/// would.
fn time_accepts(count: usize) -> Duration {
    let mut gateway = gateway_with_live_keys();
    let messages: Vec<Message> = (0..count)
        .map(|n| {
            let key = n % LIVE_KEYS;
            message(LIVE_KEYS + n, key, key % 1_000)
        })
        .collect();
    let started = Instant::now();
    for (n, message) in messages.into_iter().enumerate() {
        black_box(gateway.accept(1, message));
        if n % 1_000 == 999 {
            black_box(gateway.take_events());
        }
    }
    started.elapsed()
}

/// One run per queued batch, no quiet wait before the drain, room for every batch.
fn queue_settings() -> QueueSettings {
    let defaults = Config::default().queue_settings(&"s0".into(), &"telegram".into());
    QueueSettings { mode: QueueMode::Followup, cap: 10 * QUEUED, quiet_ms: 0, ..defaults }
}

fn flush_all(c: &mut Criterion) {
    let setup = || {
        let mut debouncer = Debouncer::new("telegram".into(), WINDOW_MS, 2 * LIVE_KEYS);
        let mut refuse = |_: Batch, _: FlushCause| false;
        for key in 0..LIVE_KEYS {
            debouncer.offer(0, message(key, key, key % 1_000), &mut refuse);
        }
        (debouncer, Pipeline::new(60_000, 3), Outbox::default())
    };
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(LIVE_KEYS as u64));
    let settings = queue_settings();
    group.bench_function("flush_all_10k_buffers", |b| {
        b.iter_batched(
            setup,
            |(mut debouncer, mut pipeline, mut out)| {
                let mut admit = |batch: Batch, _: FlushCause| {
                    pipeline.admit(Work::fresh(batch), settings, &mut out).is_ok()
                };
                let report = debouncer.flush_all(0, 1, FlushCause::FlushAll, &mut admit);
                assert_eq!(report.flushed, LIVE_KEYS);
                (debouncer, pipeline, out)
            },
            BatchSize::LargeInput,
        )
    });
    // The debouncer's share alone: the same flush into a sink that only counts the batches.
    group.bench_function("flush_all_10k_buffers_counted", |b| {
        b.iter_batched(
            setup,
            |(mut debouncer, pipeline, out)| {
                let mut count = |_: Batch, _: FlushCause| true;
                let report = debouncer.flush_all(0, 1, FlushCause::FlushAll, &mut count);
                assert_eq!(report.flushed, LIVE_KEYS);
                (debouncer, pipeline, out)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

const QUEUED: usize = 100;

fn queue_append_drain(c: &mut Criterion) {
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(QUEUED as u64 + 1));
    let batches: Vec<Batch> = (0..=QUEUED).map(|n| Batch::single(message(n, 0, 0))).collect();
    let settings = queue_settings();
    group.bench_function("queue_append_drain", |b| {
        b.iter(|| {
            let mut pipeline = Pipeline::new(60_000, 3);
            let mut out = Outbox::default();
            for batch in &batches {
                let admitted = pipeline.admit(Work::fresh(batch.clone()), settings, &mut out);
                assert!(admitted.is_ok());
            }
            let mut runs = 0;
            while let Some(run) = first_run(&pipeline) {
                pipeline.run_finished(run, true, &mut out);
                pipeline.tick(&mut out);
                runs += 1;
            }
            assert_eq!(pipeline.queued_count(), 0);
            black_box(runs)
        })
    });
    group.finish();
}

fn first_run(pipeline: &Pipeline) -> Option<quiesce::event::RunId> {
    pipeline.runs().next().map(|run| run.id)
}

/// The process's resident memory in bytes, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4_096)
}

/// Buffers 1,000,000 messages over `LIVE_KEYS` keys and prints the resident memory it took per
/// message, the message's own strings included.
fn memory_per_buffered_message() {
    const MESSAGES: usize = 1_000_000;
    let before = resident_bytes();
    let mut debouncer = Debouncer::new("telegram".into(), WINDOW_MS, 2 * LIVE_KEYS);
    let mut refuse = |_: Batch, _: FlushCause| false;
    for n in 0..MESSAGES {
        debouncer.offer(0, message(n, n % LIVE_KEYS, n % 1_000), &mut refuse);
    }
    assert_eq!(debouncer.buffered_count(), MESSAGES);
    match (before, resident_bytes()) {
        (Some(before), Some(after)) => {
            let per_message = after.saturating_sub(before) as f64 / MESSAGES as f64;
            println!(
                "memory per buffered message: {per_message:.0} bytes (growth of resident memory)"
            );
        }
        _ => println!("memory per buffered message: /proc/self/statm unreadable"),
    }
    black_box(debouncer);
}

criterion_group!(benches, accept, flush_all, queue_append_drain);

fn main() {
    memory_per_buffered_message();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
