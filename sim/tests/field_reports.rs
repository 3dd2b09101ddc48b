//! The field reports F1 to F10 (SPEC 8), replayed from `scenarios/` through the event-jump
//! driver with the oracle on; each test checks the one outcome its report states.

use std::path::PathBuf;

use quiesce::event::{Event, IgnoreReason, OutcomeKind, Phase, RunEnd, Stamped};
use quiesce::message::Identity;
use quiesce::signal::SignalKind;
use quiesce_sim::driver::{self, Entry};
use quiesce_sim::oracle::Oracle;
use quiesce_sim::scenario::Scenario;

/// Runs a committed scenario and returns its core events; every invariant must hold.
fn replay(file: &str) -> Vec<Stamped> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(file);
    let scenario = Scenario::from_file(&path).expect("committed scenarios parse");
    let report = driver::run(&scenario, &mut Oracle::new(), true);
    assert_eq!(report.violation, None, "{file}");
    report
        .entries
        .into_iter()
        .filter_map(|entry| match entry {
            Entry::Core(stamped) => Some(stamped),
            Entry::World { .. } => None,
        })
        .collect()
}

fn id(text: &str) -> Identity {
    Identity { channel: "tg".into(), id: text.into() }
}

/// The event that gave `message` its outcome.
fn outcome<'a>(events: &'a [Stamped], message: &str) -> (&'a Stamped, OutcomeKind) {
    let mut outcomes = events.iter().filter_map(|s| match &s.event {
        Event::Outcome { message: m, kind, .. } if *m == id(message) => Some((s, *kind)),
        _ => None,
    });
    let first = outcomes.next().unwrap_or_else(|| panic!("{message} has an outcome"));
    assert!(outcomes.next().is_none(), "{message} has exactly one outcome");
    first
}

/// Where `message` was delivered: (boot, generation, time).
fn delivered(events: &[Stamped], message: &str) -> (u32, u32, u64) {
    let (stamped, kind) = outcome(events, message);
    assert_eq!(kind, OutcomeKind::Delivered, "{message}");
    (stamped.boot, stamped.generation, stamped.at_ms)
}

/// The runs that held `message`, as (time started, messages).
fn runs_of(events: &[Stamped], message: &str) -> Vec<(u64, Vec<Identity>)> {
    events
        .iter()
        .filter_map(|s| match &s.event {
            Event::RunStarted { messages, .. } if messages.contains(&id(message)) => {
                Some((s.at_ms, messages.clone()))
            }
            _ => None,
        })
        .collect()
}

fn position(events: &[Stamped], wanted: impl Fn(&Event) -> bool) -> usize {
    events.iter().position(|s| wanted(&s.event)).expect("the event happened")
}

fn count(events: &[Stamped], wanted: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|s| wanted(&s.event)).count()
}

#[test]
fn f1_buffered_message_is_admitted_in_phase_two() {
    let events = replay("f1-flush-before-reload.toml");
    let admitted = position(
        &events,
        |e| matches!(e, Event::Admitted { messages, .. } if messages == &[id("M1")]),
    );
    let hold = position(&events, |e| matches!(e, Event::Phase { phase: Phase::Hold, .. }));
    let flush = position(&events, |e| matches!(e, Event::Phase { phase: Phase::Flush, .. }));
    assert!(hold < admitted && admitted < flush, "M1 is admitted inside phase 2");
    assert_eq!(delivered(&events, "M1"), (1, 0, 2000));
}

#[test]
fn f1_message_after_the_signal_waits_in_the_intake() {
    let events = replay("f1-flush-before-reload.toml");
    assert_eq!(
        count(&events, |e| matches!(e, Event::Intake { message } if *message == id("M2"))),
        1
    );
    let (boot, generation, _) = delivered(&events, "M2");
    assert_eq!((boot, generation), (1, 1));
}

#[test]
fn f2_queued_message_runs_before_the_restart_ends() {
    let events = replay("f2-queued-work-runs-before-restart.toml");
    assert_eq!(delivered(&events, "M2"), (1, 0, 60_000));
    let generation_1 = events
        .iter()
        .find(|s| matches!(s.event, Event::GenerationStarted { .. }) && s.generation == 1)
        .expect("generation 1 starts");
    assert_eq!(generation_1.at_ms, 60_000, "the restart ends after M2's run");
    assert_eq!(delivered(&events, "M3").1, 1, "M3 from the intake runs in generation 1");
}

#[test]
fn f3_failed_admission_fails_the_message_once() {
    let events = replay("f3-admission-fault-fails-message.toml");
    let (stamped, kind) = outcome(&events, "M");
    assert_eq!((kind, stamped.at_ms), (OutcomeKind::Failed, 3000));
    let callbacks = count(
        &events,
        |e| matches!(e, Event::AdmissionFailed { error, .. } if error == "lock timeout"),
    );
    assert_eq!(callbacks, 1);
    assert!(runs_of(&events, "M").is_empty(), "never run");
}

#[test]
fn f4_same_key_runs_one_after_the_other() {
    let events = replay("f4-same-key-runs-in-order.toml");
    assert_eq!(runs_of(&events, "A1"), vec![(1000, vec![id("A1")])]);
    assert_eq!(runs_of(&events, "A2"), vec![(31_000, vec![id("A2")])]);
}

#[test]
fn f5_generation_one_starts_after_the_run() {
    let events = replay("f5-reload-waits-for-run.toml");
    let generation_1 = events.iter().find(|s| s.generation == 1).expect("generation 1 starts");
    assert!(matches!(generation_1.event, Event::GenerationStarted { .. }));
    assert_eq!(generation_1.at_ms, 20_000);
    assert_eq!(delivered(&events, "M"), (1, 0, 20_000));
}

#[test]
fn f6_deadline_warns_and_hands_over_the_queued_message() {
    let events = replay("f6-deadline-hands-over-queued.toml");
    let warnings: Vec<(u64, usize)> = events
        .iter()
        .filter_map(|s| match s.event {
            Event::DrainWarning { remaining } => Some((s.at_ms, remaining)),
            _ => None,
        })
        .collect();
    assert_eq!(warnings, vec![(5000, 2)]);
    let handed = count(
        &events,
        |e| matches!(e, Event::HandedOver { pending, .. } if pending == &[id("M2")]),
    );
    assert_eq!(handed, 1);
    assert_eq!(delivered(&events, "M1"), (1, 1, 10_000), "the run went on in the background");
    assert_eq!(runs_of(&events, "M2"), vec![(10_000, vec![id("M2")])]);
    assert_eq!(delivered(&events, "M2").1, 1);
}

#[test]
fn f7_reconnect_admits_the_buffer() {
    let events = replay("f7-reconnect-flushes-buffer.toml");
    let admitted = events
        .iter()
        .find(|s| matches!(&s.event, Event::Admitted { messages, .. } if messages == &[id("M")]))
        .expect("M is admitted");
    assert_eq!(admitted.at_ms, 300);
    assert_eq!(delivered(&events, "M"), (1, 0, 300));
}

#[test]
fn f8_second_sigterm_makes_no_second_stop() {
    let events = replay("f8-second-sigterm-ignored.toml");
    let stops =
        count(&events, |e| matches!(e, Event::RestartBegan { kind: SignalKind::Shutdown, .. }));
    assert_eq!(stops, 1);
    let ignored: Vec<u64> = events
        .iter()
        .filter(|s| {
            matches!(s.event, Event::SignalIgnored { reason: IgnoreReason::AlreadyStopping, .. })
        })
        .map(|s| s.at_ms)
        .collect();
    assert_eq!(ignored, vec![2]);
    assert_eq!(delivered(&events, "M"), (1, 0, 1000));
}

#[test]
fn f9_stop_during_reload_saves_the_intake_for_boot_two() {
    let events = replay("f9-stop-during-reload-saves-intake.toml");
    let became = events.iter().find_map(|s| match s.event {
        Event::BecameStop { deadline_ms } => Some((s.at_ms, deadline_ms)),
        _ => None,
    });
    assert_eq!(became, Some((9000, 34_000)));
    let saved =
        count(&events, |e| matches!(e, Event::StateSaved { messages } if messages == &[id("M")]));
    assert_eq!(saved, 1, "M goes to the state file");
    let (boot, _, at_ms) = delivered(&events, "M");
    assert_eq!(boot, 2);
    assert!(at_ms >= 40_000);
    let interrupted =
        count(&events, |e| matches!(e, Event::RunFinished { end: RunEnd::Interrupted, .. }));
    assert_eq!(interrupted, 0, "the long run ended before the stop closed");
}

#[test]
fn f10_burst_during_wait_is_delivered_in_order() {
    let events = replay("f10-burst-during-wait.toml");
    let burst: Vec<Identity> = (1..=50).map(|n| id(&format!("F{n:02}"))).collect();
    let intake =
        count(&events, |e| matches!(e, Event::Intake { message } if burst.contains(message)));
    assert_eq!(intake, 50);
    let runs = runs_of(&events, "F01");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].1, burst, "one run, in acceptance order");
    for message in &burst {
        assert_eq!(delivered(&events, message.id.as_str()).1, 1);
    }
}
