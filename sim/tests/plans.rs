//! Historical plans: each one is caught by the damage it does, its committed minimal scenario
//! fails under it and holds under the SPEC plan, and shrinking keeps a failure's signature.

use std::path::PathBuf;

use quiesce::event::Phase;
use quiesce_sim::driver;
use quiesce_sim::explore::{self, Problem};
use quiesce_sim::find_time::{self, CONSEQUENCES};
use quiesce_sim::generate::{Generator, Params};
use quiesce_sim::oracle::{Invariant, Oracle};
use quiesce_sim::plan::Plan;
use quiesce_sim::scenario::Scenario;
use quiesce_sim::shrink::{self, Signature};

fn plan_file(plan: Plan) -> Scenario {
    let name = format!("plan-{}.toml", plan.name());
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(name);
    Scenario::from_file(&path).expect("committed scenarios parse")
}

/// The invariant a scenario fails under a plan, if any; a panic fails the test.
fn violated(scenario: &Scenario, plan: Plan) -> Option<Invariant> {
    match explore::check(scenario, plan, false).problem {
        None => None,
        Some(Problem::Violation(violation)) => Some(violation.invariant),
        Some(Problem::Panic(message)) => panic!("plan {plan} panicked: {message}"),
    }
}

#[test]
fn plan_files_fail_their_invariant_and_hold_under_spec() {
    let expected = [
        (Plan::NoDrain, Invariant::S1),
        (Plan::FlushIfBuffered, Invariant::S1),
        (Plan::DrainingFirst, Invariant::S1),
        (Plan::CountOne, Invariant::S6),
        (Plan::TightRetry, Invariant::L3),
    ];
    for (plan, invariant) in expected {
        let scenario = plan_file(plan);
        assert_eq!(violated(&scenario, plan), Some(invariant), "plan-{plan}.toml under {plan}");
        assert_eq!(violated(&scenario, Plan::Spec), None, "plan-{plan}.toml under spec");
    }
}

#[test]
fn every_plan_is_caught_by_a_consequence_within_fifty_seeds() {
    let generator = Generator::new(&Params::standard());
    for plan in Plan::HISTORICAL {
        let hunt = find_time::hunt(&generator, plan, 0, 50);
        assert!(hunt.found(), "{plan}: {:?}", hunt.failure);
        assert!(CONSEQUENCES.contains(&hunt.invariant().expect("a violation")), "{plan}");
    }
}

#[test]
fn spec_holds_where_the_plans_fail() {
    let generator = Generator::new(&Params::standard());
    for seed in 0..20 {
        assert_eq!(violated(&generator.generate(seed), Plan::Spec), None, "seed {seed}");
    }
}

#[test]
fn plan_names_round_trip() {
    for plan in Plan::ALL {
        assert_eq!(plan.name().parse::<Plan>(), Ok(plan));
    }
    let error = "hope".parse::<Plan>().expect_err("no such plan");
    assert!(error.contains("tight-retry"), "{error}");
}

#[test]
fn spec_plan_runs_the_spec_phases() {
    assert_eq!(Plan::Spec.phases(), Phase::ALL);
    assert_eq!(Plan::CountOne.phases(), Phase::ALL);
    assert_eq!(Plan::DrainingFirst.phases()[1], Phase::MarkDraining);
}

/// Under the SPEC's order, the draining-first plan breaks S3 first; under its own order the
/// oracle sees the damage instead.
#[test]
fn the_oracle_checks_restart_order_against_the_plan() {
    let scenario = plan_file(Plan::DrainingFirst);
    let plan = Plan::DrainingFirst;
    let spec_order = driver::run_plan(&scenario, plan, &mut Oracle::new(), false);
    assert_eq!(spec_order.violation.map(|v| v.invariant), Some(Invariant::S3));

    let own_order =
        driver::run_plan(&scenario, plan, &mut Oracle::with_phases(plan.phases()), false);
    assert_eq!(own_order.violation.map(|v| v.invariant), Some(Invariant::S1));
}

#[test]
fn shrinking_a_seed_keeps_its_signature_and_holds_under_spec() {
    let generator = Generator::new(&Params::standard());
    let plan = Plan::NoDrain;
    let original = shrink::failure(&generator.generate(10), plan).expect("seed 10 fails");
    let shrunk = shrink::shrink_seed(&generator, 10, plan).expect("it shrinks");

    assert_eq!(Signature::of(&shrunk.violation), Signature::of(&original));
    assert!(shrunk.after().messages < shrunk.before.messages);
    assert!(shrunk.after().messages <= 2, "{:?}", shrunk.after());
    assert_eq!(violated(&shrunk.scenario, Plan::Spec), None);
    let text = shrink::file_text(&shrunk, plan, "seed 10");
    let again = Scenario::from_toml_str(&text).expect("the written file reads back");
    assert_eq!(again, shrunk.scenario);
}

#[test]
fn a_scenario_that_holds_does_not_shrink() {
    let scenario = plan_file(Plan::NoDrain);
    assert_eq!(shrink::shrink_file(scenario, Plan::Spec).err(), Some(shrink::ShrinkError::Holds));
}

#[test]
fn signature_masks_numbers_only() {
    let violation =
        quiesce_sim::oracle::Violation::new(Invariant::S1, 5, "c0/m12 vanished from Buffer: lost");
    let signature = Signature::of(&violation);
    assert_eq!(signature.shape, "cN/mN vanished from Buffer: lost");
    assert_eq!(signature.invariant, Invariant::S1);
}

#[test]
fn time_to_find_reports_median_and_max() {
    let starts = find_time::starts(3);
    assert_eq!(starts, [0, 1_000_003, 2_000_006]);
    let rows = find_time::time_to_find(&Params::standard(), &[Plan::NoDrain], &starts, 50, 2);
    let row = &rows[0];
    assert_eq!(row.hunts.len(), 3);
    assert_eq!(row.found(), 3);
    assert!(row.max() >= 1 && row.max() <= 50);
    assert!(find_time::markdown(&rows).contains("| `no-drain` |"));
}
