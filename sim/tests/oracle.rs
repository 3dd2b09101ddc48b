//! The oracle fails when it should: each test runs a committed scenario through a wrapper that
//! tampers with the core's events the way a broken core would, and expects the named invariant.

use std::path::PathBuf;

use quiesce::event::{Event, Phase};
use quiesce_sim::driver::{self, Entry, Observer, View};
use quiesce_sim::oracle::{Invariant, Oracle, Violation};
use quiesce_sim::scenario::Scenario;

/// Passes entries to the oracle after `tamper` had its way with them.
struct Tampered<F> {
    oracle: Oracle,
    tamper: F,
}

impl<F: FnMut(&mut Vec<Entry>)> Observer for Tampered<F> {
    fn after_input(&mut self, view: &View<'_>, entries: &[Entry]) -> Result<(), Violation> {
        let mut entries = entries.to_vec();
        (self.tamper)(&mut entries);
        self.oracle.after_input(view, &entries)
    }

    fn at_end(&mut self, view: &View<'_>) -> Result<(), Violation> {
        self.oracle.at_end(view)
    }
}

fn scenario(file: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(file);
    Scenario::from_file(&path).expect("committed scenarios parse")
}

/// The invariant the oracle reports when `tamper` edits each input's entries.
fn violated(file: &str, tamper: impl FnMut(&mut Vec<Entry>)) -> Option<Invariant> {
    violation(file, tamper).map(|v| v.invariant)
}

/// The violation the oracle reports when `tamper` edits each input's entries.
fn violation(file: &str, tamper: impl FnMut(&mut Vec<Entry>)) -> Option<Violation> {
    let mut observer = Tampered { oracle: Oracle::new(), tamper };
    driver::run(&scenario(file), &mut observer, false).violation
}

fn is(entry: &Entry, wanted: impl Fn(&Event) -> bool) -> bool {
    matches!(entry, Entry::Core(stamped) if wanted(&stamped.event))
}

#[test]
fn untouched_events_hold() {
    assert_eq!(violated("f2-queued-work-runs-before-restart.toml", |_| {}), None);
}

#[test]
fn a_lost_outcome_is_a_loss() {
    let drop_outcomes = |entries: &mut Vec<Entry>| {
        entries.retain(|e| !is(e, |ev| matches!(ev, Event::Outcome { .. })));
    };
    assert_eq!(violated("f4-same-key-runs-in-order.toml", drop_outcomes), Some(Invariant::S1));
}

/// The oracle compares counts per place after an ordinary input; a message the events put in
/// the wrong place changes two counts, and fails at that very input.
#[test]
fn a_wrong_place_fails_at_the_input_that_moved_it() {
    let mut moved_at = None;
    let intake_instead_of_buffer = |entries: &mut Vec<Entry>| {
        for entry in entries.iter_mut() {
            let Entry::Core(stamped) = entry else { continue };
            if let (Event::Buffered { message, .. }, None) = (&stamped.event, moved_at) {
                moved_at = Some(stamped.at_ms);
                stamped.event = Event::Intake { message: message.clone() };
            }
        }
    };
    let found = violation("f1-flush-before-reload.toml", intake_instead_of_buffer);
    let found = found.expect("a message in the wrong place is found");
    assert_eq!(found.invariant, Invariant::S1);
    assert!(found.reason.contains("the events say Some(Intake)"), "{}", found.reason);
    assert_eq!(Some(found.at_ms), moved_at, "found at the input that misplaced it");
}

#[test]
fn a_second_outcome_is_a_double_delivery() {
    let repeat_outcomes = |entries: &mut Vec<Entry>| {
        let outcomes: Vec<Entry> = entries
            .iter()
            .filter(|e| is(e, |ev| matches!(ev, Event::Outcome { .. })))
            .cloned()
            .collect();
        entries.extend(outcomes);
    };
    assert_eq!(violated("f7-reconnect-flushes-buffer.toml", repeat_outcomes), Some(Invariant::S1));
}

#[test]
fn a_reordered_run_breaks_key_order() {
    let reverse_runs = |entries: &mut Vec<Entry>| {
        for entry in entries.iter_mut() {
            if let Entry::Core(stamped) = entry
                && let Event::RunStarted { messages, .. } = &mut stamped.event
            {
                messages.reverse();
            }
        }
    };
    assert_eq!(violated("f10-burst-during-wait.toml", reverse_runs), Some(Invariant::S2));
}

#[test]
fn a_skipped_phase_breaks_restart_order() {
    let skip_mark = |entries: &mut Vec<Entry>| {
        entries
            .retain(|e| !is(e, |ev| matches!(ev, Event::Phase { phase: Phase::MarkDraining, .. })));
    };
    assert_eq!(violated("f5-reload-waits-for-run.toml", skip_mark), Some(Invariant::S3));
}

#[test]
fn a_missing_warning_is_dishonest() {
    let drop_warning = |entries: &mut Vec<Entry>| {
        entries.retain(|e| !is(e, |ev| matches!(ev, Event::DrainWarning { .. })));
    };
    assert_eq!(violated("f6-deadline-hands-over-queued.toml", drop_warning), Some(Invariant::S6));
}

#[test]
fn a_wrong_remaining_is_dishonest() {
    let inflate = |entries: &mut Vec<Entry>| {
        for entry in entries.iter_mut() {
            if let Entry::Core(stamped) = entry {
                match &mut stamped.event {
                    Event::DrainWarning { remaining } => *remaining += 1,
                    Event::Phase { phase: Phase::Wait, counts } => counts.remaining += 1,
                    _ => {}
                }
            }
        }
    };
    assert_eq!(violated("f6-deadline-hands-over-queued.toml", inflate), Some(Invariant::S6));
}

#[test]
fn a_second_restart_inside_one_breaks_one_at_a_time() {
    let echo_restart = |entries: &mut Vec<Entry>| {
        let began: Vec<Entry> = entries
            .iter()
            .filter(|e| is(e, |ev| matches!(ev, Event::RestartBegan { .. })))
            .cloned()
            .collect();
        entries.extend(began);
    };
    assert_eq!(violated("f5-reload-waits-for-run.toml", echo_restart), Some(Invariant::S5));
}

#[test]
fn a_run_after_mark_draining_breaks_draining() {
    let late_run = |entries: &mut Vec<Entry>| {
        let marked = entries.iter().position(|e| {
            is(e, |ev| matches!(ev, Event::Phase { phase: Phase::MarkDraining, .. }))
        });
        let Some(at) = marked else { return };
        let Entry::Core(stamped) = &entries[at] else { return };
        let mut late = stamped.clone();
        late.event = Event::RunStarted {
            run: 99,
            session: "S".into(),
            attempt: 1,
            messages: vec![],
            summarized: 0,
        };
        entries.insert(at + 1, Entry::Core(late));
    };
    assert_eq!(violated("f6-deadline-hands-over-queued.toml", late_run), Some(Invariant::S4));
}

#[test]
fn a_restart_past_its_deadline_is_unbounded() {
    let shrink_deadline = |entries: &mut Vec<Entry>| {
        for entry in entries.iter_mut() {
            if let Entry::Core(stamped) = entry
                && let Event::RestartBegan { deadline_ms, .. } = &mut stamped.event
            {
                *deadline_ms = 0;
            }
        }
    };
    assert_eq!(violated("f5-reload-waits-for-run.toml", shrink_deadline), Some(Invariant::L1));
}

#[test]
fn a_retry_without_back_off_spins() {
    let no_back_off = |entries: &mut Vec<Entry>| {
        for entry in entries.iter_mut() {
            if let Entry::Core(stamped) = entry
                && let Event::Requeued { retry_at_ms, .. } = &mut stamped.event
            {
                *retry_at_ms = stamped.at_ms;
            }
        }
    };
    let failing_run = r#"
        [[key]]
        name = "K"
        channel = "tg"
        session = "S"
        destination = "D"

        [[run]]
        session = "S"
        nth = 1
        outcome = "failure"

        [[arrival]]
        at_ms = 0
        key = "K"
        id = "M"
    "#;
    let scenario = Scenario::from_toml_str(failing_run).expect("valid scenario");
    let mut observer = Tampered { oracle: Oracle::new(), tamper: no_back_off };
    let report = driver::run(&scenario, &mut observer, false);
    assert_eq!(report.violation.map(|v| v.invariant), Some(Invariant::L3));
}

#[test]
fn a_message_still_running_after_the_quiet_period_has_no_outcome() {
    let hanging_run = r#"
        quiet_ms = 1000

        [[key]]
        name = "K"
        channel = "tg"
        session = "S"
        destination = "D"

        [[run]]
        session = "S"
        nth = 1
        outcome = "hang"

        [[arrival]]
        at_ms = 0
        key = "K"
        id = "M"
    "#;
    let scenario = Scenario::from_toml_str(hanging_run).expect("valid scenario");
    let report = driver::run(&scenario, &mut Oracle::new(), false);
    assert_eq!(report.violation.map(|v| v.invariant), Some(Invariant::L2));
}
