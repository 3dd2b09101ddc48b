//! The session pipeline (SPEC 3): one run per session, followup queues, retries and the drain.
//!
//! Admission is immediate and never waits for a run: an idle session starts a run with the
//! batch, a busy one queues it. Everything that takes time (a run, the quiet wait, a retry's
//! back-off, a run's timeout) is a timer that the gateway turns into a `tick`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use crate::config::{DropPolicy, QueueMode, QueueSettings};
use crate::effect::{Effect, Outbox};
use crate::event::{Admission, Cause, Event, OutcomeKind, RunEnd, RunId};
use crate::handover::SessionWork;
use crate::message::{Destination, Identity, Message, SessionId, Work};

/// The shortest back-off before a failed batch runs again.
pub const RETRY_MIN_MS: u64 = 100;

/// The longest summary line, in characters, including the ellipsis of a cut line.
pub const SUMMARY_LINE_MAX: usize = 160;

/// What a queue dropped under the `summarize` policy, for its next run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// How many messages were dropped.
    pub dropped: usize,
    /// One line per dropped message: whitespace collapsed, at most 160 characters.
    pub lines: Vec<String>,
}

impl Summary {
    fn add(&mut self, message: &Message) {
        self.dropped += 1;
        self.lines.push(summary_line(&message.text));
    }

    /// Joins a newer summary after this one: the counts add up, the lines stay oldest first.
    pub(crate) fn merge_after(&mut self, newer: Summary) {
        self.dropped += newer.dropped;
        self.lines.extend(newer.lines);
    }

    /// The summary as it opens a run's input.
    pub fn text(&self) -> String {
        let noun = if self.dropped == 1 { "message" } else { "messages" };
        let mut text = format!("Dropped {} {noun} due to cap.", self.dropped);
        for line in &self.lines {
            let _ = write!(text, "\n- {line}");
        }
        text
    }
}

/// One summary line: whitespace collapsed, cut to [`SUMMARY_LINE_MAX`] with an ellipsis.
pub fn summary_line(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= SUMMARY_LINE_MAX {
        return collapsed;
    }
    let mut cut: String = collapsed.chars().take(SUMMARY_LINE_MAX - 1).collect();
    cut.push('…');
    cut
}

/// A run in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// Its number.
    pub id: RunId,
    /// Its session.
    pub session: SessionId,
    /// Its batches, in order.
    pub work: Vec<Work>,
    /// The summary of dropped messages it reports first.
    pub summary: Option<Summary>,
    /// 1 for a first try, higher for retries.
    pub attempt: u32,
    /// Whether it was collected from the queue in `collect` mode.
    pub collected: bool,
    /// When it times out.
    pub timeout_at_ms: u64,
}

impl Run {
    /// Its messages, in order.
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.work.iter().flat_map(|work| work.batch.messages.iter())
    }

    /// Its messages' identities, in order.
    pub fn identities(&self) -> Vec<Identity> {
        self.messages().map(Message::identity).collect()
    }

    /// The agent's input: the summary first, then the messages; a collected run numbers them
    /// under a title line.
    pub fn text(&self) -> String {
        let mut parts = Vec::new();
        if let Some(summary) = &self.summary {
            parts.push(summary.text());
        }
        if self.collected {
            parts.push("Messages that arrived while the agent was busy:".to_owned());
            parts.extend(
                self.messages().enumerate().map(|(n, m)| format!("#{}\n{}", n + 1, m.text)),
            );
        } else {
            parts.extend(self.messages().map(|m| m.text.to_string()));
        }
        parts.join("\n\n")
    }
}

/// One session's followup queue and run state.
#[derive(Debug)]
struct Session {
    settings: QueueSettings,
    items: VecDeque<Work>,
    /// Messages in `items`; the cap counts messages.
    queued: usize,
    summary: Option<Summary>,
    /// The last append, for the quiet wait; `None` after a restore, which does not wait.
    last_append_ms: Option<u64>,
    /// A failed batch does not run again before this.
    retry_at_ms: u64,
    running: Option<RunId>,
    /// The armed drain timer, if any.
    drain_at_ms: Option<u64>,
}

impl Session {
    fn new(settings: QueueSettings) -> Self {
        Self {
            settings,
            items: VecDeque::new(),
            queued: 0,
            summary: None,
            last_append_ms: None,
            retry_at_ms: 0,
            running: None,
            drain_at_ms: None,
        }
    }

    fn is_idle(&self) -> bool {
        self.running.is_none()
    }

    /// When the next run may start: the quiet time after the last append and the back-off.
    fn ready_at_ms(&self) -> u64 {
        let quiet_at_ms = self.last_append_ms.map_or(0, |at| at + self.settings.quiet_ms);
        quiet_at_ms.max(self.retry_at_ms)
    }

    fn push_back(&mut self, work: Work) {
        self.queued += work.batch.len();
        self.items.push_back(work);
    }

    fn push_front(&mut self, work: Work) {
        self.queued += work.batch.len();
        self.items.push_front(work);
    }

    /// Drops the oldest messages until at most `cap` remain; returns them.
    fn drop_oldest(&mut self) -> Vec<Message> {
        let mut dropped = Vec::new();
        while self.queued > self.settings.cap {
            let Some(head) = self.items.front_mut() else { break };
            dropped.push(head.batch.messages.remove(0));
            self.queued -= 1;
            if head.batch.messages.is_empty() {
                self.items.pop_front();
            }
        }
        dropped
    }

    /// Takes the next run's batches: the head's destination in `collect` mode, else the head.
    fn take_next(&mut self) -> Vec<Work> {
        let taken = match self.settings.mode {
            QueueMode::Followup => self.items.pop_front().into_iter().collect(),
            QueueMode::Collect => self.take_destination(),
        };
        self.queued -= taken.iter().map(|w| w.batch.len()).sum::<usize>();
        taken
    }

    fn take_destination(&mut self) -> Vec<Work> {
        let Some(head) = self.items.front() else { return Vec::new() };
        let destination: Destination = head.batch.destination().clone();
        let (taken, kept): (Vec<Work>, Vec<Work>) =
            self.items.drain(..).partition(|w| *w.batch.destination() == destination);
        self.items = kept.into();
        taken
    }
}

/// Pending-work count of SPEC 3.5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainReport {
    /// Whether nothing was pending.
    pub drained: bool,
    /// Queued messages, plus one per queue with a pending summary, plus one per run.
    pub remaining: usize,
}

/// Every session's queue and run.
#[derive(Debug, Default)]
pub struct Pipeline {
    sessions: BTreeMap<SessionId, Session>,
    runs: BTreeMap<RunId, Run>,
    /// Armed drains: (when, session).
    drains: BTreeSet<(u64, SessionId)>,
    /// Run timeouts: (when, run).
    timeouts: BTreeSet<(u64, RunId)>,
    draining: bool,
    next_run: RunId,
    run_timeout_ms: u64,
    attempts_max: u32,
    /// The historical plan's quirks, for the simulation only.
    #[cfg(feature = "quirks")]
    quirks: crate::gateway::quirks::Quirks,
}

impl Pipeline {
    /// An empty pipeline whose runs time out after `run_timeout_ms` and whose batches are
    /// dead-lettered after `attempts_max` failures.
    pub fn new(run_timeout_ms: u64, attempts_max: u32) -> Self {
        assert!(attempts_max >= 1, "attempts_max is validated to be at least 1");
        Self { run_timeout_ms, attempts_max, next_run: 1, ..Self::default() }
    }

    /// Applies a new generation's run settings; runs in progress keep their timeouts.
    pub fn set_run_limits(&mut self, run_timeout_ms: u64, attempts_max: u32) {
        assert!(attempts_max >= 1, "attempts_max is validated to be at least 1");
        self.run_timeout_ms = run_timeout_ms;
        self.attempts_max = attempts_max;
    }

    /// Runs a historical plan's quirks from now on (the simulation only).
    #[cfg(feature = "quirks")]
    pub fn set_quirks(&mut self, quirks: crate::gateway::quirks::Quirks) {
        self.quirks = quirks;
    }

    /// Whether the gateway is draining: no run starts.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Starts or ends draining (SPEC 3.4). Armed drains fire again once it ends.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// A run in progress.
    pub fn run(&self, run: RunId) -> Option<&Run> {
        self.runs.get(&run)
    }

    /// Runs in progress, by number.
    pub fn runs(&self) -> impl ExactSizeIterator<Item = &Run> {
        self.runs.values()
    }

    /// Queued messages of every session, session by session in queue order.
    pub fn queued(&self) -> impl Iterator<Item = &Message> {
        let works = self.sessions.values().flat_map(|s| s.items.iter());
        works.flat_map(|work| work.batch.messages.iter())
    }

    /// How many messages are queued, summed over sessions.
    pub fn queued_count(&self) -> usize {
        self.sessions.values().map(|s| s.queued).sum()
    }

    /// What is still pending, counted as SPEC 3.5 says.
    pub fn remaining(&self) -> usize {
        let summaries = self.sessions.values().filter(|s| s.summary.is_some()).count();
        self.queued_count() + summaries + self.runs.len()
    }

    /// `wait_for_drain` without blocking: a report once nothing is pending or the deadline has
    /// come, `None` while the wait goes on.
    pub fn wait_for_drain(&self, now_ms: u64, deadline_ms: u64) -> Option<DrainReport> {
        let remaining = self.remaining();
        (remaining == 0 || now_ms >= deadline_ms)
            .then_some(DrainReport { drained: remaining == 0, remaining })
    }

    /// When the pipeline next needs a tick.
    pub fn next_deadline(&self) -> Option<u64> {
        let timeout = self.timeouts.first().map(|&(at, _)| at);
        let drain = self.drains.first().map(|&(at, _)| at).filter(|_| !self.draining);
        timeout.into_iter().chain(drain).min()
    }

    /// Admits a batch (SPEC 3.1, 3.3). Refuses it, handing it back, while draining.
    pub fn admit(
        &mut self,
        work: Work,
        settings: QueueSettings,
        out: &mut Outbox,
    ) -> Result<(), Work> {
        if self.draining {
            return Err(work);
        }
        let session_id = work.batch.session().clone();
        let session =
            self.sessions.entry(session_id.clone()).or_insert_with(|| Session::new(settings));
        session.settings = settings;

        if session.is_idle() && session.items.is_empty() {
            let run = self.start_run(out.at_ms, &session_id, vec![work], None, false);
            let messages = self.runs[&run].identities();
            out.event(Event::Admitted {
                session: session_id.clone(),
                messages,
                into: Admission::Run(run),
            });
            self.announce_run(run, out);
            return Ok(());
        }
        self.append(&session_id, work, out);
        Ok(())
    }

    /// Puts handed-over work back, as is: no cap, no quiet wait, its back-off kept.
    pub fn restore(&mut self, pending: SessionWork, settings: QueueSettings, now_ms: u64) {
        let session =
            self.sessions.entry(pending.session.clone()).or_insert_with(|| Session::new(settings));
        session.settings = settings;
        for work in pending.work {
            session.push_back(work);
        }
        if let Some(summary) = pending.summary {
            session.summary.get_or_insert_with(Summary::default).merge_after(summary);
        }
        session.retry_at_ms = session.retry_at_ms.max(now_ms + pending.retry_in_ms);
        self.arm_drain(&pending.session);
    }

    /// A run ended as the agent reported. Returns false for a run that is no longer wanted
    /// (it timed out or was interrupted before).
    pub fn run_finished(&mut self, run: RunId, success: bool, out: &mut Outbox) -> bool {
        if !self.runs.contains_key(&run) {
            return false;
        }
        if success {
            self.deliver(run, out);
        } else {
            self.fail(run, RunEnd::Failure, out);
        }
        true
    }

    /// Fires due timeouts, then due drains.
    pub fn tick(&mut self, out: &mut Outbox) {
        let now_ms = out.at_ms;
        while let Some(&(at_ms, run)) = self.timeouts.first() {
            if at_ms > now_ms {
                break;
            }
            out.effect(Effect::CancelRun { run });
            self.fail(run, RunEnd::Timeout, out);
        }
        while !self.draining {
            let Some((at_ms, session)) = self.drains.first().cloned() else { break };
            if at_ms > now_ms {
                break;
            }
            self.fire_drain(&session, out);
        }
    }

    /// Takes every queue's pending work out, for the handover: session by session, each in
    /// queue order, with its summary and what is left of its back-off.
    pub fn take_pending(&mut self, now_ms: u64) -> Vec<SessionWork> {
        let mut pending = Vec::new();
        for (id, session) in &mut self.sessions {
            if session.items.is_empty() && session.summary.is_none() {
                continue;
            }
            if let Some(at_ms) = session.drain_at_ms.take() {
                self.drains.remove(&(at_ms, id.clone()));
            }
            session.queued = 0;
            pending.push(SessionWork {
                session: id.clone(),
                work: session.items.drain(..).collect(),
                summary: session.summary.take(),
                retry_in_ms: session.retry_at_ms.saturating_sub(now_ms),
            });
        }
        pending
    }

    /// Cuts every run short for a stop: their batches come back marked interrupted, attempts
    /// unchanged, to be saved at the head of their session.
    pub fn interrupt_all(&mut self, out: &mut Outbox) -> Vec<SessionWork> {
        let ids: Vec<RunId> = self.runs.keys().copied().collect();
        let mut interrupted = Vec::new();
        for id in ids {
            let run = self.end_run(id);
            out.effect(Effect::CancelRun { run: id });
            out.event(Event::RunFinished {
                run: id,
                session: run.session.clone(),
                end: RunEnd::Interrupted,
            });
            let work = run.work.into_iter().map(|w| Work { interrupted: true, ..w }).collect();
            interrupted.push(SessionWork {
                session: run.session,
                work,
                summary: run.summary,
                retry_in_ms: 0,
            });
        }
        interrupted
    }

    fn append(&mut self, session_id: &SessionId, work: Work, out: &mut Outbox) {
        let Some(session) = self.sessions.get_mut(session_id) else {
            unreachable!("append follows the session's creation");
        };
        let cap = session.settings.cap;
        if session.settings.drop == DropPolicy::New && session.queued >= cap {
            for message in work.batch.messages {
                out.event(outcome(&message, OutcomeKind::RejectedOverflow, Cause::Cap(cap)));
            }
            return;
        }

        out.event(Event::Admitted {
            session: session_id.clone(),
            messages: work.batch.identities(),
            into: Admission::Queued,
        });
        session.push_back(work);
        session.last_append_ms = Some(out.at_ms);
        // Under `new` only a full queue refuses (above), so a batch larger than the room left
        // is taken whole: its messages are never `dropped_overflow`.
        let dropped = if session.settings.drop == DropPolicy::New {
            Vec::new()
        } else {
            session.drop_oldest()
        };
        if session.settings.drop == DropPolicy::Summarize && !dropped.is_empty() {
            let summary = session.summary.get_or_insert_with(Summary::default);
            dropped.iter().for_each(|m| summary.add(m));
        }
        for message in &dropped {
            out.event(outcome(message, OutcomeKind::DroppedOverflow, Cause::Cap(cap)));
        }
        self.arm_drain(session_id);
    }

    fn fire_drain(&mut self, session_id: &SessionId, out: &mut Outbox) {
        let Some(session) = self.sessions.get_mut(session_id) else { return };
        if let Some(at_ms) = session.drain_at_ms.take() {
            self.drains.remove(&(at_ms, session_id.clone()));
        }
        if !session.is_idle() || session.items.is_empty() {
            return;
        }
        let collected = session.settings.mode == QueueMode::Collect;
        let work = session.take_next();
        let summary = session.summary.take();
        let run = self.start_run(out.at_ms, session_id, work, summary, collected);
        self.announce_run(run, out);
    }

    fn start_run(
        &mut self,
        now_ms: u64,
        session_id: &SessionId,
        work: Vec<Work>,
        summary: Option<Summary>,
        collected: bool,
    ) -> RunId {
        assert!(!work.is_empty(), "a run holds at least one batch");
        let id = self.next_run;
        self.next_run += 1;
        let attempt = 1 + work.iter().map(|w| w.attempts).max().unwrap_or(0);
        let work = work.into_iter().map(|w| Work { interrupted: false, ..w }).collect();
        let timeout_at_ms = now_ms + self.run_timeout_ms;

        let session = self.sessions.get_mut(session_id).expect("a run's session exists");
        assert!(session.running.is_none(), "one run per session");
        session.running = Some(id);
        self.timeouts.insert((timeout_at_ms, id));
        let run = Run {
            id,
            session: session_id.clone(),
            work,
            summary,
            attempt,
            collected,
            timeout_at_ms,
        };
        self.runs.insert(id, run);
        id
    }

    fn announce_run(&self, id: RunId, out: &mut Outbox) {
        let run = &self.runs[&id];
        out.event(Event::RunStarted {
            run: id,
            session: run.session.clone(),
            attempt: run.attempt,
            messages: run.identities(),
            summarized: run.summary.as_ref().map_or(0, |s| s.dropped),
        });
        out.effect(Effect::StartRun { run: id });
    }

    fn end_run(&mut self, id: RunId) -> Run {
        let run = self.runs.remove(&id).expect("only a run in progress ends");
        self.timeouts.remove(&(run.timeout_at_ms, id));
        let session = self.sessions.get_mut(&run.session).expect("a run's session exists");
        assert_eq!(session.running, Some(id), "the session runs this run");
        session.running = None;
        run
    }

    fn deliver(&mut self, id: RunId, out: &mut Outbox) {
        let run = self.end_run(id);
        out.event(Event::RunFinished {
            run: id,
            session: run.session.clone(),
            end: RunEnd::Success,
        });
        for message in run.messages() {
            out.event(outcome(message, OutcomeKind::Delivered, Cause::Run(id)));
        }
        self.arm_drain(&run.session);
    }

    /// A run failed or timed out: its batches go back to the head of the queue with their
    /// attempts raised, or are dead-lettered at `attempts_max` (SPEC 3.1).
    fn fail(&mut self, id: RunId, end: RunEnd, out: &mut Outbox) {
        let run = self.end_run(id);
        out.event(Event::RunFinished { run: id, session: run.session.clone(), end });
        let (dead, retry): (Vec<Work>, Vec<Work>) = run
            .work
            .into_iter()
            .map(|w| Work { attempts: w.attempts + 1, ..w })
            .partition(|w| w.attempts >= self.attempts_max);

        self.dead_letter(&dead, out);
        self.requeue(id, &run.session, retry, run.summary, out);
        self.arm_drain(&run.session);
    }

    fn dead_letter(&self, dead: &[Work], out: &mut Outbox) {
        for work in dead {
            let ids = work.batch.identities();
            tracing::error!(messages = ?ids, attempts = work.attempts, "batch dead-lettered");
            for message in &work.batch.messages {
                out.event(outcome(
                    message,
                    OutcomeKind::DeadLettered,
                    Cause::Attempts(work.attempts),
                ));
            }
        }
    }

    fn requeue(
        &mut self,
        run: RunId,
        session_id: &SessionId,
        retry: Vec<Work>,
        summary: Option<Summary>,
        out: &mut Outbox,
    ) {
        let session = self.sessions.get_mut(session_id).expect("a run's session exists");
        if retry.is_empty() && session.items.is_empty() {
            return;
        }
        let back_off_ms = session.settings.quiet_ms.max(RETRY_MIN_MS);
        #[cfg(feature = "quirks")]
        let back_off_ms = self.quirks.back_off_ms(self.draining, back_off_ms);
        let retry_at_ms = out.at_ms + back_off_ms;
        session.retry_at_ms = retry_at_ms;
        if let Some(mut older) = summary {
            if let Some(newer) = session.summary.take() {
                older.merge_after(newer);
            }
            session.summary = Some(older);
        }
        if retry.is_empty() {
            return;
        }
        let messages = retry.iter().flat_map(|w| w.batch.identities()).collect();
        for work in retry.into_iter().rev() {
            session.push_front(work);
        }
        out.event(Event::Requeued { run, session: session_id.clone(), messages, retry_at_ms });
    }

    /// Arms the session's drain if it is idle with work queued; a session that is running is
    /// kicked again when its run ends.
    fn arm_drain(&mut self, session_id: &SessionId) {
        let Some(session) = self.sessions.get_mut(session_id) else { return };
        if let Some(at_ms) = session.drain_at_ms.take() {
            self.drains.remove(&(at_ms, session_id.clone()));
        }
        if !session.is_idle() || session.items.is_empty() {
            return;
        }
        let at_ms = session.ready_at_ms();
        session.drain_at_ms = Some(at_ms);
        self.drains.insert((at_ms, session_id.clone()));
    }
}

fn outcome(message: &Message, kind: OutcomeKind, cause: Cause) -> Event {
    Event::Outcome { message: message.identity(), kind, cause }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Batch;

    fn message(id: &str, destination: &str) -> Message {
        Message {
            channel: "tg".into(),
            id: id.into(),
            key: Some(destination.into()),
            session: "s".into(),
            destination: destination.into(),
            text: id.into(),
            debounce: false,
            window_ms: None,
        }
    }

    fn settings(mode: QueueMode, drop: DropPolicy, quiet_ms: u64) -> QueueSettings {
        QueueSettings { mode, cap: 2, drop, quiet_ms }
    }

    /// A pipeline whose session `s` runs message `r` as run 1, at t=0.
    fn busy(settings: QueueSettings, attempts_max: u32) -> (Pipeline, Outbox) {
        let mut pipeline = Pipeline::new(600_000, attempts_max);
        let mut out = Outbox::default();
        admit(&mut pipeline, &mut out, settings, &["r"]);
        (pipeline, out)
    }

    /// Admits one batch of messages to destination `d`.
    fn admit(pipeline: &mut Pipeline, out: &mut Outbox, settings: QueueSettings, ids: &[&str]) {
        let messages = ids.iter().map(|id| message(id, "d")).collect();
        let work = Work::fresh(Batch { messages });
        pipeline.admit(work, settings, out).expect("the pipeline is not draining");
    }

    fn queued(pipeline: &Pipeline) -> Vec<&str> {
        pipeline.queued().map(|m| m.id.as_str()).collect()
    }

    /// The events of a kind, as short lines.
    fn lines(out: &Outbox) -> Vec<String> {
        let lines = out.events.iter().filter_map(|stamped| match &stamped.event {
            Event::RunStarted { run, messages, attempt, .. } => {
                let ids: Vec<&str> = messages.iter().map(|i| i.id.as_str()).collect();
                Some(format!("{} run {run} {ids:?} attempt {attempt}", stamped.at_ms))
            }
            Event::Requeued { run, retry_at_ms, .. } => {
                Some(format!("{} requeued {run} retry_at {retry_at_ms}", stamped.at_ms))
            }
            Event::Outcome { message, kind, .. } if *kind != OutcomeKind::Delivered => {
                Some(format!("{} {} {}", stamped.at_ms, message.id, kind.name()))
            }
            _ => None,
        });
        lines.collect()
    }

    #[test]
    fn summary_line_collapses_whitespace() {
        assert_eq!(summary_line("  see \t you\n\n  at  noon "), "see you at noon");
    }

    #[test]
    fn summary_line_cuts_at_160_characters() {
        let fits = "é".repeat(SUMMARY_LINE_MAX);
        assert_eq!(summary_line(&fits), fits);

        let cut = summary_line(&"é".repeat(SUMMARY_LINE_MAX + 1));
        assert_eq!(cut.chars().count(), SUMMARY_LINE_MAX);
        assert_eq!(cut, format!("{}…", "é".repeat(SUMMARY_LINE_MAX - 1)));
    }

    /// SPEC 3.3 refuses a batch only when the queue already holds `cap` messages, so a batch
    /// larger than the cap is taken whole by a queue below it.
    #[test]
    fn new_policy_takes_batch_larger_than_cap() {
        let settings = settings(QueueMode::Collect, DropPolicy::New, 500);
        let (mut pipeline, mut out) = busy(settings, 5);
        admit(&mut pipeline, &mut out, settings, &["a", "b", "c"]);
        assert_eq!(queued(&pipeline), ["a", "b", "c"]);

        admit(&mut pipeline, &mut out, settings, &["d"]);
        assert_eq!(queued(&pipeline), ["a", "b", "c"]);
        assert_eq!(lines(&out), ["0 run 1 [\"r\"] attempt 1", "0 d rejected_overflow"]);
    }

    #[test]
    fn old_policy_trims_batch_larger_than_cap() {
        let settings = settings(QueueMode::Collect, DropPolicy::Old, 500);
        let (mut pipeline, mut out) = busy(settings, 5);
        admit(&mut pipeline, &mut out, settings, &["a", "b", "c"]);
        assert_eq!(queued(&pipeline), ["b", "c"]);
        assert_eq!(lines(&out), ["0 run 1 [\"r\"] attempt 1", "0 a dropped_overflow"]);
        assert_eq!(pipeline.take_pending(0)[0].summary, None);
    }

    #[test]
    fn summarize_policy_summarizes_batch_larger_than_cap() {
        let settings = settings(QueueMode::Collect, DropPolicy::Summarize, 500);
        let (mut pipeline, mut out) = busy(settings, 5);
        admit(&mut pipeline, &mut out, settings, &["a", "b", "c"]);
        assert_eq!(queued(&pipeline), ["b", "c"]);
        assert_eq!(lines(&out), ["0 run 1 [\"r\"] attempt 1", "0 a dropped_overflow"]);
        let summary = Summary { dropped: 1, lines: vec!["a".to_owned()] };
        assert_eq!(pipeline.take_pending(0)[0].summary, Some(summary));
    }

    #[test]
    fn dead_letters_after_attempts_max() {
        let settings = settings(QueueMode::Collect, DropPolicy::Summarize, 0);
        let (mut pipeline, mut out) = busy(settings, 2);
        pipeline.run_finished(1, false, &mut out);
        out.at_ms = 100;
        pipeline.tick(&mut out);
        pipeline.run_finished(2, false, &mut out);

        let expected = [
            "0 run 1 [\"r\"] attempt 1",
            "0 requeued 1 retry_at 100",
            "100 run 2 [\"r\"] attempt 2",
            "100 r dead_lettered",
        ];
        assert_eq!(lines(&out), expected);
        assert_eq!(pipeline.remaining(), 0);
        assert_eq!(pipeline.next_deadline(), None);
    }

    #[test]
    fn retry_waits_at_least_100_ms() {
        let settings = settings(QueueMode::Collect, DropPolicy::Summarize, 0);
        let (mut pipeline, mut out) = busy(settings, 5);
        out.at_ms = 40;
        pipeline.run_finished(1, false, &mut out);
        assert_eq!(pipeline.next_deadline(), Some(140));

        out.at_ms = 139;
        pipeline.tick(&mut out);
        assert_eq!(pipeline.runs().count(), 0, "no retry before its back-off");
        out.at_ms = 140;
        pipeline.tick(&mut out);
        assert_eq!(lines(&out)[1..], ["40 requeued 1 retry_at 140", "140 run 2 [\"r\"] attempt 2"]);
    }

    #[test]
    fn retry_waits_quiet_time_when_longer() {
        let settings = settings(QueueMode::Collect, DropPolicy::Summarize, 500);
        let (mut pipeline, mut out) = busy(settings, 5);
        out.at_ms = 40;
        pipeline.run_finished(1, false, &mut out);
        assert_eq!(lines(&out)[1..], ["40 requeued 1 retry_at 540"]);
        assert_eq!(pipeline.next_deadline(), Some(540));
    }

    #[test]
    fn collect_takes_only_head_destination() {
        let settings =
            QueueSettings { cap: 20, ..settings(QueueMode::Collect, DropPolicy::Summarize, 0) };
        let mut pipeline = Pipeline::new(600_000, 5);
        let mut out = Outbox::default();
        for (id, destination) in [("r", "d0"), ("1", "d1"), ("2", "d2"), ("3", "d1")] {
            let work = Work::fresh(Batch::single(message(id, destination)));
            pipeline.admit(work, settings, &mut out).expect("the pipeline is not draining");
        }

        pipeline.run_finished(1, true, &mut out);
        pipeline.tick(&mut out);
        assert_eq!(queued(&pipeline), ["2"]);
        pipeline.run_finished(2, true, &mut out);
        pipeline.tick(&mut out);

        let runs = [
            "0 run 1 [\"r\"] attempt 1",
            "0 run 2 [\"1\", \"3\"] attempt 1",
            "0 run 3 [\"2\"] attempt 1",
        ];
        assert_eq!(lines(&out), runs);
    }

    /// A new generation's run limits apply to the runs it starts: a run timeout of 50 ms and
    /// one attempt dead-letter the batch at 50 ms.
    #[test]
    fn new_run_limits_apply_to_the_next_run() {
        let mut pipeline = Pipeline::new(600_000, 5);
        pipeline.set_run_limits(50, 1);
        let mut out = Outbox::default();
        admit(&mut pipeline, &mut out, settings(QueueMode::Followup, DropPolicy::Old, 0), &["r"]);
        out.at_ms = 50;
        pipeline.tick(&mut out);
        assert_eq!(lines(&out), ["0 run 1 [\"r\"] attempt 1", "50 r dead_lettered"]);
    }

    /// Each batch's attempts and interrupted mark.
    fn marks(pending: &SessionWork) -> Vec<(u32, bool)> {
        pending.work.iter().map(|w| (w.attempts, w.interrupted)).collect()
    }

    /// A batch cut short by a stop comes back marked interrupted with its attempts unchanged;
    /// once it runs again the mark is gone, so a later handover does not repeat it.
    #[test]
    fn an_interrupted_batch_is_marked_until_it_runs_again() {
        let settings = settings(QueueMode::Followup, DropPolicy::Old, 0);
        let (mut pipeline, mut out) = busy(settings, 5);
        let mut cut = pipeline.interrupt_all(&mut out);
        assert_eq!(cut.len(), 1);
        assert_eq!(marks(&cut[0]), [(0, true)]);

        pipeline.restore(cut.remove(0), settings, 0);
        pipeline.tick(&mut out);
        let run = pipeline.runs().next().map(|run| run.id).expect("the restored batch runs");
        pipeline.run_finished(run, false, &mut out);
        let pending = pipeline.take_pending(0);
        assert_eq!(marks(&pending[0]), [(1, false)]);
    }

    /// A drain that fires while its session runs starts nothing: one run per session.
    #[test]
    fn a_drain_on_a_busy_session_starts_nothing() {
        let settings = settings(QueueMode::Followup, DropPolicy::Old, 0);
        let (mut pipeline, mut out) = busy(settings, 5);
        admit(&mut pipeline, &mut out, settings, &["1"]);
        pipeline.fire_drain(&"s".into(), &mut out);
        assert_eq!(pipeline.runs().count(), 1);
        assert_eq!(queued(&pipeline), ["1"]);
    }
}
