//! Event-log snapshots, reviewed like code: the field reports F1 to F10, a few named seeds, and
//! the minimal scenario of each historical plan run under that plan.
//!
//! A change in the core's behaviour shows up here as a diff of event logs. Review it with
//! `cargo insta review`; CI fails on any unreviewed change and never writes a snapshot.

use std::path::PathBuf;

use quiesce_sim::driver;
use quiesce_sim::explore;
use quiesce_sim::generate::{GENERATOR_VERSION, Generator, Params};
use quiesce_sim::log;
use quiesce_sim::oracle::Oracle;
use quiesce_sim::plan::Plan;
use quiesce_sim::scenario::Scenario;

/// Asserts the rendered log against `snapshots/<name>.snap` at the top of the repository.
fn assert_log(name: &str, scenario: &Scenario) {
    let report = driver::run(scenario, &mut Oracle::new(), true);
    assert_eq!(report.violation, None, "{name}");
    assert_snapshot(name, log::render(&report.entries));
}

fn assert_snapshot(name: &str, text: String) {
    insta::with_settings!({
        snapshot_path => "../../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, text);
    });
}

/// Asserts a historical plan's minimal scenario, run under that plan, against its snapshot:
/// the log up to the violation, then the verdict.
fn assert_plan_log(plan: Plan) {
    let name = format!("plan-{}", plan.name());
    let scenario = field_report(&format!("{name}.toml"));
    let checked = explore::check(&scenario, plan, true);
    let problem = checked.problem.expect("a plan's minimal scenario fails under its plan");
    assert_snapshot(&name, format!("{}verdict: {problem}\n", log::render(&checked.entries)));
}

fn field_report(file: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(file);
    Scenario::from_file(&path).expect("committed scenarios parse")
}

macro_rules! field_reports {
    ($($test:ident => $file:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                assert_log(stringify!($test), &field_report($file));
            }
        )*
    };
}

field_reports! {
    f1 => "f1-flush-before-reload.toml",
    f2 => "f2-queued-work-runs-before-restart.toml",
    f3 => "f3-admission-fault-fails-message.toml",
    f4 => "f4-same-key-runs-in-order.toml",
    f5 => "f5-reload-waits-for-run.toml",
    f6 => "f6-deadline-hands-over-queued.toml",
    f7 => "f7-reconnect-flushes-buffer.toml",
    f8 => "f8-second-sigterm-ignored.toml",
    f9 => "f9-stop-during-reload-saves-intake.toml",
    f10 => "f10-burst-during-wait.toml",
}

/// Named seeds of the standard generator: a restored state file (33), a stop during a reload
/// with a drain warning (47), a warning and a restore (5). A generator version change moves
/// them all; the snapshot names carry the version so that is visible in review.
#[test]
fn named_seeds() {
    let generator = Generator::new(&Params::standard());
    for seed in [5, 33, 47] {
        let name = format!("seed-{seed}-gen{GENERATOR_VERSION}");
        assert_log(&name, &generator.generate(seed));
    }
}

macro_rules! plan_files {
    ($($test:ident => $plan:expr),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                assert_plan_log($plan);
            }
        )*
    };
}

plan_files! {
    plan_no_drain => Plan::NoDrain,
    plan_flush_if_buffered => Plan::FlushIfBuffered,
    plan_draining_first => Plan::DrainingFirst,
    plan_count_one => Plan::CountOne,
    plan_tight_retry => Plan::TightRetry,
}
