//! The canonical event log: one text line per event, the same on every machine.
//!
//! The log is what a failing simulation prints, what insta snapshots, what a reviewer reads in
//! a pull request and what the daemon writes with `--event-log`, so it has one fixed format
//! (documented line by line in `docs/EVENT_LOG.md`):
//!
//! ```text
//!     1050 b1 g0 run_finished run=1 session=s1 end=success
//! ```
//!
//! time in ms, right-aligned; the boot and generation; the event's name in snake_case; then its
//! fields in a fixed order as `name=value`. Everything in a line comes from the event itself:
//! no pointers, clocks or hash order. The renderer lives in the library, not in the simulation
//! crate, because the daemon writes the same lines and cannot depend on the simulation; the
//! simulation adds its world notes with [`write_prefix`] and [`Line`].

use std::fmt::{self, Display, Write};

use crate::event::{
    Admission, Cause, Event, FlushCause, IgnoreReason, Phase, PhaseCounts, Refusal, RunEnd, Stamped,
};
use crate::message::Identity;
use crate::signal::{Origin, SignalKind};

/// The width of the time column; later times widen the line rather than being cut.
pub const TIME_WIDTH: usize = 8;

/// One event's line, without the newline.
pub fn render_line(stamped: &Stamped) -> String {
    let mut out = String::with_capacity(64);
    write_line(&mut out, stamped);
    out
}

/// Appends one event's line to `out`, without the newline.
pub fn write_line(out: &mut String, stamped: &Stamped) {
    write_prefix(out, stamped.at_ms, stamped.boot, &stamped.generation);
    write_event(&mut Line::new(out), &stamped.event);
}

/// Appends the time, boot and generation; a note that belongs to no generation (the
/// simulation's world notes) passes `-` for it.
pub fn write_prefix(out: &mut String, at_ms: u64, boot: u32, generation: &dyn Display) {
    let _ = write!(out, "{at_ms:>TIME_WIDTH$} b{boot} g{generation}");
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

/// A line being written after its prefix: the event name, then ` name=value` fields.
pub struct Line<'a>(&'a mut String);

impl<'a> Line<'a> {
    /// Continues the line at the end of `out`.
    pub fn new(out: &'a mut String) -> Self {
        Self(out)
    }

    /// Appends the event's name.
    pub fn name(&mut self, name: &str) -> &mut Self {
        self.0.push(' ');
        self.0.push_str(name);
        self
    }

    /// Appends one `name=value` field.
    pub fn field(&mut self, name: &str, value: impl Display) -> &mut Self {
        let _ = write!(self.0, " {name}={value}");
        self
    }

    /// Appends a list of identities as `name=[c0/m1,c0/m2]`.
    pub fn list(&mut self, name: &str, messages: &[Identity]) -> &mut Self {
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

/// Why a message ended, as the log writes it: `run:<id>`, `admission:"<error>"`,
/// `attempts:<n>`, `cap:<n>` or `cancel`. The daemon's dead-letter file uses it too.
pub struct CauseText<'a>(pub &'a Cause);

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

/// A signal kind as the log writes it.
pub fn kind_name(kind: SignalKind) -> &'static str {
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
