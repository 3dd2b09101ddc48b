//! Exploration of the standard scenario (issue 6): what one seed costs, and where it goes.
//!
//! - `explore/standard`: what `explore` does per seed: generate, drive, check every invariant
//!   (no event log rendered). The target is 25,000 per second per core: 40 us per seed.
//! - `explore/generate`, `explore/drive`: the first two of those steps alone, so a regression
//!   points at its step.
//!
//! Each iteration takes the next seed of a fixed cycle, so the figure is a mean over many
//! different scenarios rather than one scenario's cost.
//!
//! Run: `cargo bench -p quiesce-sim --bench explore`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiesce_sim::driver::{self, Unobserved};
use quiesce_sim::explore::{self, Plan};
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
    group.finish();
}

criterion_group!(benches, event_jump);
criterion_main!(benches);
