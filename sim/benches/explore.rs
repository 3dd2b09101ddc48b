//! Exploration of the standard scenario (issue 6): what one seed costs, and where it goes.
//!
//! - `explore/standard`: what `explore` does per seed: generate, drive, check every invariant
//!   (no event log rendered). The target is 25,000 per second per core: 40 us per seed.
//! - `explore/generate`, `explore/drive`: the first two of those steps alone, so a regression
//!   points at its step.
//! - `explore/jobs_1`, `explore/jobs_2`: `explore` itself over 2,000 seeds on one and two
//!   threads (target: two jobs at least 1.8 times one job on two cores).
//!
//! - `worlds/*`: the same crash-free scenarios (the standard scenario with what the daemon's
//!   worlds do not model taken out, see `tests/support/worlds.rs`) through the event-jump
//!   driver, through the daemon on a paused tokio runtime, and through the daemon on turmoil.
//!   Each world's run is checked to give every message the driver's outcome before it is
//!   timed. docs/PERFORMANCE.md reports them as ratios to the event-jump driver.
//!
//! Each iteration takes the next seed of a fixed cycle, so the figure is a mean over many
//! different scenarios rather than one scenario's cost.
//!
//! Run: `cargo bench -p quiesce-sim --bench explore`.

#[path = "../tests/support/worlds.rs"]
#[allow(dead_code, reason = "the turmoil world's own clients are for its tests")]
mod worlds;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiesce_sim::driver::{self, Unobserved};
use std::sync::atomic::AtomicU64;

use quiesce_sim::explore::{self, Exploration, Plan, Shard};
use quiesce_sim::generate::{Generator, Params};
use quiesce_sim::scenario::Scenario;

/// How many different seeds each benchmark cycles through.
const SEEDS: u64 = 1_000;

fn standard() -> Generator {
    Generator::new(&Params::standard())
}

/// Seeds 0, 1, ..., SEEDS - 1, 0, ... one per call.
fn cycle() -> impl FnMut() -> u64 {
    let mut next = 0;
    move || {
        let seed = next;
        next = (next + 1) % SEEDS;
        seed
    }
}

fn event_jump(c: &mut Criterion) {
    let generator = standard();
    let scenarios: Vec<Scenario> = (0..SEEDS).map(|seed| generator.generate(seed)).collect();
    let mut group = c.benchmark_group("explore");
    group.throughput(Throughput::Elements(1));

    let mut seed = cycle();
    group.bench_function("standard", |b| {
        b.iter(|| {
            let checked = explore::check_seed(&generator, seed(), Plan::Spec, false);
            assert!(
                checked.problem.is_none(),
                "the standard scenario failed: {:?}",
                checked.problem
            );
            black_box(checked.report.events)
        })
    });

    let mut seed = cycle();
    group.bench_function("generate", |b| b.iter(|| black_box(generator.generate(seed()))));

    let mut seed = cycle();
    group.bench_function("drive", |b| {
        b.iter(|| {
            let scenario = &scenarios[seed() as usize];
            black_box(driver::run(scenario, &mut Unobserved, false).events)
        })
    });

    for jobs in [1, 2] {
        let exploration = Exploration {
            params: Params::standard(),
            plan: Plan::Spec,
            start: 0,
            seeds: JOB_SEEDS,
            shard: Shard::default(),
            jobs,
        };
        group.throughput(Throughput::Elements(JOB_SEEDS));
        group.sample_size(10);
        group.bench_function(format!("jobs_{jobs}"), |b| {
            b.iter(|| {
                let summary = explore::explore(&exploration, &AtomicU64::new(0));
                assert!(summary.failures.is_empty(), "{:?}", summary.first_failure());
                black_box(summary.seeds_run)
            })
        });
    }
    group.finish();
}

/// Seeds per run of the job-scaling benchmarks.
const JOB_SEEDS: u64 = 2_000;

/// How many crash-free scenarios the world comparison cycles through.
const WORLD_SCENARIOS: usize = 10;

/// The first well-spaced crash-free scenarios, each with the driver's last outcome time, and
/// checked once through both worlds.
fn world_scenarios() -> Vec<(u64, Scenario, u64)> {
    let spaced = (0..).filter(|&seed| worlds::well_spaced(&worlds::crash_free(seed)));
    let chosen: Vec<_> = spaced
        .take(WORLD_SCENARIOS)
        .map(|seed| {
            let scenario = worlds::crash_free(seed);
            let (expected, last_ms) = worlds::driver_outcomes(&scenario);
            let paused = worlds::logged_outcomes(&worlds::run_paused(&scenario, last_ms));
            assert_eq!(paused, expected, "SEED={seed}: the paused runtime disagrees");
            let turmoil = worlds::run_turmoil(seed, &scenario, last_ms).expect("turmoil runs");
            assert_eq!(worlds::logged_outcomes(&turmoil), expected, "SEED={seed}: turmoil");
            (seed, scenario, last_ms)
        })
        .collect();
    chosen
}

fn worlds(c: &mut Criterion) {
    let scenarios = world_scenarios();
    let mut group = c.benchmark_group("worlds");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);

    let mut turn = cycle();
    let mut next = || &scenarios[(turn() % WORLD_SCENARIOS as u64) as usize];
    group.bench_function("event_jump", |b| {
        b.iter(|| black_box(driver::run(&next().1, &mut Unobserved, false).events))
    });
    group.bench_function("tokio_paused", |b| {
        b.iter(|| {
            let (_, scenario, last_ms) = next();
            black_box(worlds::run_paused(scenario, *last_ms).len())
        })
    });
    group.bench_function("turmoil", |b| {
        b.iter(|| {
            let (seed, scenario, last_ms) = next();
            black_box(worlds::run_turmoil(*seed, scenario, *last_ms).expect("turmoil runs").len())
        })
    });
    group.finish();
}

criterion_group!(benches, event_jump, worlds);
criterion_main!(benches);
