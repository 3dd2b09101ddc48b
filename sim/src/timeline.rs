//! The timeline picture: one run drawn as an SVG, so a failure can be understood at a glance.
//!
//! One lane per session (its runs, with their numbers and attempts, and its queued messages)
//! and under it one lane per key of the session (its messages' arrivals, debounce buffers, time
//! in the intake, in the handover and in the state file). Across every lane: the signals, each
//! restart as bands (the wait, the close) with its deadline as a dashed line, the process's
//! exits and boots, the generations, and the violation in red with the message it names crossed
//! out where it was last seen.
//!
//! The SVG is written by hand: a few element kinds, each with a `class` saying what it shows, a
//! `<title>` tooltip on every bar, and a legend. Everything comes from the event log's typed
//! entries, so the picture and the log always tell the same story.

use std::collections::HashMap;
use std::fmt::Write as _;

use quiesce::event::{Admission, Event, OutcomeKind, Phase, PhaseCounts, RunEnd, RunId, Stamped};
use quiesce::message::{Identity, Key, SessionId};
use quiesce::signal::{Origin, SignalKind};

use crate::driver::{Entry, Note};
use crate::oracle::Violation;
use crate::scenario::Scenario;

/// The picture's width in pixels.
const WIDTH: f64 = 1_600.0;
/// The column of lane labels on the left.
const LEFT: f64 = 170.0;
/// The margin on the right.
const RIGHT: f64 = 40.0;
/// Title, verdict and time axis.
const HEADER: f64 = 78.0;
/// The restart lane at the top of the chart: two rows of line labels, the phases, and the
/// violation's label.
const RESTART_LANE: f64 = 46.0;
/// A session's lane.
const SESSION_LANE: f64 = 18.0;
/// A key's lane.
const KEY_LANE: f64 = 13.0;
/// The legend under the chart.
const LEGEND: f64 = 64.0;
/// How much of the axis is time; the rest is the order of entries.
const TIME_SHARE: f64 = 0.5;

const STYLE: &str = "\
text{fill:#222}\
.lane-bg{fill:#f7f7f7}.lane-bg.key{fill:#fff}\
.buffer{fill:#4a86c8}.intake{fill:#9b59b6}.queued{fill:#9aa4ad}\
.handover{fill:#e0a526}.state-file{fill:#8d6e63}\
.run{stroke:#333;stroke-width:0.5}.run.success{fill:#6ab04c}.run.failure{fill:#e67e22}\
.run.timeout{fill:#c0392b}.run.interrupted{fill:#bbb}.run.open{fill:#d6eaf8}\
.band.wait{fill:#f9e79f;opacity:0.35}.band.close{fill:#aab7b8;opacity:0.3}\
.phase-note{font-size:9px}\
.mark line{stroke-width:1}.mark.signal line{stroke:#1f3a93}\
.mark.deadline line{stroke:#c0392b;stroke-dasharray:5 3}\
.mark.exit line,.mark.boot line{stroke:#000;stroke-width:2}\
.mark.generation line{stroke:#27ae60;stroke-dasharray:2 2}\
.arrival{stroke:#222;stroke-width:1}.ended{fill:#e67e22}.refused{stroke:#999}\
.lost{stroke:#e00;stroke-width:2.5}.span.is-lost{stroke:#e00;stroke-width:2}\
line.violation{stroke:#e00;stroke-width:2}text.violation{fill:#e00;font-weight:bold}\
.axis line{stroke:#ccc}";

/// Draws a run's entries as an SVG. `title` names the run (plan, seed or file).
pub fn render(
    scenario: &Scenario,
    entries: &[Entry],
    violation: Option<&Violation>,
    title: &str,
) -> String {
    let model = Model::build(scenario, entries, violation);
    let verdict = violation.map_or("every invariant held".to_owned(), ToString::to_string);
    Canvas::new(&model).draw(title, &verdict)
}

/// Where something happened: its time, and how many entries came before it. The picture's
/// axis uses both, so an instant with many events gets room instead of a pile of lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pos {
    at_ms: u64,
    k: usize,
}

/// What a bar on a lane shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bar {
    Buffer,
    Intake,
    Queued,
    Handover,
    StateFile,
    Run { run: RunId, attempt: u32, end: Option<RunEnd> },
}

impl Bar {
    fn class(self) -> String {
        match self {
            Self::Buffer => "span buffer".to_owned(),
            Self::Intake => "span intake".to_owned(),
            Self::Queued => "span queued".to_owned(),
            Self::Handover => "span handover".to_owned(),
            Self::StateFile => "span state-file".to_owned(),
            Self::Run { end, .. } => format!("run {}", end.map_or("open", end_class)),
        }
    }
}

fn end_class(end: RunEnd) -> &'static str {
    match end {
        RunEnd::Success => "success",
        RunEnd::Failure => "failure",
        RunEnd::Timeout => "timeout",
        RunEnd::Interrupted => "interrupted",
    }
}

/// A bar on a lane from one time to another (to the end if still open).
#[derive(Clone, Debug)]
struct Span {
    lane: usize,
    from: Pos,
    to: Option<Pos>,
    bar: Bar,
    tip: String,
    lost: bool,
}

/// A vertical line across the chart.
#[derive(Clone, Debug)]
struct Mark {
    at: Pos,
    class: &'static str,
    label: String,
}

/// A small sign on one lane at one time.
#[derive(Clone, Debug)]
struct Dot {
    lane: usize,
    at: Pos,
    class: &'static str,
    tip: String,
}

/// A restart's wait or close, across the chart.
#[derive(Clone, Debug)]
struct Band {
    from: Pos,
    to: Option<Pos>,
    class: &'static str,
}

#[derive(Clone, Debug)]
struct Lane {
    label: String,
    session: bool,
}

/// Where a message is drawn and which of its bars is open.
#[derive(Clone, Debug, Default)]
struct Whereabouts {
    key_lane: usize,
    session_lane: usize,
    open: Option<usize>,
}

/// The picture's content, read from the entries.
#[derive(Debug, Default)]
struct Model {
    lanes: Vec<Lane>,
    spans: Vec<Span>,
    marks: Vec<Mark>,
    dots: Vec<Dot>,
    bands: Vec<Band>,
    /// Instantaneous restart phases, as labels on the restart lane.
    notes: Vec<(Pos, String)>,
    /// Every entry's time, in order.
    times: Vec<u64>,
    /// The entry being read.
    now: Pos,
    end: Pos,
    sessions: HashMap<SessionId, usize>,
    keys: HashMap<Key, usize>,
    messages: HashMap<Identity, Whereabouts>,
    runs: HashMap<(u32, RunId), usize>,
    /// The restart in progress: when it began and when its last phase completed.
    restart: Option<(Pos, Pos)>,
    /// Deadlines, with their labels.
    deadlines: Vec<(u64, String)>,
}

impl Model {
    fn build(scenario: &Scenario, entries: &[Entry], violation: Option<&Violation>) -> Self {
        let mut model = Self::default();
        let mut keys: Vec<_> = scenario.keys.iter().collect();
        keys.sort_by_cached_key(|k| (natural(k.session.as_str()), natural(k.name.as_str())));
        for key in keys {
            let session = model.session_lane(&key.session);
            let lane = model.lane(format!("  {} {}", key.name, key.channel), false, session + 1);
            model.keys.insert(key.name.clone(), lane);
        }
        // Every lane exists before the first bar, so no bar's lane moves.
        for entry in entries {
            if let Entry::Core(Stamped { event: Event::Accepted { key, session, .. }, .. }) = entry
            {
                model.key_lane(key.as_ref(), session);
            }
        }
        model.times = entries.iter().map(Entry::at_ms).collect();
        for (k, entry) in entries.iter().enumerate() {
            model.now = Pos { at_ms: entry.at_ms(), k };
            model.entry(entry);
        }
        let last_ms = entries.last().map_or(0, Entry::at_ms);
        let end_ms = last_ms.max(violation.map_or(0, |v| v.at_ms));
        model.end = Pos { at_ms: end_ms, k: entries.len() };
        for (deadline_ms, label) in std::mem::take(&mut model.deadlines) {
            if deadline_ms <= end_ms {
                model.mark(model.pos_of(deadline_ms), "mark deadline", label);
            }
        }
        if let Some(violation) = violation {
            model.violation(violation);
        }
        model
    }

    /// The position of a time no entry has, such as a deadline: before the first entry at or
    /// after it.
    fn pos_of(&self, at_ms: u64) -> Pos {
        Pos { at_ms, k: self.times.partition_point(|&t| t < at_ms) }
    }

    /// The lane of a session, made after the lanes of the sessions before it.
    fn session_lane(&mut self, session: &SessionId) -> usize {
        if let Some(&lane) = self.sessions.get(session) {
            return lane;
        }
        let lane = self.lane(session.to_string(), true, self.lanes.len());
        self.sessions.insert(session.clone(), lane);
        lane
    }

    /// Inserts a lane at `at`, after the lanes of its session.
    fn lane(&mut self, label: String, session: bool, at: usize) -> usize {
        let at =
            (at..self.lanes.len()).find(|&n| self.lanes[n].session).unwrap_or(self.lanes.len());
        self.lanes.insert(at, Lane { label, session });
        let shift = |lane: &mut usize| *lane += usize::from(*lane >= at);
        self.sessions.values_mut().for_each(shift);
        self.keys.values_mut().for_each(shift);
        at
    }

    fn key_lane(&mut self, key: Option<&Key>, session: &SessionId) -> usize {
        let session_lane = self.session_lane(session);
        let Some(key) = key else { return session_lane };
        if let Some(&lane) = self.keys.get(key) {
            return lane;
        }
        let lane = self.lane(format!("  {key}"), false, session_lane + 1);
        self.keys.insert(key.clone(), lane);
        lane
    }

    fn entry(&mut self, entry: &Entry) {
        match entry {
            Entry::Core(stamped) => self.event(stamped),
            Entry::World { boot, note, .. } => match note {
                Note::ProcessStarted => self.mark(self.now, "mark boot", format!("boot {boot}")),
                Note::SignalLost { kind } => {
                    self.mark(self.now, "mark signal", format!("{} (lost)", signal_name(*kind)))
                }
                Note::RefusedDown { .. } => {}
            },
        }
    }

    fn event(&mut self, stamped: &Stamped) {
        let at = stamped.at_ms;
        match &stamped.event {
            Event::Accepted { message, key, session } => self.accepted(at, message, key, session),
            Event::Buffered { message, .. } => self.move_to(at, message, Some(Bar::Buffer)),
            Event::Intake { message } => self.move_to(at, message, Some(Bar::Intake)),
            Event::Flushed { messages, .. } => self.move_all(at, messages, None),
            Event::Admitted { messages, into: Admission::Queued, .. }
            | Event::Requeued { messages, .. } => self.move_all(at, messages, Some(Bar::Queued)),
            Event::Admitted { messages, .. } => self.move_all(at, messages, None),
            Event::Deferred { messages } => self.move_all(at, messages, Some(Bar::Handover)),
            Event::RunStarted { run, session, attempt, messages, .. } => {
                self.move_all(at, messages, None);
                self.run_started(stamped, *run, session, *attempt, messages.len());
            }
            Event::RunFinished { run, end, .. } => self.run_finished(stamped, *run, *end),
            Event::Outcome { message, kind, .. } => self.outcome(at, message, *kind),
            Event::Signal { kind, origin } => self.signal(*kind, *origin),
            Event::RestartBegan { deadline_ms, .. } => {
                self.restart = Some((self.now, self.now));
                self.note(format!("deadline {deadline_ms} ms"));
                self.deadline(*deadline_ms, "deadline");
            }
            Event::BecameStop { deadline_ms } => {
                self.note(format!("stop, deadline {deadline_ms} ms"));
                self.deadline(*deadline_ms, "stop deadline");
            }
            Event::Phase { phase, counts } => self.phase(*phase, counts),
            Event::DrainWarning { remaining } => self.note(format!("warning {remaining}")),
            Event::HandedOver { pending, .. } => self.move_all(at, pending, Some(Bar::Handover)),
            Event::GenerationStarted { pending, .. } => {
                self.move_all(at, pending, Some(Bar::Queued));
                if stamped.generation > 0 {
                    self.mark(self.now, "mark generation", format!("g{}", stamped.generation));
                }
            }
            Event::StateSaved { messages } => self.move_all(at, messages, Some(Bar::StateFile)),
            Event::Exit { code } => {
                self.end_restart();
                self.mark(self.now, "mark exit", format!("exit {code}"));
            }
            Event::StateRestored { .. }
            | Event::Refused { .. }
            | Event::AdmissionFailed { .. }
            | Event::CallbackFailed { .. }
            | Event::ChannelClosed { .. }
            | Event::SignalIgnored { .. }
            | Event::SignalDeferred { .. } => {}
        }
    }

    fn accepted(&mut self, at: u64, message: &Identity, key: &Option<Key>, session: &SessionId) {
        let key_lane = self.key_lane(key.as_ref(), session);
        let session_lane = self.session_lane(session);
        let whereabouts = Whereabouts { key_lane, session_lane, open: None };
        self.messages.insert(message.clone(), whereabouts);
        let tip = format!("{message} accepted at {at} ms");
        self.dots.push(Dot { lane: key_lane, at: self.now, class: "arrival", tip });
    }

    fn move_all(&mut self, at: u64, messages: &[Identity], to: Option<Bar>) {
        messages.iter().for_each(|message| self.move_to(at, message, to));
    }

    /// Ends a message's open bar and, if it goes somewhere drawn, opens the next.
    fn move_to(&mut self, at: u64, message: &Identity, to: Option<Bar>) {
        let Some(whereabouts) = self.messages.get_mut(message) else { return };
        if let Some(open) = whereabouts.open.take() {
            self.spans[open].to = Some(self.now);
        }
        let Some(bar) = to else { return };
        let lane = if bar == Bar::Queued { whereabouts.session_lane } else { whereabouts.key_lane };
        whereabouts.open = Some(self.spans.len());
        let tip = format!("{message} {} from {at} ms", place_name(bar));
        self.spans.push(Span { lane, from: self.now, to: None, bar, tip, lost: false });
    }

    fn run_started(
        &mut self,
        stamped: &Stamped,
        run: RunId,
        session: &SessionId,
        attempt: u32,
        messages: usize,
    ) {
        let lane = self.session_lane(session);
        let bar = Bar::Run { run, attempt, end: None };
        let tip = format!("run {run} attempt {attempt}: {messages} messages");
        self.runs.insert((stamped.boot, run), self.spans.len());
        self.spans.push(Span { lane, from: self.now, to: None, bar, tip, lost: false });
    }

    fn run_finished(&mut self, stamped: &Stamped, run: RunId, end: RunEnd) {
        let Some(&index) = self.runs.get(&(stamped.boot, run)) else { return };
        let span = &mut self.spans[index];
        span.to = Some(self.now);
        if let Bar::Run { end: open, .. } = &mut span.bar {
            *open = Some(end);
        }
        let _ = write!(span.tip, ", {}", end_class(end));
    }

    fn outcome(&mut self, at: u64, message: &Identity, kind: OutcomeKind) {
        self.move_to(at, message, None);
        if kind == OutcomeKind::Delivered {
            return;
        }
        let Some(whereabouts) = self.messages.get(message) else { return };
        let tip = format!("{message} {} at {at} ms", kind.name());
        self.dots.push(Dot { lane: whereabouts.key_lane, at: self.now, class: "ended", tip });
    }

    fn signal(&mut self, kind: SignalKind, origin: Origin) {
        let origin = if origin == Origin::Internal { " (internal)" } else { "" };
        self.mark(self.now, "mark signal", format!("{}{origin}", signal_name(kind)));
    }

    fn phase(&mut self, phase: Phase, counts: &PhaseCounts) {
        let Some((began, last)) = self.restart else { return };
        match phase {
            Phase::Wait => {
                self.bands.push(Band { from: began, to: Some(self.now), class: "band wait" });
                let verdict = if counts.drained { "drained" } else { "deadline" };
                self.note(format!("wait: {verdict}"));
            }
            Phase::Close => {
                self.bands.push(Band { from: last, to: Some(self.now), class: "band close" });
                self.restart = None;
                return;
            }
            Phase::Flush => self.note(format!("flush {}", counts.flushed)),
            Phase::HandOver => self.note(format!("hand over {}+{}", counts.pending, counts.intake)),
            Phase::Hold => self.note("hold".to_owned()),
            Phase::MarkDraining => self.note("draining".to_owned()),
        }
        self.restart = Some((began, self.now));
    }

    /// A stop that exits ends its restart's close.
    fn end_restart(&mut self) {
        if let Some((_, last)) = self.restart.take() {
            self.bands.push(Band { from: last, to: Some(self.now), class: "band close" });
        }
    }

    fn note(&mut self, text: String) {
        let at = self.now;
        match self.notes.last_mut() {
            Some((last, joined)) if last.at_ms == at.at_ms => {
                joined.push_str(" · ");
                joined.push_str(&text);
            }
            _ => self.notes.push((at, text)),
        }
    }

    /// A deadline's line; drawn once the run is read, and only if it falls inside it.
    fn deadline(&mut self, deadline_ms: u64, label: &str) {
        self.deadlines.push((deadline_ms, format!("{label} {deadline_ms} ms")));
    }

    fn mark(&mut self, at: Pos, class: &'static str, label: String) {
        self.marks.push(Mark { at, class, label });
    }

    /// The violation's line, and a cross where the message it names was last seen.
    fn violation(&mut self, violation: &Violation) {
        let at = Pos { at_ms: violation.at_ms, k: self.end.k };
        let label = format!("{} at {} ms", violation.invariant.title(), violation.at_ms);
        self.mark(at, "violation", label);
        let named = self
            .messages
            .iter()
            .filter_map(|(id, w)| violation.reason.find(&id.to_string()).map(|pos| (pos, id, w)))
            .min_by_key(|(pos, id, _)| (*pos, std::cmp::Reverse(id.to_string().len())));
        let Some((_, message, whereabouts)) = named else { return };
        let (lane, open) = (whereabouts.key_lane, whereabouts.open);
        let tip = format!("{message}: {}", violation.reason);
        self.dots.push(Dot { lane, at, class: "lost", tip });
        if let Some(open) = open {
            self.spans[open].lost = true;
        }
    }
}

fn place_name(bar: Bar) -> &'static str {
    match bar {
        Bar::Buffer => "in its debounce buffer",
        Bar::Intake => "in the intake",
        Bar::Queued => "queued",
        Bar::Handover => "in the handover",
        Bar::StateFile => "in the state file",
        Bar::Run { .. } => "in a run",
    }
}

fn signal_name(kind: SignalKind) -> &'static str {
    match kind {
        SignalKind::Reload => "SIGUSR1",
        SignalKind::Shutdown => "SIGTERM",
    }
}

/// Writes the model as SVG text.
struct Canvas<'a> {
    model: &'a Model,
    /// The top of each lane, and the bottom of the last.
    tops: Vec<f64>,
    out: String,
}

impl<'a> Canvas<'a> {
    fn new(model: &'a Model) -> Self {
        let mut tops = Vec::with_capacity(model.lanes.len() + 1);
        let mut y = HEADER + RESTART_LANE;
        for lane in &model.lanes {
            tops.push(y);
            y += if lane.session { SESSION_LANE } else { KEY_LANE };
        }
        tops.push(y);
        Self { model, tops, out: String::new() }
    }

    fn bottom(&self) -> f64 {
        self.tops.last().copied().unwrap_or(HEADER + RESTART_LANE)
    }

    /// Half the axis is time, half is the order of entries: a long quiet gap stays long, and
    /// an instant with many events gets room for them.
    fn x(&self, at: Pos) -> f64 {
        let end = self.model.end;
        let time = if end.at_ms == 0 { 0.0 } else { (at.at_ms as f64 / end.at_ms as f64).min(1.0) };
        let order = at.k as f64 / (end.k + 1) as f64;
        let share =
            if end.at_ms == 0 { order } else { TIME_SHARE * time + (1.0 - TIME_SHARE) * order };
        LEFT + (WIDTH - LEFT - RIGHT) * share
    }

    fn end_x(&self, to: Option<Pos>) -> f64 {
        self.x(to.unwrap_or(self.model.end))
    }

    fn draw(mut self, title: &str, verdict: &str) -> String {
        let height = self.bottom() + LEGEND;
        let _ = write!(
            self.out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height:.0}\" \
             viewBox=\"0 0 {WIDTH} {height:.0}\" font-family=\"monospace\" font-size=\"10\">\
             \n<style>{STYLE}</style>\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n"
        );
        self.header(title, verdict);
        self.lanes();
        self.bands();
        self.spans();
        self.dots();
        self.marks();
        self.legend();
        self.out.push_str("</svg>\n");
        self.out
    }

    fn header(&mut self, title: &str, verdict: &str) {
        let class = if verdict.contains("violated") { " class=\"violation\"" } else { "" };
        let _ = writeln!(
            self.out,
            "<text x=\"10\" y=\"18\" font-size=\"14\">{}</text>\n\
             <text x=\"10\" y=\"36\" font-size=\"11\"{class}>{}</text>",
            escape(title),
            escape(verdict)
        );
        self.axis();
    }

    /// Time ticks: a round step giving at most about 20 ticks.
    fn axis(&mut self) {
        let steps = [10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000];
        let end_ms = self.model.end.at_ms;
        let step = steps.into_iter().find(|s| end_ms / s <= 20).unwrap_or(end_ms / 20 + 1);
        let (top, bottom) = (HEADER - 14.0, self.bottom());
        self.out.push_str("<g class=\"axis\">\n");
        let mut last_label_x = f64::MIN;
        for at_ms in (0..=end_ms).step_by(step as usize) {
            let x = self.x(self.model.pos_of(at_ms));
            let label =
                if step >= 1_000 { format!("{} s", at_ms / 1_000) } else { format!("{at_ms} ms") };
            let _ = write!(
                self.out,
                "<line x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"/>"
            );
            // A busy stretch of time is wide and a quiet one narrow: labels that would touch
            // are left out.
            if x - last_label_x >= 9.0 * label.len() as f64 {
                last_label_x = x;
                let _ = write!(
                    self.out,
                    "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
                    top - 3.0
                );
            }
            self.out.push('\n');
        }
        self.out.push_str("</g>\n");
    }

    fn lanes(&mut self) {
        let y = HEADER;
        let _ = writeln!(
            self.out,
            "<g class=\"restart-lane\"><text x=\"10\" y=\"{:.1}\" font-weight=\"bold\">restarts</text>",
            y + 12.0
        );
        for (at, text) in &self.model.notes {
            let x = self.x(*at) + 2.0;
            let near_edge = x > WIDTH - RIGHT - 6.0 * text.len() as f64;
            let (x, anchor) = if near_edge { (x - 4.0, "end") } else { (x, "start") };
            let _ = write!(
                self.out,
                "<text class=\"phase-note\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
                y + 26.0,
                escape(text)
            );
        }
        self.out.push_str("</g>\n");
        for (n, lane) in self.model.lanes.iter().enumerate() {
            let (top, bottom) = (self.tops[n], self.tops[n + 1]);
            let kind = if lane.session { "session" } else { "key" };
            let weight = if lane.session { " font-weight=\"bold\"" } else { "" };
            let _ = writeln!(
                self.out,
                "<g class=\"lane {kind}\"><rect class=\"lane-bg {kind}\" x=\"0\" y=\"{top:.1}\" \
                 width=\"{WIDTH}\" height=\"{:.1}\"/><text x=\"8\" y=\"{:.1}\"{weight}>{}</text></g>",
                bottom - top,
                bottom - 3.0,
                escape(&lane.label)
            );
        }
    }

    fn bands(&mut self) {
        let (top, bottom) = (HEADER, self.bottom());
        for band in &self.model.bands {
            let (x1, x2) = (self.x(band.from), self.end_x(band.to));
            let _ = writeln!(
                self.out,
                "<rect class=\"{}\" x=\"{x1:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\"/>",
                band.class,
                (x2 - x1).max(1.0),
                bottom - top
            );
        }
    }

    fn spans(&mut self) {
        for span in &self.model.spans {
            let (top, bottom) = (self.tops[span.lane], self.tops[span.lane + 1]);
            let (x1, x2) = (self.x(span.from), self.end_x(span.to));
            let width = (x2 - x1).max(1.5);
            let (y, height) = match span.bar {
                Bar::Queued => (bottom - 5.0, 3.0),
                Bar::Run { .. } => (top + 2.0, bottom - top - 7.0),
                _ => (top + 2.0, bottom - top - 4.0),
            };
            let lost = if span.lost { " is-lost" } else { "" };
            let _ = write!(
                self.out,
                "<rect class=\"{}{lost}\" x=\"{x1:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" \
                 height=\"{height:.1}\"><title>{}</title></rect>",
                span.bar.class(),
                escape(&span.tip)
            );
            if let Bar::Run { run, attempt, .. } = span.bar {
                self.run_label(x1, width, top, run, attempt);
            }
            self.out.push('\n');
        }
    }

    /// A run's number and, for a retry, its attempt, when the bar has room.
    fn run_label(&mut self, x: f64, width: f64, top: f64, run: RunId, attempt: u32) {
        let label = if attempt > 1 { format!("{run}#{attempt}") } else { run.to_string() };
        if width < 6.0 * label.len() as f64 + 4.0 {
            return;
        }
        let _ = write!(
            self.out,
            "<text class=\"run-label\" x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\">{label}</text>",
            x + 2.0,
            top + 10.0
        );
    }

    fn dots(&mut self) {
        for dot in &self.model.dots {
            let (top, bottom) = (self.tops[dot.lane], self.tops[dot.lane + 1]);
            let x = self.x(dot.at);
            let tip = escape(&dot.tip);
            let _ = match dot.class {
                "arrival" => writeln!(
                    self.out,
                    "<line class=\"arrival\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" \
                     y2=\"{:.1}\"><title>{tip}</title></line>",
                    top + 4.0
                ),
                "lost" => writeln!(
                    self.out,
                    "<path class=\"lost\" d=\"M{:.1} {:.1}L{:.1} {:.1}M{:.1} {:.1}L{:.1} {:.1}\" \
                     fill=\"none\"><title>{tip}</title></path>",
                    x - 6.0,
                    top - 2.0,
                    x + 6.0,
                    bottom + 2.0,
                    x - 6.0,
                    bottom + 2.0,
                    x + 6.0,
                    top - 2.0
                ),
                _ => writeln!(
                    self.out,
                    "<circle class=\"{}\" cx=\"{x:.1}\" cy=\"{:.1}\" r=\"2.5\"><title>{tip}</title>\
                     </circle>",
                    dot.class,
                    (top + bottom) / 2.0
                ),
            };
        }
    }

    fn marks(&mut self) {
        let (top, bottom) = (HEADER, self.bottom());
        for (n, mark) in self.model.marks.iter().enumerate() {
            let x = self.x(mark.at);
            // Labels take turns on two rows so neighbours do not print over each other; the
            // violation's has a row of its own, and labels near the right edge end at their line.
            let label_y = match (mark.class, n % 2) {
                ("violation", _) => top + 40.0,
                (_, 0) => top + 10.0,
                _ => top + 19.0,
            };
            let near_edge = x > WIDTH - RIGHT - 7.0 * mark.label.len() as f64;
            let (label_x, anchor) = if near_edge { (x - 2.0, "end") } else { (x + 2.0, "start") };
            let text_class = if mark.class == "violation" { " class=\"violation\"" } else { "" };
            let _ = writeln!(
                self.out,
                "<g class=\"{}\"><line class=\"{}\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" \
                 y2=\"{bottom:.1}\"/><text{text_class} x=\"{label_x:.1}\" y=\"{label_y:.1}\" \
                 text-anchor=\"{anchor}\">{}</text></g>",
                mark.class,
                mark.class,
                escape(&mark.label)
            );
        }
    }

    fn legend(&mut self) {
        let y = self.bottom() + 18.0;
        let items: [(&str, &str); 14] = [
            ("span buffer", "debounce buffer"),
            ("span intake", "intake"),
            ("span queued", "queued (thin)"),
            ("span handover", "handover"),
            ("span state-file", "state file"),
            ("run success", "run: success"),
            ("run failure", "run: failure"),
            ("run timeout", "run: timeout"),
            ("run interrupted", "run: interrupted"),
            ("run open", "run: not ended"),
            ("band wait", "restart: wait"),
            ("band close", "restart: close"),
            ("ended", "other outcome"),
            ("lost", "violation"),
        ];
        self.out.push_str("<g class=\"legend\">\n");
        for (n, (class, label)) in items.iter().enumerate() {
            let x = 10.0 + (n % 7) as f64 * 180.0;
            let row_y = y + (n / 7) as f64 * 18.0;
            let _ = writeln!(
                self.out,
                "<rect class=\"swatch {class}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"16\" height=\"9\"/>\
                 <text x=\"{:.1}\" y=\"{row_y:.1}\">{label}</text>",
                row_y - 8.0,
                x + 20.0
            );
        }
        let lines = "vertical lines: blue SIGUSR1/SIGTERM, dashed red deadline, black exit and \
                     boot, dashed green generation, solid red violation; ticks: arrivals; the \
                     axis is half time, half event order, so a busy instant gets room";
        let _ = writeln!(self.out, "<text x=\"10\" y=\"{:.1}\">{lines}</text>", y + 38.0);
        self.out.push_str("</g>\n");
    }
}

/// A name's sort key in which the numbers inside compare as numbers: `s2` before `s10`.
fn natural(name: &str) -> Vec<(u64, String)> {
    let mut parts: Vec<(u64, String)> = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (part, after) = if digits > 0 {
            rest.split_at(digits)
        } else {
            rest.split_at(rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len()))
        };
        let number = if digits > 0 { part.parse().unwrap_or(u64::MAX) } else { 0 };
        parts.push((number, if digits > 0 { String::new() } else { part.to_owned() }));
        rest = after;
    }
    parts
}

/// Text made safe inside an SVG element or attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}
