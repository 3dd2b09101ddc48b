//! The journal: turns the core's typed events into the daemon's three JSON-lines and text
//! files: the event log, the deliveries and the dead letters.
//!
//! It reads the events the shell publishes ([`crate::Shell::with_events`]), in order, so what it
//! writes is exactly what the gateway decided:
//!
//! - every event becomes one line of the canonical event log ([`crate::event_log`]), the same
//!   format the simulation writes;
//! - a run that ended in success becomes one line of the deliveries file, with the request
//!   the agent was given (noted in the [`RunBook`]); a run the core cancelled or interrupted
//!   never does, so a run that is run again after a stop is written once;
//! - every other outcome of a message (dead-lettered, dropped or rejected by a full queue,
//!   failed admission, cancelled) becomes one line of the dead-letters file.
//!
//! Writes are buffered and flushed whenever no more events are waiting, so the files lag the
//! gateway by at most one burst of events. A write error is logged once per file and counted;
//! the gateway goes on, since the outcome stands whether or not it could be written down.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::daemon::agent::RunBook;
use crate::event::{Event, OutcomeKind, RunEnd, RunId, Stamped};
use crate::event_log::{self, CauseText};
use crate::message::{Identity, Message};
use crate::shell::RunRequest;

/// Where the journal writes; each file is optional.
#[derive(Default)]
pub struct Outputs {
    /// The canonical event log, one line per event.
    pub event_log: Option<Box<dyn Write + Send>>,
    /// One JSON line per delivered run.
    pub deliveries: Option<Box<dyn Write + Send>>,
    /// One JSON line per message that ended other than delivered.
    pub dead_letters: Option<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outputs")
            .field("event_log", &self.event_log.is_some())
            .field("deliveries", &self.deliveries.is_some())
            .field("dead_letters", &self.dead_letters.is_some())
            .finish()
    }
}

/// What the journal saw and wrote over one boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalReport {
    /// Events received.
    pub events: u64,
    /// Messages the state file held when the boot restored it.
    pub restored: usize,
    /// Runs delivered.
    pub runs_delivered: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages that ended other than delivered.
    pub dead_letters: u64,
    /// Lines that could not be written or flushed.
    pub write_errors: u64,
}

/// One output file, with what went wrong writing it.
struct Sink {
    name: &'static str,
    writer: Option<Box<dyn Write + Send>>,
    /// Whether an error was logged already; later ones are only counted.
    failed: bool,
}

impl Sink {
    fn new(name: &'static str, writer: Option<Box<dyn Write + Send>>) -> Self {
        Self { name, writer, failed: false }
    }

    fn is_open(&self) -> bool {
        self.writer.is_some()
    }

    /// Writes `line` and a newline; returns whether it worked (true when there is no file).
    fn line(&mut self, line: &str) -> bool {
        let Some(writer) = &mut self.writer else { return true };
        let written = writer.write_all(line.as_bytes()).and_then(|()| writer.write_all(b"\n"));
        self.check(written)
    }

    fn flush(&mut self) -> bool {
        let Some(writer) = &mut self.writer else { return true };
        let flushed = writer.flush();
        self.check(flushed)
    }

    fn check(&mut self, result: std::io::Result<()>) -> bool {
        let Err(error) = result else { return true };
        if !self.failed {
            tracing::error!(file = self.name, %error, "journal file not written; going on");
            self.failed = true;
        }
        false
    }
}

/// A message known from a run that did not succeed, kept until its outcome is known.
struct Known {
    message: Message,
    attempt: u32,
}

/// Writes the daemon's files from the core's events; see the module docs.
pub struct Journal {
    event_log: Sink,
    deliveries: Sink,
    dead_letters: Sink,
    book: RunBook,
    /// Messages of runs that failed, timed out or were interrupted, for the dead-letter line.
    known: BTreeMap<Identity, Known>,
    report: JournalReport,
    /// Reused for each event-log line.
    text: String,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("report", &self.report).finish_non_exhaustive()
    }
}

/// A delivered run, as one line of the deliveries file.
#[derive(Serialize)]
struct DeliveryLine<'a> {
    at_ms: u64,
    boot: u32,
    generation: u32,
    run: RunId,
    session: &'a str,
    attempt: u32,
    messages: Vec<MessageRef<'a>>,
    text: &'a str,
}

/// A message named in a delivery line.
#[derive(Serialize)]
struct MessageRef<'a> {
    channel: &'a str,
    id: &'a str,
    key: Option<&'a str>,
}

/// A message that ended other than delivered, as one line of the dead-letters file.
#[derive(Serialize)]
struct DeadLetterLine<'a> {
    at_ms: u64,
    boot: u32,
    generation: u32,
    channel: &'a str,
    id: &'a str,
    outcome: &'static str,
    cause: String,
    /// The rest is known only for a message that was in a run.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

impl Journal {
    /// A journal writing to `outputs`, taking run requests from `book`.
    pub fn new(outputs: Outputs, book: RunBook) -> Self {
        Self {
            event_log: Sink::new("event log", outputs.event_log),
            deliveries: Sink::new("deliveries", outputs.deliveries),
            dead_letters: Sink::new("dead letters", outputs.dead_letters),
            book,
            known: BTreeMap::new(),
            report: JournalReport::default(),
            text: String::with_capacity(128),
        }
    }

    /// What it saw and wrote so far.
    pub fn report(&self) -> JournalReport {
        self.report
    }

    /// Writes what one event means for each file.
    pub fn record(&mut self, stamped: &Stamped) {
        self.report.events += 1;
        if self.event_log.is_open() {
            self.text.clear();
            event_log::write_line(&mut self.text, stamped);
            let written = self.event_log.line(&self.text);
            self.count(written);
        }

        match &stamped.event {
            Event::StateRestored { messages } => self.report.restored += messages.len(),
            Event::RunFinished { run, end: RunEnd::Success, .. } => self.delivered(stamped, *run),
            Event::RunFinished { run, .. } => self.remember(*run),
            Event::Outcome { message, kind: OutcomeKind::Delivered, .. } => {
                self.known.remove(message);
            }
            Event::Outcome { .. } => self.dead_letter(stamped),
            _ => {}
        }
    }

    /// Records every event already waiting in `events`, without waiting for more, and flushes.
    pub fn record_ready(&mut self, events: &mut mpsc::UnboundedReceiver<Stamped>) {
        while let Ok(stamped) = events.try_recv() {
            self.record(&stamped);
        }
        self.flush();
    }

    /// Records events until every sender is gone, flushing whenever none is waiting.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe as far as events go (each is taken from the channel only when it is
    /// recorded), but lines written and not yet flushed are lost with the journal.
    pub async fn run(mut self, mut events: mpsc::UnboundedReceiver<Stamped>) -> JournalReport {
        while let Some(stamped) = events.recv().await {
            self.record(&stamped);
            self.record_ready(&mut events);
        }
        self.flush();
        self.report
    }

    /// Flushes every file.
    pub fn flush(&mut self) {
        for sink in [&mut self.event_log, &mut self.deliveries, &mut self.dead_letters] {
            let flushed = sink.flush();
            if !flushed {
                self.report.write_errors += 1;
            }
        }
    }

    fn count(&mut self, written: bool) {
        if !written {
            self.report.write_errors += 1;
        }
    }

    fn delivered(&mut self, stamped: &Stamped, run: RunId) {
        let Some(request) = self.book.take(run) else {
            tracing::error!(run, "delivered run missing from the run book; not journaled");
            return;
        };
        self.report.runs_delivered += 1;
        self.report.delivered += request.messages.len() as u64;
        if !self.deliveries.is_open() {
            return;
        }

        let line = delivery_line(stamped, &request);
        let written = self.deliveries.line(&line);
        self.count(written);
    }

    /// Keeps the messages of a run that ended other than in success, for their dead-letter
    /// line if they end there.
    fn remember(&mut self, run: RunId) {
        let Some(request) = self.book.take(run) else { return };
        for message in request.messages {
            let known = Known { message, attempt: request.attempt };
            self.known.insert(known.message.identity(), known);
        }
    }

    fn dead_letter(&mut self, stamped: &Stamped) {
        let Event::Outcome { message, kind, cause } = &stamped.event else { return };
        let known = self.known.remove(message);
        self.report.dead_letters += 1;
        if !self.dead_letters.is_open() {
            return;
        }

        let line = DeadLetterLine {
            at_ms: stamped.at_ms,
            boot: stamped.boot,
            generation: stamped.generation,
            channel: message.channel.as_str(),
            id: message.id.as_str(),
            outcome: kind.name(),
            cause: CauseText(cause).to_string(),
            key: known.as_ref().and_then(|k| k.message.key.as_ref()).map(|k| k.as_str()),
            session: known.as_ref().map(|k| k.message.session.as_str()),
            attempt: known.as_ref().map(|k| k.attempt),
            text: known.as_ref().map(|k| &*k.message.text),
        };
        let line = serde_json::to_string(&line).expect("a dead-letter line always serializes");
        let written = self.dead_letters.line(&line);
        self.count(written);
    }
}

fn delivery_line(stamped: &Stamped, request: &RunRequest) -> String {
    let messages = request
        .messages
        .iter()
        .map(|m| MessageRef {
            channel: m.channel.as_str(),
            id: m.id.as_str(),
            key: m.key.as_ref().map(|k| k.as_str()),
        })
        .collect();
    let line = DeliveryLine {
        at_ms: stamped.at_ms,
        boot: stamped.boot,
        generation: stamped.generation,
        run: request.run,
        session: request.session.as_str(),
        attempt: request.attempt,
        messages,
        text: &request.text,
    };
    serde_json::to_string(&line).expect("a delivery line always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Cause;
    use std::sync::{Arc, Mutex};

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("not poisoned").clone()).expect("utf-8")
        }
    }

    fn message(id: &str) -> Message {
        Message {
            channel: "tg".into(),
            id: id.into(),
            key: Some("k".into()),
            session: "s".into(),
            destination: "d".into(),
            text: id.into(),
            debounce: true,
            window_ms: None,
        }
    }

    fn stamped(at_ms: u64, event: Event) -> Stamped {
        Stamped { at_ms, boot: 1, generation: 0, event }
    }

    fn request(run: RunId, ids: &[&str], attempt: u32) -> RunRequest {
        let messages: Vec<Message> = ids.iter().map(|id| message(id)).collect();
        RunRequest { run, session: "s".into(), attempt, messages, text: "t".into() }
    }

    #[test]
    fn writes_a_delivery_for_a_successful_run_only() {
        let (deliveries, dead_letters, log) =
            (Shared::default(), Shared::default(), Shared::default());
        let book = RunBook::default();
        let outputs = Outputs {
            event_log: Some(Box::new(log.clone())),
            deliveries: Some(Box::new(deliveries.clone())),
            dead_letters: Some(Box::new(dead_letters.clone())),
        };
        let mut journal = Journal::new(outputs, book.clone());

        book.insert(request(1, &["m1"], 1));
        journal.record(&stamped(
            5,
            Event::RunFinished { run: 1, session: "s".into(), end: RunEnd::Failure },
        ));
        book.insert(request(2, &["m1"], 2));
        journal.record(&stamped(
            9,
            Event::RunFinished { run: 2, session: "s".into(), end: RunEnd::Success },
        ));
        journal.flush();

        assert_eq!(
            deliveries.text(),
            "{\"at_ms\":9,\"boot\":1,\"generation\":0,\"run\":2,\"session\":\"s\",\"attempt\":2,\
             \"messages\":[{\"channel\":\"tg\",\"id\":\"m1\",\"key\":\"k\"}],\"text\":\"t\"}\n"
        );
        assert_eq!(dead_letters.text(), "");
        assert_eq!(log.text().lines().count(), 2);
        assert_eq!(journal.report().delivered, 1);
    }

    #[test]
    fn writes_a_dead_letter_with_what_the_run_knew() {
        let dead_letters = Shared::default();
        let book = RunBook::default();
        let outputs =
            Outputs { dead_letters: Some(Box::new(dead_letters.clone())), ..Outputs::default() };
        let mut journal = Journal::new(outputs, book.clone());
        let identity = message("m1").identity();

        book.insert(request(3, &["m1"], 2));
        journal.record(&stamped(
            7,
            Event::RunFinished { run: 3, session: "s".into(), end: RunEnd::Timeout },
        ));
        journal.record(&stamped(
            7,
            Event::Outcome {
                message: identity,
                kind: OutcomeKind::DeadLettered,
                cause: Cause::Attempts(2),
            },
        ));
        journal.flush();

        assert_eq!(
            dead_letters.text(),
            "{\"at_ms\":7,\"boot\":1,\"generation\":0,\"channel\":\"tg\",\"id\":\"m1\",\
             \"outcome\":\"dead_lettered\",\"cause\":\"attempts:2\",\"key\":\"k\",\
             \"session\":\"s\",\"attempt\":2,\"text\":\"m1\"}\n"
        );
    }
}
