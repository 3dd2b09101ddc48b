//! The canonical event log: one text line per entry, the same on every machine.
//!
//! The log is what a failing run prints, what insta snapshots and what a reviewer reads in a
//! pull request, so it has one fixed format (documented line by line in `docs/EVENT_LOG.md`):
//!
//! ```text
//!     1050 b1 g0 run_finished run=1 session=s1 end=success
//! ```
//!
//! virtual time in ms, right-aligned; the boot and generation; the event's name in snake_case;
//! then its fields in a fixed order as `name=value`. Everything in a line comes from the entry
//! itself: no pointers, clocks or hash order. Rendering costs time, so exploration checks the
//! typed entries and renders only when a log is wanted.

use std::fmt::{self, Display, Write};

use quiesce::event::{
    Admission, Cause, Event, FlushCause, IgnoreReason, Phase, PhaseCounts, Refusal, RunEnd,
};
use quiesce::message::Identity;
use quiesce::signal::{Origin, SignalKind};

use crate::driver::{Entry, Note};

/// The width of the time column; later times widen the line rather than being cut.
const TIME_WIDTH: usize = 8;

/// The whole log, one line per entry, each ending in a newline.
pub fn render(entries: &[Entry]) -> String {
    let mut out = String::with_capacity(entries.len() * 64);
    for entry in entries {
        render_entry(&mut out, entry);
        out.push('\n');
    }
    out
}

/// One entry's line, without the newline.
pub fn render_line(entry: &Entry) -> String {
    let mut out = String::new();
    render_entry(&mut out, entry);
    out
}

/// The first entry where two runs of the same scenario differ, and a sentence naming it with
/// its virtual time; `None` if the two logs are identical.
pub fn first_divergence(a: &[Entry], b: &[Entry]) -> Option<(usize, String)> {
    let differing = a.iter().zip(b).position(|(x, y)| x != y);
    let n = differing.or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))?;

    let at_ms = a.get(n).or(b.get(n)).map_or(0, Entry::at_ms);
    let line = |entry: Option<&Entry>| entry.map_or("the end of the log".to_owned(), render_line);
    let text = format!(
        "entry {n} at t={at_ms} ms differs: first run `{}`, second run `{}`",
        line(a.get(n)),
        line(b.get(n))
    );
    Some((n, text))
}

fn render_entry(out: &mut String, entry: &Entry) {
    match entry {
        Entry::Core(stamped) => {
            let (at_ms, boot, generation) = (stamped.at_ms, stamped.boot, stamped.generation);
            write_prefix(out, at_ms, boot, &generation);
            write_event(&mut Line(out), &stamped.event);
        }
        Entry::World { at_ms, boot, note } => {
            write_prefix(out, *at_ms, *boot, &"-");
            write_note(&mut Line(out), note);
        }
    }
}

/// Time, boot and generation; a world note has `-` for its generation.
fn write_prefix(out: &mut String, at_ms: u64, boot: u32, generation: &dyn Display) {
    let _ = write!(out, "{at_ms:>TIME_WIDTH$} b{boot} g{generation}");
}

fn write_note(line: &mut Line<'_>, note: &Note) {
    match note {
        Note::ProcessStarted => line.name("process_started"),
        Note::RefusedDown { message } => line.name("refused_down").field("message", message),
        Note::SignalLost { kind } => line.name("signal_lost").field("kind", kind_name(*kind)),
    };
}

/// Every event of the core, its fields in declaration order.
fn write_event(line: &mut Line<'_>, event: &Event) {
    match event {
        Event::StateRestored { messages } => line.name("state_restored").list("messages", messages),
        Event::Accepted { message, key, session } => {
            let key = key.as_ref().map_or("-".to_owned(), ToString::to_string);
            line.name("accepted")
                .field("message", message)
                .field("key", key)
                .field("session", session)
        }
        Event::Refused { message, reason } => {
            line.name("refused").field("message", message).field("reason", refusal_name(*reason))
        }
        Event::Buffered { message, key, due_ms } => line
            .name("buffered")
            .field("message", message)
            .field("key", key)
            .field("due_ms", due_ms),
        Event::Intake { message } => line.name("intake").field("message", message),
        Event::Flushed { key, messages, cause } => line
            .name("flushed")
            .field("key", key)
            .list("messages", messages)
            .field("cause", flush_name(*cause)),
        Event::Admitted { session, messages, into } => line
            .name("admitted")
            .field("session", session)
            .list("messages", messages)
            .field("into", AdmittedInto(*into)),
        Event::Deferred { messages } => line.name("deferred").list("messages", messages),
        Event::AdmissionFailed { messages, error } => {
            line.name("admission_failed").list("messages", messages).field("error", Quoted(error))
        }
        Event::CallbackFailed { messages, error } => {
            line.name("callback_failed").list("messages", messages).field("error", Quoted(error))
        }
        Event::RunStarted { run, session, attempt, messages, summarized } => line
            .name("run_started")
            .field("run", run)
            .field("session", session)
            .field("attempt", attempt)
            .list("messages", messages)
            .field("summarized", summarized),
        Event::RunFinished { run, session, end } => line
            .name("run_finished")
            .field("run", run)
            .field("session", session)
            .field("end", end_name(*end)),
        Event::Requeued { run, session, messages, retry_at_ms } => line
            .name("requeued")
            .field("run", run)
            .field("session", session)
            .list("messages", messages)
            .field("retry_at_ms", retry_at_ms),
        Event::Outcome { message, kind, cause } => line
            .name("outcome")
            .field("message", message)
            .field("kind", kind.name())
            .field("cause", CauseText(cause)),
        Event::ChannelClosed { channel } => line.name("channel_closed").field("channel", channel),
        Event::Signal { kind, origin } => line
            .name("signal")
            .field("kind", kind_name(*kind))
            .field("origin", origin_name(*origin)),
        Event::SignalIgnored { kind, reason } => line
            .name("signal_ignored")
            .field("kind", kind_name(*kind))
            .field("reason", ignore_name(*reason)),
        Event::SignalDeferred { kind } => {
            line.name("signal_deferred").field("kind", kind_name(*kind))
        }
        Event::BecameStop { deadline_ms } => {
            line.name("became_stop").field("deadline_ms", deadline_ms)
        }
        Event::RestartBegan { kind, deadline_ms } => line
            .name("restart_began")
            .field("kind", kind_name(*kind))
            .field("deadline_ms", deadline_ms),
        Event::Phase { phase, counts } => write_phase(line, *phase, counts),
        Event::DrainWarning { remaining } => {
            line.name("drain_warning").field("remaining", remaining)
        }
        Event::HandedOver { pending, summaries, intake } => line
            .name("handed_over")
            .list("pending", pending)
            .field("summaries", summaries)
            .list("intake", intake),
        Event::GenerationStarted { pending, intake } => {
            line.name("generation_started").list("pending", pending).list("intake", intake)
        }
        Event::StateSaved { messages } => line.name("state_saved").list("messages", messages),
        Event::Exit { code } => line.name("exit").field("code", code),
    };
}

/// A phase line carries the counts that phase sets (see [`PhaseCounts`]), so a line never
/// shows a count that means nothing there.
fn write_phase<'l, 'o>(
    line: &'l mut Line<'o>,
    phase: Phase,
    counts: &PhaseCounts,
) -> &'l mut Line<'o> {
    line.name("phase").field("name", phase.name());
    match phase {
        Phase::Flush => line
            .field("flushed", counts.flushed)
            .field("remaining", counts.remaining)
            .field("drained", counts.drained),
        Phase::Wait => line.field("remaining", counts.remaining).field("drained", counts.drained),
        Phase::HandOver => line.field("pending", counts.pending).field("intake", counts.intake),
        Phase::Hold | Phase::MarkDraining | Phase::Close => line,
    }
}

/// A line being written: the event name, then ` name=value` fields.
struct Line<'a>(&'a mut String);

impl Line<'_> {
    fn name(&mut self, name: &str) -> &mut Self {
        self.0.push(' ');
        self.0.push_str(name);
        self
    }

    fn field(&mut self, name: &str, value: impl Display) -> &mut Self {
        let _ = write!(self.0, " {name}={value}");
        self
    }

    /// A list of identities as `[c0/m1,c0/m2]`.
    fn list(&mut self, name: &str, messages: &[Identity]) -> &mut Self {
        let _ = write!(self.0, " {name}=[");
        for (n, message) in messages.iter().enumerate() {
            let comma = if n == 0 { "" } else { "," };
            let _ = write!(self.0, "{comma}{message}");
        }
        self.0.push(']');
        self
    }
}

/// Free text, quoted and escaped so a line always splits the same way.
struct Quoted<'a>(&'a str);

impl Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Where an admitted batch went: `run:<id>` or `queued`.
struct AdmittedInto(Admission);

impl Display for AdmittedInto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Admission::Run(run) => write!(f, "run:{run}"),
            Admission::Queued => f.write_str("queued"),
        }
    }
}

/// Why a message ended: `run:<id>`, `admission:"<error>"`, `attempts:<n>`, `cap:<n>` or
/// `cancel`.
struct CauseText<'a>(&'a Cause);

impl Display for CauseText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Cause::Run(run) => write!(f, "run:{run}"),
            Cause::Admission(error) => write!(f, "admission:{}", Quoted(error)),
            Cause::Attempts(n) => write!(f, "attempts:{n}"),
            Cause::Cap(cap) => write!(f, "cap:{cap}"),
            Cause::Cancel => f.write_str("cancel"),
        }
    }
}

fn kind_name(kind: SignalKind) -> &'static str {
    match kind {
        SignalKind::Reload => "reload",
        SignalKind::Shutdown => "shutdown",
    }
}

fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::External => "external",
        Origin::Internal => "internal",
    }
}

fn refusal_name(reason: Refusal) -> &'static str {
    match reason {
        Refusal::Duplicate => "duplicate",
        Refusal::Busy => "busy",
        Refusal::Stopping => "stopping",
    }
}

fn flush_name(cause: FlushCause) -> &'static str {
    match cause {
        FlushCause::Timer => "timer",
        FlushCause::MaxWait => "max_wait",
        FlushCause::Immediate => "immediate",
        FlushCause::FlushKey => "flush_key",
        FlushCause::FlushAll => "flush_all",
        FlushCause::Disconnect => "disconnect",
        FlushCause::Unbuffered => "unbuffered",
    }
}

fn end_name(end: RunEnd) -> &'static str {
    match end {
        RunEnd::Success => "success",
        RunEnd::Failure => "failure",
        RunEnd::Timeout => "timeout",
        RunEnd::Interrupted => "interrupted",
    }
}

fn ignore_name(reason: IgnoreReason) -> &'static str {
    match reason {
        IgnoreReason::ExternalReloadRefused => "external_reload_refused",
        IgnoreReason::Stopping => "stopping",
        IgnoreReason::AlreadyStopping => "already_stopping",
    }
}
