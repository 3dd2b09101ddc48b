//! The event log's format, pinned on a small hand-made run, and the divergence report the
//! determinism checks print.

use quiesce::event::{
    Admission, Cause, Event, FlushCause, OutcomeKind, Phase, PhaseCounts, Refusal, RunEnd, Stamped,
};
use quiesce::message::Identity;
use quiesce::signal::{Origin, SignalKind};
use quiesce_sim::driver::{Entry, Note};
use quiesce_sim::log::{first_divergence, render};

fn id(channel: &str, id: &str) -> Identity {
    Identity { channel: channel.into(), id: id.into() }
}

fn core(at_ms: u64, generation: u32, event: Event) -> Entry {
    Entry::Core(Stamped { at_ms, boot: 1, generation, event })
}

/// A message buffered, flushed and delivered, a duplicate, and a reload's first phases.
fn small_run() -> Vec<Entry> {
    let (m1, m2) = (id("tg", "1"), id("tg", "2"));
    vec![
        Entry::World { at_ms: 0, boot: 1, note: Note::ProcessStarted },
        core(0, 0, Event::GenerationStarted { pending: vec![], intake: vec![] }),
        core(
            5,
            0,
            Event::Accepted { message: m1.clone(), key: Some("k".into()), session: "s".into() },
        ),
        core(5, 0, Event::Buffered { message: m1.clone(), key: "k".into(), due_ms: 55 }),
        core(7, 0, Event::Refused { message: m1.clone(), reason: Refusal::Duplicate }),
        core(9, 0, Event::Accepted { message: m2.clone(), key: None, session: "s".into() }),
        core(
            55,
            0,
            Event::Flushed {
                key: "k".into(),
                messages: vec![m1.clone()],
                cause: FlushCause::Timer,
            },
        ),
        core(
            55,
            0,
            Event::Admitted {
                session: "s".into(),
                messages: vec![m1.clone()],
                into: Admission::Run(1),
            },
        ),
        core(1_050, 0, Event::RunFinished { run: 1, session: "s".into(), end: RunEnd::Success }),
        core(
            1_050,
            0,
            Event::Outcome { message: m1, kind: OutcomeKind::Delivered, cause: Cause::Run(1) },
        ),
        core(
            1_060,
            0,
            Event::Outcome {
                message: m2.clone(),
                kind: OutcomeKind::Failed,
                cause: Cause::Admission("lock \"timeout\"".to_owned()),
            },
        ),
        core(2_000, 0, Event::Signal { kind: SignalKind::Reload, origin: Origin::External }),
        core(2_000, 0, Event::RestartBegan { kind: SignalKind::Reload, deadline_ms: 92_000 }),
        core(2_000, 0, Event::Phase { phase: Phase::Hold, counts: PhaseCounts::default() }),
        core(
            2_000,
            0,
            Event::Phase {
                phase: Phase::Flush,
                counts: PhaseCounts {
                    flushed: 2,
                    remaining: 0,
                    drained: true,
                    ..PhaseCounts::default()
                },
            },
        ),
        core(123_456_789, 1, Event::Exit { code: 0 }),
        Entry::World { at_ms: 123_456_790, boot: 1, note: Note::RefusedDown { message: m2 } },
    ]
}

#[test]
fn small_run_renders_line_by_line() {
    let expected = r#"
       0 b1 g- process_started
       0 b1 g0 generation_started pending=[] intake=[]
       5 b1 g0 accepted message=tg/1 key=k session=s
       5 b1 g0 buffered message=tg/1 key=k due_ms=55
       7 b1 g0 refused message=tg/1 reason=duplicate
       9 b1 g0 accepted message=tg/2 key=- session=s
      55 b1 g0 flushed key=k messages=[tg/1] cause=timer
      55 b1 g0 admitted session=s messages=[tg/1] into=run:1
    1050 b1 g0 run_finished run=1 session=s end=success
    1050 b1 g0 outcome message=tg/1 kind=delivered cause=run:1
    1060 b1 g0 outcome message=tg/2 kind=failed cause=admission:"lock \"timeout\""
    2000 b1 g0 signal kind=reload origin=external
    2000 b1 g0 restart_began kind=reload deadline_ms=92000
    2000 b1 g0 phase name=hold
    2000 b1 g0 phase name=flush flushed=2 remaining=0 drained=true
123456789 b1 g1 exit code=0
123456790 b1 g- refused_down message=tg/2
"#;
    assert_eq!(render(&small_run()), expected.trim_start_matches('\n'));
}

#[test]
fn lists_join_identities_with_commas() {
    let messages = vec![id("tg", "1"), id("wa", "2")];
    let entry = core(3, 0, Event::StateSaved { messages });
    assert_eq!(render(&[entry]), "       3 b1 g0 state_saved messages=[tg/1,wa/2]\n");
}

#[test]
fn identical_logs_do_not_diverge() {
    assert_eq!(first_divergence(&small_run(), &small_run()), None);
}

#[test]
fn divergence_names_the_entry_and_its_time() {
    let first = small_run();
    let mut second = small_run();
    second[4] = core(7, 0, Event::Refused { message: id("tg", "1"), reason: Refusal::Busy });
    let (index, text) = first_divergence(&first, &second).expect("the logs differ");
    assert_eq!(index, 4);
    assert!(text.contains("t=7 ms"), "{text}");
    assert!(text.contains("reason=duplicate") && text.contains("reason=busy"), "{text}");
}

#[test]
fn a_shorter_log_diverges_where_it_ends() {
    let first = small_run();
    let second = &first[..3];
    let (index, text) = first_divergence(&first, second).expect("the logs differ");
    assert_eq!(index, 3);
    assert!(text.contains("the end of the log"), "{text}");
}
