//! Coverage: a batch of seeds reaches every interesting situation the generator aims at, so a
//! passing exploration means something.

use quiesce_sim::driver;
use quiesce_sim::generate::{Generator, Params};
use quiesce_sim::oracle::{Coverage, Oracle};

#[test]
fn two_thousand_seeds_reach_every_fact() {
    let generator = Generator::new(&Params::standard());
    let mut coverage = Coverage::default();
    for seed in 0..2_000 {
        let mut oracle = Oracle::new();
        let report = driver::run(&generator.generate(seed), &mut oracle, false);
        assert_eq!(report.violation, None, "seed {seed}");
        coverage.merge(oracle.coverage());
    }
    let missed: Vec<&str> =
        coverage.facts().filter(|(_, n)| *n == 0).map(|(fact, _)| fact).collect();
    assert!(missed.is_empty(), "never reached: {missed:?}");
}
