//! Scenarios: the data that fully determines one simulated run, and its TOML file format.
//!
//! A scenario names everything by the ids a user would write in a bug report (keys, sessions,
//! message ids), so a field report becomes a committed file without writing Rust. The format is
//! documented field by field in `docs/SCENARIO.md`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use quiesce::config::{Config, ConfigError};
use quiesce::message::{ChannelId, Destination, Key, Message, MessageId, SessionId};
use quiesce::signal::{Origin, Signal, SignalKind};

/// Everything one run of the simulation needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The gateway's config at the first boot.
    #[serde(default)]
    pub config: Config,
    /// The keys, each with its channel, session and destination.
    #[serde(default, rename = "key")]
    pub keys: Vec<KeySpec>,
    /// Messages offered to the gateway.
    #[serde(default, rename = "arrival")]
    pub arrivals: Vec<Arrival>,
    /// Signals sent to the process.
    #[serde(default, rename = "signal")]
    pub signals: Vec<SignalSpec>,
    /// How particular runs go: the nth run of a session.
    #[serde(default, rename = "run")]
    pub runs: Vec<RunSpec>,
    /// How every other run goes.
    #[serde(default)]
    pub run_default: RunBehaviour,
    /// Admission failures.
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
    /// Channels that disconnect and reconnect.
    #[serde(default, rename = "reconnect")]
    pub reconnects: Vec<Reconnect>,
    /// Explicit `cancel_key` calls.
    #[serde(default, rename = "cancel")]
    pub cancels: Vec<Cancel>,
    /// Times when the agent is down: runs due to end inside one fail.
    #[serde(default, rename = "outage")]
    pub outages: Vec<Outage>,
    /// How long the nth close of listeners and channels takes; later closes take 0.
    #[serde(default)]
    pub close_ms: Vec<u64>,
    /// When a stopped process is started again; one not started by then starts
    /// `restart_after_ms` after it exits.
    #[serde(default)]
    pub boots: Vec<u64>,
    /// How long after its exit a process without a scheduled boot starts again.
    #[serde(default = "default_restart_after_ms")]
    pub restart_after_ms: u64,
    /// How long after the last scripted input the world must have settled (SPEC 6 liveness).
    #[serde(default = "default_quiet_ms")]
    pub quiet_ms: u64,
}

fn default_restart_after_ms() -> u64 {
    1_000
}

fn default_quiet_ms() -> u64 {
    4 * 3_600_000
}

/// A key and where its messages belong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// The key's name.
    pub name: Key,
    /// Its channel.
    pub channel: ChannelId,
    /// Its session.
    pub session: SessionId,
    /// Its destination.
    pub destination: Destination,
}

/// A message offered at a time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arrival {
    /// When, in virtual ms.
    pub at_ms: u64,
    /// Its key, one of the `[[key]]` names.
    pub key: Key,
    /// Its id within the key's channel; a repeated id is a redelivery.
    pub id: MessageId,
    /// Its text; defaults to the id.
    #[serde(default)]
    pub text: Option<String>,
    /// Whether it may be debounced.
    #[serde(default = "yes")]
    pub debounce: bool,
    /// The per-item window resolver's answer, if any.
    #[serde(default)]
    pub window_ms: Option<i64>,
}

fn yes() -> bool {
    true
}

/// A signal at a time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalSpec {
    /// When, in virtual ms.
    pub at_ms: u64,
    /// Reload or shutdown.
    pub kind: SignalKind,
    /// External (a real SIGUSR1/SIGTERM) or internal (the gateway's own request).
    #[serde(default = "external")]
    pub origin: Origin,
    /// The config a reload reads afresh; the current one when absent.
    #[serde(default)]
    pub config: Option<Config>,
}

fn external() -> Origin {
    Origin::External
}

impl SignalSpec {
    /// The signal itself.
    pub fn signal(&self) -> Signal {
        Signal { kind: self.kind, origin: self.origin }
    }
}

/// How a run ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// The agent completes it.
    #[default]
    Success,
    /// The agent reports a failure.
    Failure,
    /// It never ends; the gateway's run timeout ends it.
    Hang,
}

/// How a run goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBehaviour {
    /// How long it takes.
    #[serde(default)]
    pub duration_ms: u64,
    /// How it ends.
    #[serde(default)]
    pub outcome: RunOutcome,
}

impl Default for RunBehaviour {
    fn default() -> Self {
        Self { duration_ms: 0, outcome: RunOutcome::Success }
    }
}

/// How the nth run of a session goes, counting every run of the session in the scenario from 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// The session.
    pub session: SessionId,
    /// Which of its runs, from 1.
    pub nth: u32,
    /// How long it takes.
    #[serde(default)]
    pub duration_ms: u64,
    /// How it ends.
    #[serde(default)]
    pub outcome: RunOutcome,
}

/// An admission that fails once: of the batch holding `message`, or of any batch admitted at
/// `at_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// A message id whose batch's admission fails.
    #[serde(default)]
    pub message: Option<MessageId>,
    /// A time at which admissions fail.
    #[serde(default)]
    pub at_ms: Option<u64>,
    /// The error the admission reports.
    #[serde(default = "default_reason")]
    pub reason: String,
    /// Whether the error callback fails too.
    #[serde(default)]
    pub callback_fails: bool,
}

fn default_reason() -> String {
    "scripted fault".to_owned()
}

/// A channel that disconnects and reconnects at a time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconnect {
    /// When.
    pub at_ms: u64,
    /// Which channel.
    pub channel: ChannelId,
}

/// A `cancel_key` at a time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    /// When.
    pub at_ms: u64,
    /// Which key.
    pub key: Key,
}

/// A time when the agent is down, as when its provider has an outage: every run due to end
/// successfully at or after `from_ms` and before `until_ms` ends as a failure instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    /// When it begins.
    pub from_ms: u64,
    /// When it ends; a run due to end at this instant succeeds again.
    pub until_ms: u64,
}

/// Why a scenario file could not be used.
#[derive(Debug)]
pub struct ScenarioError {
    /// The file, if the scenario came from one.
    pub file: Option<String>,
    /// The line, if known.
    pub line: Option<usize>,
    /// The field, as a dotted path, if known.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = self.file.as_deref().unwrap_or("scenario");
        write!(f, "{file}")?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ScenarioError {}

impl Scenario {
    /// Reads a scenario file.
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        read_toml_file(path, Self::from_toml_str)
    }

    /// Parses a scenario from TOML text and checks that every name it uses is defined.
    pub fn from_toml_str(text: &str) -> Result<Self, ScenarioError> {
        Config::from_toml_section(text, "config").map_err(config_error)?;
        let scenario: Scenario = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// The scenario as TOML text that [`Scenario::from_toml_str`] reads back.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("a scenario always serializes")
    }

    /// The key spec of a key name.
    pub fn key(&self, name: &Key) -> Option<&KeySpec> {
        self.keys.iter().find(|k| &k.name == name)
    }

    /// The message an arrival offers.
    pub fn message(&self, arrival: &Arrival) -> Message {
        let key = self.key(&arrival.key).expect("validated: arrivals name known keys");
        let text = arrival.text.as_deref().unwrap_or(arrival.id.as_str());
        Message {
            channel: key.channel.clone(),
            id: arrival.id.clone(),
            key: Some(key.name.clone()),
            session: key.session.clone(),
            destination: key.destination.clone(),
            text: text.into(),
            debounce: arrival.debounce,
            window_ms: arrival.window_ms,
        }
    }

    /// How the nth run of a session goes.
    pub fn run_behaviour(&self, session: &SessionId, nth: u32) -> RunBehaviour {
        let scripted = self.runs.iter().find(|r| &r.session == session && r.nth == nth);
        scripted.map_or(self.run_default, |r| RunBehaviour {
            duration_ms: r.duration_ms,
            outcome: r.outcome,
        })
    }

    /// Whether the agent is down at `at_ms`: a run due to end then fails.
    pub fn agent_down(&self, at_ms: u64) -> bool {
        self.outages.iter().any(|o| o.from_ms <= at_ms && at_ms < o.until_ms)
    }

    /// The time of the last scripted input.
    pub fn last_input_ms(&self) -> u64 {
        let arrivals = self.arrivals.iter().map(|a| a.at_ms);
        let signals = self.signals.iter().map(|s| s.at_ms);
        let reconnects = self.reconnects.iter().map(|r| r.at_ms);
        let cancels = self.cancels.iter().map(|c| c.at_ms);
        let boots = self.boots.iter().copied();
        arrivals.chain(signals).chain(reconnects).chain(cancels).chain(boots).max().unwrap_or(0)
    }

    /// The config of a file such as `explore --config FILE` takes: the `[config]` table of a
    /// scenario, at the top level of its own file, read and checked by [`Config::from_file`].
    pub fn config_from_file(path: &Path) -> Result<Config, ScenarioError> {
        let file = Some(path.display().to_string());
        Config::from_file(path).map_err(|error| ScenarioError { file, ..config_error(error) })
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let unknown = |field: String, name: &str| ScenarioError {
            file: None,
            line: None,
            field: Some(field),
            reason: format!("names `{name}`, which no [[key]] defines"),
        };
        let invalid = |field: String, reason: &str| ScenarioError {
            file: None,
            line: None,
            field: Some(field),
            reason: reason.to_owned(),
        };
        for (n, key) in self.keys.iter().enumerate() {
            if self.keys[..n].iter().any(|k| k.name == key.name) {
                return Err(invalid(format!("key[{n}].name"), "is defined twice"));
            }
        }
        for (n, run) in self.runs.iter().enumerate() {
            if run.nth == 0 {
                return Err(invalid(
                    format!("run[{n}].nth"),
                    "must be at least 1: runs count from 1",
                ));
            }
        }
        for (n, arrival) in self.arrivals.iter().enumerate() {
            if self.key(&arrival.key).is_none() {
                return Err(unknown(format!("arrival[{n}].key"), arrival.key.as_str()));
            }
        }
        for (n, cancel) in self.cancels.iter().enumerate() {
            if self.key(&cancel.key).is_none() {
                return Err(unknown(format!("cancel[{n}].key"), cancel.key.as_str()));
            }
        }
        for (n, signal) in self.signals.iter().enumerate() {
            let Some(config) = &signal.config else { continue };
            config.validate().map_err(|e| ScenarioError {
                field: Some(format!("signal[{n}].config.{}", e.field())),
                ..config_error(e)
            })?;
        }
        for (n, outage) in self.outages.iter().enumerate() {
            if outage.until_ms < outage.from_ms {
                return Err(ScenarioError {
                    file: None,
                    line: None,
                    field: Some(format!("outage[{n}].until_ms")),
                    reason: "must not be before `from_ms`".to_owned(),
                });
            }
        }
        for (n, fault) in self.faults.iter().enumerate() {
            if fault.message.is_none() && fault.at_ms.is_none() {
                let reason = "needs `message` or `at_ms`".to_owned();
                return Err(ScenarioError {
                    file: None,
                    line: None,
                    field: Some(format!("fault[{n}]")),
                    reason,
                });
            }
        }
        Ok(())
    }
}

/// Reads a TOML file and parses it with `parse`; every error names the file.
pub(crate) fn read_toml_file<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, ScenarioError>,
) -> Result<T, ScenarioError> {
    let file = Some(path.display().to_string());
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: file.clone(),
        line: None,
        field: None,
        reason: e.to_string(),
    })?;
    parse(&text).map_err(|e| ScenarioError { file, ..e })
}

/// A config error, with the field and line the config reader found.
pub(crate) fn config_error(error: ConfigError) -> ScenarioError {
    let field = (!error.field().is_empty()).then(|| error.field().to_owned());
    ScenarioError { file: None, line: error.line(), field, reason: error.reason().to_string() }
}

/// A TOML or schema error with its line and, where the message names one, its field.
pub(crate) fn toml_error(text: &str, error: &toml::de::Error) -> ScenarioError {
    let line =
        error.span().map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let message = error.message().to_owned();
    let named = message.split('`').nth(1).filter(|_| message.contains("field")).map(str::to_owned);
    let field = named.or_else(|| line.and_then(|line| field_at_line(text, line)));
    ScenarioError { file: None, line, field, reason: message }
}

/// The dotted field a `key = value` line sets, under the nearest table header above it, such as
/// `arrival.at_ms`: serde's type errors name the line but not the field.
fn field_at_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let key = lines.get(line.checked_sub(1)?)?.split_once('=')?.0.trim();
    if key.is_empty() {
        return None;
    }
    let header = lines[..line - 1].iter().rev().map(|l| l.trim()).find(|l| l.starts_with('['));
    let table = header.map(|h| h.trim_matches(|c| c == '[' || c == ']').trim());
    Some(table.map_or_else(|| key.to_owned(), |table| format!("{table}.{key}")))
}
