//! Determinism: a seed gives the same event log byte for byte, twice in one process and in
//! another process. A mismatch names the first divergent event and its virtual time.

use std::process::Command;

use quiesce_sim::driver::{self, Entry};
use quiesce_sim::generate::{Generator, Params};
use quiesce_sim::log;
use quiesce_sim::oracle::Oracle;

fn entries(generator: &Generator, seed: u64) -> Vec<Entry> {
    let report = driver::run(&generator.generate(seed), &mut Oracle::new(), true);
    assert_eq!(report.violation, None, "seed {seed}");
    report.entries
}

#[test]
fn two_hundred_seeds_run_twice_alike() {
    let generator = Generator::new(&Params::standard());
    for seed in 0..200 {
        let first = entries(&generator, seed);
        let second = entries(&generator, seed);
        if let Some((index, what)) = log::first_divergence(&first, &second) {
            panic!("seed {seed} diverged at event {index}: {what}");
        }
        assert_eq!(log::render(&first), log::render(&second), "seed {seed}");
    }
}

#[test]
fn another_process_replays_the_same_log() {
    let seed = 7;
    let here = log::render(&entries(&Generator::new(&Params::standard()), seed));
    let output = Command::new(env!("CARGO_BIN_EXE_quiesce-sim"))
        .args(["replay", "--seed", &seed.to_string()])
        .output()
        .expect("the simulator runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let there = String::from_utf8(output.stdout).expect("the log is text");
    let there: Vec<&str> = there
        .lines()
        .filter(|line| line.starts_with(' ') || line.starts_with(char::is_numeric))
        .collect();
    let here: Vec<&str> = here.lines().collect();
    let first_difference = here.iter().zip(&there).position(|(a, b)| a != b);
    assert_eq!(
        first_difference,
        None,
        "first divergent line: {:?}",
        first_difference.map(|i| (here[i], there[i]))
    );
    assert_eq!(here.len(), there.len());
}
