//! The property test: every invariant holds in generated worlds.
//!
//! proptest draws structured scenarios from the same strategy `explore` uses, so a failure
//! shrinks to a small scenario, and is saved under the top-level `proptest-regressions/`,
//! replayed before new cases on every run. The case count follows `PROPTEST_CASES`.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use quiesce_sim::driver;
use quiesce_sim::generate::{Params, scenario_strategy};
use quiesce_sim::log;
use quiesce_sim::oracle::Oracle;

fn config() -> ProptestConfig {
    let regressions =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../proptest-regressions/properties.txt");
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_invariant_holds(scenario in scenario_strategy(&Params::standard())) {
        let report = driver::run(&scenario, &mut Oracle::new(), true);
        if let Some(violation) = report.violation {
            let tail = log::render(&report.entries[report.entries.len().saturating_sub(30)..]);
            prop_assert!(false, "{violation}\n{tail}");
        }
    }
}
