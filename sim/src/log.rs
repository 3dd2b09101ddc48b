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
//!
//! The core's events are rendered by the library's [`quiesce::event_log`], which the daemon's
//! `--event-log` uses too, so a real incident and a simulated run read the same; this module
//! adds the simulated world's notes.

use quiesce::event_log::{self, Line, kind_name, write_prefix};

use crate::driver::{Entry, Note};

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
        Entry::Core(stamped) => event_log::write_line(out, stamped),
        Entry::World { at_ms, boot, note } => {
            write_prefix(out, *at_ms, *boot, &"-");
            write_note(&mut Line::new(out), note);
        }
    }
}

fn write_note(line: &mut Line<'_>, note: &Note) {
    match note {
        Note::ProcessStarted => line.name("process_started"),
        Note::RefusedDown { message } => line.name("refused_down").field("message", message),
        Note::SignalLost { kind } => line.name("signal_lost").field("kind", kind_name(*kind)),
    };
}
