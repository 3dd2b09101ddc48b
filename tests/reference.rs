//! The reference cases R1 to R30 of SPEC section 7, on virtual time.
//!
//! Most cases drive the whole gateway through the [`support::Harness`] and compare a filtered
//! event log; the registry cases (R8, R9, R12, R14) drive the debouncers with an `admit`
//! closure, and R26 drives the pipeline, because those cases are about their return values.

mod support;

use quiesce::config::{Config, DropPolicy, QueueMode, QueueSettings};
use quiesce::debounce::{Debouncer, FlushReport, Offered, Registry};
use quiesce::effect::{Effect, Outbox};
use quiesce::event::{Event, FlushCause, Refusal};
use quiesce::gateway::{Place, Reply};
use quiesce::handover::Handover;
use quiesce::message::{Batch, Message, Work};
use quiesce::pipeline::Pipeline;
use quiesce::signal::{Origin, SignalKind};
use tracing_test::traced_test;

use support::{
    ADMISSION_FAULT, CALLBACK_FAULT, Faults, Harness, MessageExt, RunPlan, batch_ids, check,
    debounced, msg,
};

// R1 to R7: the debouncer and the pipeline through the gateway.

/// R1.
#[test]
fn window_batches_a_key() {
    let mut h = Harness::new(debounced(10));
    h.accept(0, msg("a/1")).accept(0, msg("a/2")).run_until(9);
    check(h.log(&["admitted"]), "");

    h.run_until(10);
    check(h.log(&["admitted"]), "10 g0 admitted [1 2] run 1");
}

/// R2.
#[test]
fn undebounced_message_flushes_its_key_first() {
    let mut h = Harness::new(debounced(50));
    h.accept(0, msg("a/1")).accept(0, msg("a/2").undebounced()).run_until(0);
    check(
        h.log(&["admitted"]),
        "
        0 g0 admitted [1] run 1
        0 g0 admitted [2] queued
        ",
    );
}

/// R3.
#[test]
fn per_item_window_overrides_default() {
    let mut h = Harness::new(Config::default());
    h.accept(0, msg("f/1").window(30)).accept(0, msg("f/2").window(30)).run_until(29);
    check(h.log(&["admitted"]), "");

    h.run_until(30);
    check(h.log(&["admitted"]), "30 g0 admitted [1 2] run 1");
}

/// R4: the quiet time counts from the last append (SPEC 3.4), here t=60, so it has passed when
/// run 1 ends at t=1,050 and run 2 starts at once.
#[test]
fn queued_message_runs_after_busy_run() {
    let mut h = Harness::new(debounced(50));
    h.runs_go(RunPlan::lasting(1_000));
    h.accept(0, msg("a/1")).accept(60, msg("a/2").undebounced()).run_to_end();
    check(
        h.log(&["admitted", "run_started", "run_finished"]),
        "
        50 g0 admitted [1] run 1
        50 g0 run_started 1 [1] attempt 1
        60 g0 admitted [2] queued
        1050 g0 run_finished 1 Success
        1050 g0 run_started 2 [2] attempt 1
        2050 g0 run_finished 2 Success
        ",
    );
}

/// R5 with the queue mode as the only difference.
fn late_debounced_batch(mode: QueueMode) -> Harness {
    let mut config = debounced(50);
    config.queue.mode = mode;
    let mut h = Harness::new(config);
    h.runs_go(RunPlan::lasting(1_000));
    h.accept(0, msg("a/1")).accept(60, msg("a/2").undebounced()).accept(70, msg("a/3"));
    h.run_to_end();
    h
}

/// R5, `followup`.
#[test]
fn followup_runs_each_queued_batch() {
    let h = late_debounced_batch(QueueMode::Followup);
    check(
        h.log(&["admitted", "run_started"]),
        "
        50 g0 admitted [1] run 1
        50 g0 run_started 1 [1] attempt 1
        60 g0 admitted [2] queued
        120 g0 admitted [3] queued
        1050 g0 run_started 2 [2] attempt 1
        2050 g0 run_started 3 [3] attempt 1
        ",
    );
}

/// R5, `collect`.
#[test]
fn collect_runs_queued_batches_together() {
    let h = late_debounced_batch(QueueMode::Collect);
    check(
        h.log(&["admitted", "run_started"]),
        "
        50 g0 admitted [1] run 1
        50 g0 run_started 1 [1] attempt 1
        60 g0 admitted [2] queued
        120 g0 admitted [3] queued
        1050 g0 run_started 2 [2 3] attempt 1
        ",
    );
}

/// R6.
#[test]
fn zero_window_queues_behind_first_run() {
    let mut h = Harness::new(debounced(0));
    h.accept(0, msg("a/1")).accept(0, msg("a/2")).run_to_end();
    check(
        h.log(&["admitted", "run_started", "run_finished"]),
        "
        0 g0 admitted [1] run 1
        0 g0 run_started 1 [1] attempt 1
        0 g0 admitted [2] queued
        0 g0 run_finished 1 Success
        500 g0 run_started 2 [2] attempt 1
        500 g0 run_finished 2 Success
        ",
    );
}

/// R7: with the default window of 0 each message is a batch of its own, so each failure reaches
/// the error callback, and its failure is logged, once.
#[test]
#[traced_test]
fn admission_fault_fails_messages() {
    let faults = Faults::default().refuse_all().failing_callback();
    let mut h = Harness::with_faults(Config::default(), faults.clone());
    h.accept(0, msg("a/1")).accept(0, msg("a/2")).run_to_end();

    assert_eq!(h.replies(), [Reply::Accepted, Reply::Accepted]);
    check(
        h.log(&["outcome", "callback_failed"]),
        r#"
        0 g0 outcome 1 failed by "scripted fault"
        0 g0 callback_failed [1] "callback down"
        0 g0 outcome 2 failed by "scripted fault"
        0 g0 callback_failed [2] "callback down"
        "#,
    );
    assert_eq!(faults.told().len(), 2, "the error callback is told once per batch");
    logs_assert(logged("error callback failed", 2, &["ERROR", CALLBACK_FAULT]));
}

/// Not a reference case: R7's batches hold one message each, so this pins "per batch" against
/// "per message" with a batch of two.
#[test]
#[traced_test]
fn callback_failure_logged_once_per_batch() {
    let faults = Faults::default().refuse_all().failing_callback();
    let mut h = Harness::with_faults(debounced(10), faults.clone());
    h.accept(0, msg("a/1")).accept(0, msg("a/2")).run_to_end();

    check(h.log(&["callback_failed"]), r#"10 g0 callback_failed [1 2] "callback down""#);
    assert_eq!(faults.told(), [(ADMISSION_FAULT.to_owned(), vec!["1".to_owned(), "2".to_owned()])]);
    logs_assert(logged("error callback failed", 1, &["ERROR", CALLBACK_FAULT]));
}

/// A check for `logs_assert`: exactly `count` lines hold `message`, each with every one of
/// `fields` (a level, a field, a value).
fn logged(message: &str, count: usize, fields: &[&str]) -> impl Fn(&[&str]) -> Result<(), String> {
    move |lines| {
        let found: Vec<&&str> = lines.iter().filter(|line| line.contains(message)).collect();
        let complete = found.iter().all(|line| fields.iter().all(|field| line.contains(field)));
        if found.len() == count && complete {
            return Ok(());
        }
        Err(format!("expected {count} {message:?} lines with {fields:?}, got {found:#?}"))
    }
}

// R8 to R15: the registry.

/// A debouncer of default window 5,000 for each channel, registered in the given order.
fn registry(channels: &[&str]) -> Registry {
    let mut registry = Registry::new();
    for channel in channels {
        registry.register(Debouncer::new((*channel).into(), 5_000, 2_048));
    }
    registry
}

/// Offers messages at t=0; each must wait in a buffer.
fn buffer(registry: &mut Registry, messages: Vec<Message>) {
    for message in messages {
        let channel = message.channel.clone();
        let debouncer = registry.get_mut(&channel).expect("the channel is registered");
        let offered = debouncer.offer(0, message, &mut |_, _| panic!("nothing is admitted yet"));
        assert_eq!(offered, Offered::Buffered { due_ms: 5_000 });
    }
}

/// Admits every batch, writing it down as `[ids] cause`.
fn recorder(admitted: &mut Vec<String>) -> impl FnMut(Batch, FlushCause) -> bool + '_ {
    |batch, cause| {
        admitted.push(format!("[{}] {cause:?}", batch_ids(&batch).join(" ")));
        true
    }
}

/// R8.
#[test]
fn registry_flushes_in_registration_order() {
    let mut registry = registry(&["A", "B"]);
    let messages =
        vec![msg("s1/m1").channel("A"), msg("s1/m2").channel("A"), msg("s2/m3").channel("B")];
    buffer(&mut registry, messages);

    let mut admitted = Vec::new();
    let report = registry.flush_all(0, 5_000, &mut recorder(&mut admitted));
    assert_eq!(report, FlushReport { drained: true, flushed: 2, remaining: 0 });
    check(
        admitted,
        "
        [m1 m2] FlushAll
        [m3] FlushAll
        ",
    );
}

/// R9.
#[test]
fn registry_flush_counts_every_key() {
    let mut registry = registry(&["A", "B"]);
    buffer(&mut registry, vec![msg("s1/m1").channel("A"), msg("s2/m2").channel("A")]);

    let mut admitted = Vec::new();
    let report = registry.flush_all(0, 5_000, &mut recorder(&mut admitted));
    assert_eq!(report, FlushReport { drained: true, flushed: 2, remaining: 0 });
}

/// R10.
#[test]
fn failed_admission_not_counted_as_flushed() {
    let faults = Faults::default().refuse("m1");
    let mut h = Harness::with_faults(debounced(5_000), faults);
    h.accept(0, msg("s1/m1")).accept(0, msg("s2/m2"));
    h.signal(10, SignalKind::Reload, Origin::External).run_to_end();
    check(
        h.log(&["admitted", "outcome", "phase flush"]),
        r#"
        10 g0 outcome m1 failed by "scripted fault"
        10 g0 admitted [m2] run 1
        10 g0 phase flush flushed=1 remaining=0 drained=true
        10 g0 outcome m2 delivered by run 1
        "#,
    );
}

/// R11: the flush phase takes no virtual time in the core, so "during the flush phase" is the
/// instant of the signal, after it: the restart is in progress from then on.
#[test]
fn message_during_restart_goes_to_intake() {
    let mut h = Harness::new(debounced(5_000));
    h.run_goes(1, RunPlan::lasting(1_000));
    h.accept(0, msg("r/0").undebounced());
    h.signal(100, SignalKind::Reload, Origin::External).accept(100, msg("s1/m1"));
    h.run_until(100);

    check(h.log(&["buffered", "intake"]), "100 g0 intake m1");
    let place = h.gateway().places().into_iter().find(|(identity, _)| identity.id.as_str() == "m1");
    assert_eq!(place.map(|(_, place)| place), Some(Place::Intake));
}

/// Not a reference case: R11 after phase 5, while listeners close.
#[test]
fn message_during_close_runs_in_next_generation() {
    let mut h = Harness::new(debounced(5_000));
    h.close_takes(Some(1_000));
    h.signal(0, SignalKind::Reload, Origin::External).accept(500, msg("s1/m1").undebounced());
    h.run_to_end();
    check(
        h.log(&["intake", "phase close", "generation_started", "run_started"]),
        "
        0 g0 generation_started pending [] intake []
        500 g0 intake m1
        1000 g0 phase close
        1000 g1 generation_started pending [] intake [m1]
        1000 g1 run_started 1 [m1] attempt 1
        ",
    );
}

/// R12.
#[test]
fn empty_registry_flushes_nothing() {
    let mut admitted = Vec::new();
    let report = Registry::new().flush_all(0, 5_000, &mut recorder(&mut admitted));
    assert_eq!(report, FlushReport { drained: true, flushed: 0, remaining: 0 });
    check(admitted, "");
}

/// R13.
#[test]
fn disconnect_admits_buffer_and_unregisters() {
    let mut h = Harness::new(debounced(5_000));
    h.accept(0, msg("s1/m1")).disconnect(300, "tg");
    h.signal(400, SignalKind::Reload, Origin::External).run_to_end();
    check(
        h.log(&["channel_closed", "flushed", "admitted", "phase flush"]),
        "
        300 g0 channel_closed tg
        300 g0 flushed s1 [m1] Disconnect
        300 g0 admitted [m1] run 1
        400 g0 phase flush flushed=0 remaining=0 drained=true
        ",
    );
}

/// R14.
#[test]
fn flush_all_goes_oldest_buffer_first() {
    let mut registry = registry(&["tg"]);
    buffer(&mut registry, vec![msg("a/1"), msg("b/2")]);
    let debouncer = registry.get_mut(&"tg".into()).expect("registered");
    let offered = debouncer.offer(0, msg("a/3"), &mut |_, _| panic!("nothing is admitted yet"));
    assert_eq!(offered, Offered::Buffered { due_ms: 5_000 });

    let mut admitted = Vec::new();
    let report = debouncer.flush_all(0, 5_000, FlushCause::FlushAll, &mut recorder(&mut admitted));
    assert_eq!(report, FlushReport { drained: true, flushed: 2, remaining: 0 });
    check(
        admitted,
        "
        [1 3] FlushAll
        [2] FlushAll
        ",
    );
}

/// R15.
#[test]
#[traced_test]
fn failing_callback_does_not_stop_other_keys() {
    let faults = Faults::default().refuse("2").failing_callback();
    let mut h = Harness::with_faults(debounced(5_000), faults);
    h.accept(0, msg("a/1")).accept(0, msg("b/2")).accept(0, msg("c/3"));
    h.signal(10, SignalKind::Reload, Origin::External).run_to_end();
    check(
        h.log(&["admitted", "outcome", "callback_failed", "phase flush"]),
        r#"
        10 g0 admitted [1] run 1
        10 g0 outcome 2 failed by "scripted fault"
        10 g0 callback_failed [2] "callback down"
        10 g0 admitted [3] run 2
        10 g0 phase flush flushed=2 remaining=0 drained=true
        10 g0 outcome 1 delivered by run 1
        10 g0 outcome 3 delivered by run 2
        "#,
    );
    logs_assert(logged("error callback failed", 1, &["ERROR", CALLBACK_FAULT]));
}

// R16 to R20: waiting for the drain, as phase 3 of a reload.

/// A gateway whose reloads have the given deadline.
fn reload_deadline(deadline_ms: u64) -> Harness {
    let mut config = Config::default();
    config.reload.deadline_ms = deadline_ms;
    Harness::new(config)
}

/// R16.
#[test]
fn wait_with_nothing_pending_ends_at_once() {
    let mut h = reload_deadline(5_000);
    h.signal(1_000, SignalKind::Reload, Origin::External).run_to_end();
    check(h.log(&["phase wait"]), "1000 g0 phase wait remaining=0 drained=true");
}

/// R17.
#[test]
fn wait_ends_when_last_run_ends() {
    let mut h = reload_deadline(5_000);
    h.run_goes(1, RunPlan::lasting(100));
    h.accept(0, msg("a/1")).signal(0, SignalKind::Reload, Origin::External).run_to_end();
    check(h.log(&["phase wait"]), "100 g0 phase wait remaining=0 drained=true");
}

/// R18.
#[test]
fn wait_stops_at_deadline_with_run_left() {
    let mut h = reload_deadline(100);
    h.run_goes(1, RunPlan::lasting(1_000));
    h.accept(0, msg("a/1")).signal(0, SignalKind::Reload, Origin::External).run_to_end();
    check(
        h.log(&["drain_warning", "phase wait"]),
        "
        100 g0 drain_warning remaining=1
        100 g0 phase wait remaining=1 drained=false
        ",
    );
}

/// R19.
#[test]
fn wait_counts_one_per_run() {
    let mut h = reload_deadline(1);
    h.runs_go(RunPlan::lasting(1_000));
    h.accept(0, msg("a/1")).accept(0, msg("b/2")).accept(0, msg("c/3"));
    h.signal(0, SignalKind::Reload, Origin::External).run_to_end();
    check(h.log(&["phase wait"]), "1 g0 phase wait remaining=3 drained=false");
}

/// R20, with cap 1: message 3 pushes 2 out of the queue, into the pending summary.
#[test]
fn wait_counts_run_queue_and_summary() {
    let mut config = Config::default();
    config.reload.deadline_ms = 100;
    config.queue.cap = 1;
    let mut h = Harness::new(config);
    h.run_goes(1, RunPlan::lasting(1_000));
    h.accept(0, msg("a/1")).accept(0, msg("a/2")).accept(0, msg("a/3"));
    h.signal(0, SignalKind::Reload, Origin::External).run_to_end();
    check(
        h.log(&["outcome 2", "phase wait"]),
        "
        0 g0 outcome 2 dropped_overflow at cap 1
        100 g0 phase wait remaining=3 drained=false
        ",
    );
}

// R21 to R24: the followup queue.

/// Session `s` runs message 0 until t=1,000, while `queued` wait behind it.
fn busy_session(config: Config, queued: Vec<Message>) -> Harness {
    let mut h = Harness::new(config);
    h.runs_go(RunPlan::lasting(1_000));
    h.accept(0, msg("k0/0").session("s").destination("d1"));
    for (n, message) in (10..).step_by(10).zip(queued) {
        h.accept(n, message.session("s"));
    }
    h
}

/// R21.
#[test]
fn collect_splits_destinations() {
    let queued = vec![msg("k1/1").destination("d1"), msg("k2/2").destination("d2")];
    let mut h = busy_session(Config::default(), queued);
    h.run_to_end();
    check(
        h.log(&["run_started"]),
        "
        0 g0 run_started 1 [0] attempt 1
        1000 g0 run_started 2 [1] attempt 1
        2000 g0 run_started 3 [2] attempt 1
        ",
    );
}

/// R22.
#[test]
fn collect_joins_one_destination() {
    let queued = vec![msg("k1/1").destination("d1"), msg("k2/2").destination("d1")];
    let mut h = busy_session(Config::default(), queued);
    h.run_to_end();
    check(
        h.log(&["run_started"]),
        "
        0 g0 run_started 1 [0] attempt 1
        1000 g0 run_started 2 [1 2] attempt 1
        ",
    );
}

/// R23: the retry waits `max(quiet_ms, 100)` = 500 ms after the failure.
#[test]
fn collected_retry_keeps_order() {
    let queued = vec![msg("k1/1").destination("d1"), msg("k2/2").destination("d1")];
    let mut h = busy_session(Config::default(), queued);
    h.run_goes(2, RunPlan::failing(0)).run_to_end();
    check(
        h.log(&["run_started", "run_finished 2", "requeued"]),
        "
        0 g0 run_started 1 [0] attempt 1
        1000 g0 run_started 2 [1 2] attempt 1
        1000 g0 run_finished 2 Failure
        1000 g0 requeued 2 [1 2] retry_at 1500
        1500 g0 run_started 3 [1 2] attempt 2
        ",
    );
    assert_eq!(h.run_text(3), h.run_text(2));
}

/// R24.
#[test]
fn summary_opens_next_run() {
    let mut config = Config::default();
    config.queue.mode = QueueMode::Followup;
    config.queue.cap = 1;
    let queued = vec![msg("k0/1").text("first"), msg("k0/2").text("second")];
    let mut h = busy_session(config, queued);
    h.run_to_end();
    check(
        h.log(&["outcome 1", "run_started"]),
        "
        0 g0 run_started 1 [0] attempt 1
        20 g0 outcome 1 dropped_overflow at cap 1
        1000 g0 run_started 2 [2] attempt 1 summary 1
        ",
    );
    assert_eq!(h.run_text(2), "Dropped 1 message due to cap.\n- first\n\nsecond");
}

// R25: dedupe.

/// R25.
#[test]
fn duplicate_identity_is_refused() {
    let mut h = Harness::new(Config::default());
    h.accept(0, msg("a/1")).accept(299_999, msg("a/1")).accept(299_999, msg("a/1").channel("sl"));
    h.run_to_end();
    let refused = Reply::Refused(Refusal::Duplicate);
    assert_eq!(h.replies(), [Reply::Accepted, refused, Reply::Accepted]);
}

// R26: the drop policies, on the pipeline.

/// A busy session with cap 2 holding [x, y] takes z under `drop`: what stays queued, the
/// pending summary's lines, and the outcomes.
fn overflow(drop: DropPolicy) -> (Vec<String>, Option<Vec<String>>, Vec<String>) {
    let settings = QueueSettings { mode: QueueMode::Collect, cap: 2, drop, quiet_ms: 500 };
    let mut pipeline = Pipeline::new(600_000, 5);
    let mut out = Outbox::default();
    for id in ["k/r", "k/x", "k/y", "k/z"] {
        let work = Work::fresh(Batch::single(msg(id)));
        pipeline.admit(work, settings, &mut out).expect("the pipeline is not draining");
    }

    let pending = pipeline.take_pending(0);
    assert_eq!(pending.len(), 1, "one session");
    let queued = pending[0].work.iter().flat_map(|w| batch_ids(&w.batch)).collect();
    let summary = pending[0].summary.as_ref().map(|s| s.lines.clone());
    let outcomes = out.events.iter().filter_map(|stamped| match &stamped.event {
        Event::Outcome { message, kind, .. } => Some(format!("{} {}", message.id, kind.name())),
        _ => None,
    });
    (queued, summary, outcomes.collect())
}

/// R26, `new`.
#[test]
fn new_policy_rejects_incoming() {
    let (queued, summary, outcomes) = overflow(DropPolicy::New);
    assert_eq!(queued, ["x", "y"]);
    assert_eq!(summary, None);
    assert_eq!(outcomes, ["z rejected_overflow"]);
}

/// R26, `old`.
#[test]
fn old_policy_drops_oldest() {
    let (queued, summary, outcomes) = overflow(DropPolicy::Old);
    assert_eq!(queued, ["y", "z"]);
    assert_eq!(summary, None);
    assert_eq!(outcomes, ["x dropped_overflow"]);
}

/// R26, `summarize`.
#[test]
fn summarize_policy_keeps_summary() {
    let (queued, summary, outcomes) = overflow(DropPolicy::Summarize);
    assert_eq!(queued, ["y", "z"]);
    assert_eq!(summary, Some(vec!["x".to_owned()]));
    assert_eq!(outcomes, ["x dropped_overflow"]);
}

// R27 to R30: signals.

/// R27.
#[test]
fn idle_stop_saves_nothing_and_exits() {
    let mut h = Harness::new(Config::default());
    h.signal(1_000, SignalKind::Shutdown, Origin::External).run_to_end();
    check(
        h.log(&["phase wait", "exit"]),
        "1000 g0 phase wait remaining=0 drained=true\n1000 g0 exit 0",
    );
    let empty: Box<Handover> = Box::default();
    let effects = [(1_000, Effect::Close), (1_000, Effect::Save(empty)), (1_000, Effect::Exit(0))];
    assert_eq!(h.effects(), effects);
}

/// R28.
#[test]
fn reload_runs_phases_in_order() {
    let mut h = Harness::new(debounced(5_000));
    h.run_goes(1, RunPlan::lasting(1_000)).run_goes(2, RunPlan::lasting(2_000));
    h.accept(0, msg("a/1").undebounced()).accept(0, msg("b/2"));
    h.signal(100, SignalKind::Reload, Origin::External).run_to_end();
    check(
        h.log(&["phase", "run_started", "run_finished", "generation_started"]),
        "
        0 g0 generation_started pending [] intake []
        0 g0 run_started 1 [1] attempt 1
        100 g0 phase hold
        100 g0 run_started 2 [2] attempt 1
        100 g0 phase flush flushed=1 remaining=0 drained=true
        1000 g0 run_finished 1 Success
        2100 g0 run_finished 2 Success
        2100 g0 phase wait remaining=0 drained=true
        2100 g0 phase mark_draining
        2100 g0 phase hand_over pending=0 intake=0
        2100 g0 phase close
        2100 g1 generation_started pending [] intake []
        ",
    );
}

/// A reload whose deadline comes before a long run ends, with two messages queued behind it.
fn reload_over_long_run() -> Harness {
    let mut h = reload_deadline(5_000);
    h.run_goes(1, RunPlan::lasting(60_000));
    h.accept(0, msg("a/1")).accept(0, msg("a/2")).accept(0, msg("a/3"));
    h.signal(0, SignalKind::Reload, Origin::External).run_to_end();
    h
}

/// R29: the default `collect` mode runs the two handed-over messages as one run, in order.
#[test]
fn drain_deadline_hands_queue_over() {
    let h = reload_over_long_run();
    check(
        h.log(&[
            "drain_warning",
            "handed_over",
            "generation_started",
            "run_started",
            "run_finished",
        ]),
        "
        0 g0 generation_started pending [] intake []
        0 g0 run_started 1 [1] attempt 1
        5000 g0 drain_warning remaining=3
        5000 g0 handed_over pending [2 3] intake []
        5000 g1 generation_started pending [2 3] intake []
        60000 g1 run_finished 1 Success
        60000 g1 run_started 2 [2 3] attempt 1
        60000 g1 run_finished 2 Success
        ",
    );
    let cancelled =
        h.effects().iter().any(|(_, effect)| matches!(effect, Effect::CancelRun { .. }));
    assert!(!cancelled, "the run continues in the background");
}

/// R29, the log line.
#[test]
#[traced_test]
fn drain_warning_logs_remaining() {
    reload_over_long_run();
    logs_assert(logged("drain deadline reached", 1, &["WARN", "remaining=3"]));
}

/// R30.
#[test]
#[traced_test]
fn refused_external_reload_changes_nothing() {
    let mut config = debounced(5_000);
    config.reload.allow_external = false;
    let mut h = Harness::new(config);
    h.accept(0, msg("a/1")).run_until(100);
    let before = h.gateway().status();

    h.signal(100, SignalKind::Reload, Origin::External).run_until(100);
    assert_eq!(h.gateway().status(), before);
    check(
        h.log(&["signal", "signal_ignored", "restart_began", "phase"]),
        "
        100 g0 signal Reload External
        100 g0 signal_ignored Reload ExternalReloadRefused
        ",
    );
    logs_assert(logged("external reload refused", 1, &["WARN"]));
}
