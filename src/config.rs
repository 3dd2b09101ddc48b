//! The one typed config schema (SPEC 5.1), shared by the daemon, scenario files and the library.
//!
//! A config is read from TOML with [`Config::from_toml_str`], [`Config::from_file`] or, for a
//! config embedded in a larger document such as a scenario file, [`Config::from_toml_section`].
//! Reading happens in two steps:
//!
//! 1. The TOML is parsed into a tree that remembers where each key and value was, and that tree
//!    is walked against the schema by hand. The walk rejects unknown fields, values of the
//!    wrong type, negative numbers and unknown enum names, each with its dotted path and line.
//!    serde's derived deserializer is not used for reading because its messages do not
//!    reliably name the field.
//! 2. [`Config::validate`] checks every range rule on the typed value. It is the single place
//!    that knows the bounds, so a config built in code or deserialized elsewhere is checked by
//!    the same rules; when the config came from text, the error gets the value's line.
//!
//! # Bounds
//!
//! Every duration is at most [`DURATION_MS_MAX`] (one day), every count at most [`COUNT_MAX`]
//! and `run.attempts_max` at most [`ATTEMPTS_MAX`]. The bounds are far above any sensible
//! setting, and low enough that sums and small products of config values (a deadline plus
//! the close budget, five debounce windows, a cap times the attempts) can never overflow a
//! `u64`, so code that uses a validated config needs no checked arithmetic for them.
//!
//! The serde derives stay for writing, and for callers that embed a [`Config`] in their own
//! serde types; such a caller must call [`Config::validate`] itself.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::message::{ChannelId, SessionId};

/// The longest duration any `_ms` field accepts: one day.
pub const DURATION_MS_MAX: u64 = 86_400_000;

/// The largest count `queue.cap`, `inbound.keys_max` and `intake_max` accept.
pub const COUNT_MAX: usize = 10_000_000;

/// The largest `run.attempts_max`: more retries of a failing run help nobody.
pub const ATTEMPTS_MAX: u32 = 100;

/// Everything the gateway can be configured with. `Default` gives the SPEC defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The inbound debouncers.
    pub inbound: InboundConfig,
    /// The followup queues.
    pub queue: QueueConfig,
    /// Agent runs.
    pub run: RunConfig,
    /// Restarts on SIGUSR1 or on the gateway's own request.
    pub reload: ReloadConfig,
    /// Stops on SIGTERM or SIGINT.
    pub stop: StopConfig,
    /// How long closing listeners and channels may take, in phase 6 of a restart.
    pub close_budget_ms: u64,
    /// How many messages the intake holds during a restart before replying "busy".
    pub intake_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            inbound: InboundConfig::default(),
            queue: QueueConfig::default(),
            run: RunConfig::default(),
            reload: ReloadConfig::default(),
            stop: StopConfig::default(),
            close_budget_ms: 5_000,
            intake_max: 10_000,
        }
    }
}

/// The inbound debouncers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboundConfig {
    /// The default debounce window; 0 turns debouncing off.
    pub window_ms: u64,
    /// How many keys one debouncer buffers at once; a new key beyond it is admitted at once.
    pub keys_max: usize,
    /// Per-channel settings.
    pub channels: BTreeMap<ChannelId, ChannelInbound>,
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self { window_ms: 0, keys_max: 2_048, channels: BTreeMap::new() }
    }
}

/// One channel's inbound settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelInbound {
    /// The channel's default window, over `inbound.window_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
}

/// How queued batches of one destination are run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueMode {
    /// All queued batches with the head's destination run together as one run.
    #[default]
    Collect,
    /// One run per queued batch.
    Followup,
}

impl QueueMode {
    /// The name the config file and the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Collect => "collect",
            Self::Followup => "followup",
        }
    }
}

/// What a full queue does with one more batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DropPolicy {
    /// Refuse the new batch: `rejected_overflow`.
    New,
    /// Append, then drop the oldest messages: `dropped_overflow`.
    Old,
    /// As `Old`, and keep a summary of what was dropped for the next run.
    #[default]
    Summarize,
}

impl DropPolicy {
    /// The name the config file and the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Old => "old",
            Self::Summarize => "summarize",
        }
    }
}

/// Queue settings that a session or channel can override.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueOverride {
    /// Overrides `queue.mode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<QueueMode>,
    /// Overrides `queue.cap`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap: Option<usize>,
    /// Overrides `queue.drop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop: Option<DropPolicy>,
    /// Overrides `queue.quiet_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet_ms: Option<u64>,
}

/// The followup queues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// How queued batches run.
    pub mode: QueueMode,
    /// How many messages a queue holds.
    pub cap: usize,
    /// What a full queue does.
    pub drop: DropPolicy,
    /// How long the drain waits after the last append before a run.
    pub quiet_ms: u64,
    /// Per-channel overrides, below per-session ones.
    pub channels: BTreeMap<ChannelId, QueueOverride>,
    /// Per-session overrides, the strongest.
    pub sessions: BTreeMap<SessionId, QueueOverride>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            mode: QueueMode::Collect,
            cap: 20,
            drop: DropPolicy::Summarize,
            quiet_ms: 500,
            channels: BTreeMap::new(),
            sessions: BTreeMap::new(),
        }
    }
}

/// The settings one queue runs with, after precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSettings {
    /// How queued batches run.
    pub mode: QueueMode,
    /// How many messages the queue holds.
    pub cap: usize,
    /// What a full queue does.
    pub drop: DropPolicy,
    /// How long the drain waits after the last append.
    pub quiet_ms: u64,
}

/// Agent runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// A run not finished after this long counts as failed.
    pub timeout_ms: u64,
    /// After this many failed runs a batch is dead-lettered.
    pub attempts_max: u32,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self { timeout_ms: 600_000, attempts_max: 5 }
    }
}

/// Reloads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadConfig {
    /// Whether an external SIGUSR1 is honoured.
    pub allow_external: bool,
    /// The absolute deadline of a reload, from the signal.
    pub deadline_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self { allow_external: true, deadline_ms: 90_000 }
    }
}

/// Stops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StopConfig {
    /// The absolute deadline of a stop, from the signal.
    pub deadline_ms: u64,
}

impl Default for StopConfig {
    fn default() -> Self {
        Self { deadline_ms: 25_000 }
    }
}

impl Config {
    /// The default window of a channel's debouncer: the channel's own, else the global one.
    pub fn window_ms(&self, channel: &ChannelId) -> u64 {
        let own = self.inbound.channels.get(channel).and_then(|c| c.window_ms);
        own.unwrap_or(self.inbound.window_ms)
    }

    /// The queue settings of a session, first fed from `channel`: per session, then per
    /// channel, then global.
    pub fn queue_settings(&self, session: &SessionId, channel: &ChannelId) -> QueueSettings {
        let layers = [self.queue.sessions.get(session), self.queue.channels.get(channel)];
        let global = &self.queue;
        QueueSettings {
            mode: layered(layers, |o| o.mode).unwrap_or(global.mode),
            cap: layered(layers, |o| o.cap).unwrap_or(global.cap),
            drop: layered(layers, |o| o.drop).unwrap_or(global.drop),
            quiet_ms: layered(layers, |o| o.quiet_ms).unwrap_or(global.quiet_ms),
        }
    }

    /// Reads and validates a config from TOML text. An empty document gives the defaults.
    ///
    /// # Errors
    ///
    /// The first problem found: invalid TOML, an unknown field, a value of the wrong type or
    /// out of its bounds. The error names the field and the line.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let root = parse(text)?;
        let mut reader = Reader::new(text);
        let config = reader.config("", root.get_ref())?;

        config.validate().map_err(|error| reader.locate(error, ""))?;
        Ok(config)
    }

    /// Reads and validates the config held in the table `key` of a larger TOML document, such
    /// as the `[config]` table of a scenario file. Other keys of the document are not looked
    /// at; a missing table gives the defaults.
    ///
    /// Fields are named from the document's root (`config.queue.cap`) and lines count from
    /// the top of the document, so the error points into the file the user wrote.
    ///
    /// # Errors
    ///
    /// As [`Config::from_toml_str`]; the document as a whole must be valid TOML.
    pub fn from_toml_section(text: &str, key: &str) -> Result<Config, ConfigError> {
        let root = parse(text)?;
        let Some(value) = root.get_ref().get(key) else { return Ok(Config::default()) };
        let at = join("", key);
        let mut reader = Reader::new(text);
        let config = reader.config(&at, reader.table(&at, value)?)?;

        config.validate().map_err(|error| reader.locate(error, &at))?;
        Ok(config)
    }

    /// Reads and validates a config file.
    ///
    /// # Errors
    ///
    /// As [`Config::from_toml_str`], or [`Reason::Unreadable`] when the file cannot be read as
    /// UTF-8 text. Every error names the file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|error| {
            ConfigError::new("", Reason::Unreadable(error.to_string())).in_file(path)
        })?;
        Config::from_toml_str(&text).map_err(|error| error.in_file(path))
    }

    /// Checks every range rule: what must be at least 1, and the upper [bounds](self#bounds).
    /// Reading from TOML calls it; a config built in code or deserialized with serde should
    /// call it before use.
    ///
    /// # Errors
    ///
    /// The first field out of its bounds, without a line since a typed value has none.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.inbound.validate("inbound")?;
        self.queue.validate("queue")?;
        check("run.timeout_ms", self.run.timeout_ms, LIMIT_MS)?;
        check("run.attempts_max", self.run.attempts_max, ATTEMPTS)?;
        check("reload.deadline_ms", self.reload.deadline_ms, LIMIT_MS)?;
        check("stop.deadline_ms", self.stop.deadline_ms, LIMIT_MS)?;
        check("close_budget_ms", self.close_budget_ms, WAIT_MS)?;
        check("intake_max", self.intake_max, COUNT)
    }

    /// Writes the config as TOML. Every field is written, defaults included, so a scenario
    /// file states all it ran with.
    ///
    /// A config that passes [`Config::validate`] reads back with [`Config::from_toml_str`] to
    /// an equal value. One that does not is written as it is, and reading it back names the
    /// same field, so writing never fails and never hides a bad value.
    pub fn to_toml_string(&self) -> String {
        let mut out = Writer::default();
        out.value("close_budget_ms", self.close_budget_ms);
        out.value("intake_max", self.intake_max);

        self.inbound.write(&mut out);
        self.queue.write(&mut out);

        out.header("run");
        out.value("timeout_ms", self.run.timeout_ms);
        out.value("attempts_max", self.run.attempts_max);
        out.header("reload");
        out.value("allow_external", self.reload.allow_external);
        out.value("deadline_ms", self.reload.deadline_ms);
        out.header("stop");
        out.value("deadline_ms", self.stop.deadline_ms);
        out.text
    }
}

/// The first override layer, strongest first, that sets a field.
fn layered<T>(
    layers: [Option<&QueueOverride>; 2],
    field: impl Fn(&QueueOverride) -> Option<T>,
) -> Option<T> {
    layers.into_iter().flatten().find_map(field)
}

/// A config that cannot be used, and where the problem is.
///
/// It is meant to be shown to the person who wrote the file, so its `Display` reads like a
/// compiler message: `quiesce.toml:7: queue.cap: must be at least 1`. Other loaders (the
/// scenario files) build the same error with [`ConfigError::new`] and add their own line and
/// file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: String,
    reason: Reason,
    line: Option<usize>,
    file: Option<PathBuf>,
}

impl ConfigError {
    /// An error about `field`, a dotted path such as `queue.sessions.s1.cap`.
    pub fn new(field: impl Into<String>, reason: Reason) -> Self {
        Self { field: field.into(), reason, line: None, file: None }
    }

    /// The same error, at a 1-based line of the text.
    pub fn at_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }

    /// The same error, in the file at `path`.
    pub fn in_file(mut self, path: &Path) -> Self {
        self.file = Some(path.to_path_buf());
        self
    }

    /// The dotted path of the field, such as `inbound.channels.telegram.window_ms`. A name
    /// that is not a bare TOML key is quoted: `queue.sessions."a.b".cap`. Empty when the
    /// problem is in no one field: an unreadable file, or a syntax error on a line with no key.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with the field.
    pub fn reason(&self) -> &Reason {
        &self.reason
    }

    /// The 1-based line where the text has the problem, when it came from text.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The file the text came from, when it came from a file.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: ", file.display())?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            (None, Some(line)) => write!(f, "line {line}: ")?,
            (None, None) => {}
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Why a config was refused. Its `Display` is the reason as the error message gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The text is not valid TOML (including a key given twice); the parser's message.
    Syntax(String),
    /// The file could not be read as UTF-8 text; the system's message.
    Unreadable(String),
    /// The schema has no such field.
    UnknownField,
    /// The value has the wrong TOML type.
    Expected {
        /// The type the field takes, with its article: "an integer".
        expected: &'static str,
        /// The type the text has.
        found: &'static str,
    },
    /// A string, or another value, that names no variant of an enum field.
    UnknownValue {
        /// The names the field takes.
        expected: &'static [&'static str],
    },
    /// A negative number where only 0 and up make sense.
    Negative,
    /// A number below the field's smallest meaningful value.
    TooSmall {
        /// The smallest value the field takes.
        min: u64,
    },
    /// A number above the field's [bound](self#bounds).
    TooLarge {
        /// The largest value the field takes.
        max: u64,
    },
    /// A rule of another loader that reuses this error, such as the scenario files, in its
    /// own words. The config reader never gives it.
    Invalid(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Syntax(message) => write!(f, "invalid TOML: {message}"),
            Reason::Unreadable(message) => write!(f, "cannot read the file: {message}"),
            Reason::UnknownField => write!(f, "unknown field"),
            Reason::Expected { expected, found } => write!(f, "expected {expected}, found {found}"),
            Reason::UnknownValue { expected } => {
                write!(f, "expected one of {}", expected.join(", "))
            }
            Reason::Negative => write!(f, "must not be negative"),
            Reason::TooSmall { min } => write!(f, "must be at least {min}"),
            Reason::TooLarge { max } => write!(f, "must be at most {max}"),
            Reason::Invalid(message) => write!(f, "{message}"),
        }
    }
}

/// The range a number field accepts.
#[derive(Clone, Copy)]
struct Bounds {
    min: u64,
    max: u64,
}

/// Windows, quiet times and the close budget: 0 means "no wait".
const WAIT_MS: Bounds = Bounds { min: 0, max: DURATION_MS_MAX };

/// Timeouts and deadlines: 0 would give up before starting.
const LIMIT_MS: Bounds = Bounds { min: 1, max: DURATION_MS_MAX };

/// Capacities: 0 would refuse everything.
const COUNT: Bounds = Bounds { min: 1, max: COUNT_MAX as u64 };

/// Run attempts: 0 would dead-letter a batch before its first run.
const ATTEMPTS: Bounds = Bounds { min: 1, max: ATTEMPTS_MAX as u64 };

/// Checks one number against its bounds.
fn check(field: &str, value: impl TryInto<u64>, bounds: Bounds) -> Result<(), ConfigError> {
    let value = value.try_into().unwrap_or(u64::MAX);
    if value < bounds.min {
        return Err(ConfigError::new(field, Reason::TooSmall { min: bounds.min }));
    }
    if value > bounds.max {
        return Err(ConfigError::new(field, Reason::TooLarge { max: bounds.max }));
    }
    Ok(())
}

impl InboundConfig {
    /// Checks the inbound ranges; `at` is this table's path.
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        check(&join(at, "window_ms"), self.window_ms, WAIT_MS)?;
        check(&join(at, "keys_max"), self.keys_max, COUNT)?;

        for (name, channel) in &self.channels {
            let field = join(&join(&join(at, "channels"), name.as_str()), "window_ms");
            if let Some(window_ms) = channel.window_ms {
                check(&field, window_ms, WAIT_MS)?;
            }
        }
        Ok(())
    }

    /// Writes `[inbound]` and one table per channel.
    fn write(&self, out: &mut Writer) {
        out.header("inbound");
        out.value("window_ms", self.window_ms);
        out.value("keys_max", self.keys_max);

        for (name, channel) in &self.channels {
            out.header(&join("inbound.channels", name.as_str()));
            if let Some(window_ms) = channel.window_ms {
                out.value("window_ms", window_ms);
            }
        }
    }
}

impl QueueConfig {
    /// Checks the global queue ranges and those of every override; `at` is this table's path.
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        check(&join(at, "cap"), self.cap, COUNT)?;
        check(&join(at, "quiet_ms"), self.quiet_ms, WAIT_MS)?;

        let channels = self.channels.iter().map(|(name, o)| ("channels", name.as_str(), o));
        let sessions = self.sessions.iter().map(|(name, o)| ("sessions", name.as_str(), o));
        for (kind, name, layer) in channels.chain(sessions) {
            layer.validate(&join(&join(at, kind), name))?;
        }
        Ok(())
    }

    /// Writes `[queue]` and one table per override, channels first.
    fn write(&self, out: &mut Writer) {
        out.header("queue");
        out.name("mode", self.mode.as_str());
        out.value("cap", self.cap);
        out.name("drop", self.drop.as_str());
        out.value("quiet_ms", self.quiet_ms);

        for (name, layer) in &self.channels {
            layer.write(&join("queue.channels", name.as_str()), out);
        }
        for (name, layer) in &self.sessions {
            layer.write(&join("queue.sessions", name.as_str()), out);
        }
    }
}

impl QueueOverride {
    /// Checks the ranges of the fields this override sets; `at` is its table's path.
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if let Some(cap) = self.cap {
            check(&join(at, "cap"), cap, COUNT)?;
        }
        if let Some(quiet_ms) = self.quiet_ms {
            check(&join(at, "quiet_ms"), quiet_ms, WAIT_MS)?;
        }
        Ok(())
    }

    /// Writes the override as the table `at`, with only the fields it sets.
    fn write(&self, at: &str, out: &mut Writer) {
        out.header(at);
        if let Some(mode) = self.mode {
            out.name("mode", mode.as_str());
        }
        if let Some(cap) = self.cap {
            out.value("cap", cap);
        }
        if let Some(drop) = self.drop {
            out.name("drop", drop.as_str());
        }
        if let Some(quiet_ms) = self.quiet_ms {
            out.value("quiet_ms", quiet_ms);
        }
    }
}

/// Parses TOML into a tree that keeps each key's and value's place in the text.
fn parse(text: &str) -> Result<Spanned<DeTable<'_>>, ConfigError> {
    DeTable::parse(text).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        let reason = Reason::Syntax(error.message().to_string());
        let line = LineIndex::new(text).line(offset);
        ConfigError::new(field_near(text, offset), reason).at_line(line)
    })
}

/// One TOML value with its place in the text.
type Node<'i> = Spanned<DeValue<'i>>;

/// Walks a parsed document against the schema and builds the typed config.
///
/// Range rules are left to [`Config::validate`]; the reader remembers the line of every value
/// it read, so that a range error found afterwards can still point at its line.
struct Reader {
    index: LineIndex,
    /// The line of every value read so far, by dotted path.
    lines: BTreeMap<String, usize>,
}

impl Reader {
    fn new(text: &str) -> Self {
        Self { index: LineIndex::new(text), lines: BTreeMap::new() }
    }

    /// Reads the root table of a config; `at` is its path, empty for a whole document.
    fn config(&mut self, at: &str, table: &DeTable<'_>) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        for (key, node) in table.iter() {
            let field = join(at, key.get_ref());
            match key.get_ref().as_ref() {
                "inbound" => config.inbound = self.inbound(&field, node)?,
                "queue" => config.queue = self.queue(&field, node)?,
                "run" => config.run = self.run(&field, node)?,
                "reload" => config.reload = self.reload(&field, node)?,
                "stop" => config.stop = self.stop(&field, node)?,
                "close_budget_ms" => config.close_budget_ms = self.number(&field, node)?,
                "intake_max" => config.intake_max = self.number(&field, node)?,
                _ => return Err(self.unknown(&field, key)),
            }
        }
        Ok(config)
    }

    fn inbound(&mut self, at: &str, node: &Node<'_>) -> Result<InboundConfig, ConfigError> {
        let mut inbound = InboundConfig::default();
        for (key, node) in self.table(at, node)?.iter() {
            let field = join(at, key.get_ref());
            match key.get_ref().as_ref() {
                "window_ms" => inbound.window_ms = self.number(&field, node)?,
                "keys_max" => inbound.keys_max = self.number(&field, node)?,
                "channels" => inbound.channels = self.map(&field, node, Self::channel_inbound)?,
                _ => return Err(self.unknown(&field, key)),
            }
        }
        Ok(inbound)
    }

    fn channel_inbound(
        &mut self,
        at: &str,
        node: &Node<'_>,
    ) -> Result<ChannelInbound, ConfigError> {
        let mut channel = ChannelInbound::default();
        for (key, node) in self.table(at, node)?.iter() {
            let field = join(at, key.get_ref());
            match key.get_ref().as_ref() {
                "window_ms" => channel.window_ms = Some(self.number(&field, node)?),
                _ => return Err(self.unknown(&field, key)),
            }
        }
        Ok(channel)
    }

    fn queue(&mut self, at: &str, node: &Node<'_>) -> Result<QueueConfig, ConfigError> {
        let mut queue = QueueConfig::default();
        for (key, node) in self.table(at, node)?.iter() {
            let field = join(at, key.get_ref());
            match key.get_ref().as_ref() {
                "mode" => queue.mode = self.choice(&field, node)?,
                "cap" => queue.cap = self.number(&field, node)?,
                "drop" => queue.drop = self.choice(&field, node)?,
                "quiet_ms" => queue.quiet_ms = self.number(&field, node)?,
                "channels" => queue.channels = self.map(&field, node, Self::queue_override)?,
                "sessions" => queue.sessions = self.map(&field, node, Self::queue_override)?,
                _ => return Err(self.unknown(&field, key)),
            }
        }
        Ok(queue)
    }

    fn queue_override(&mut self, at: &str, node: &Node<'_>) -> Result<QueueOverride, ConfigError> {
        let mut layer = QueueOverride::default();
        for (key, node) in self.table(at, node)?.iter() {
            let field = join(at, key.get_ref());
            match key.get_ref().as_ref() {
                "mode" => layer.mode = Some(self.choice(&field, node)?),
                "cap" => layer.cap = Some(self.number(&field, node)?),
                "drop" => layer.drop = Some(self.choice(&field, node)?),
                "quiet_ms" => layer.quiet_ms = Some(self.number(&field, node)?),
                _ => return Err(self.unknown(&field, key)),
            }
        }
        Ok(layer)
    }

    fn run(&mut self, at: &str, node: &Node<'_>) -> Result<RunConfig, ConfigError> {
        let mut run = RunConfig::default();
        for (key, node) in self.table(at, node)?.iter() {
            let field = join(at, key.get_ref());
            match key.get_ref().as_ref() {
                "timeout_ms" => run.timeout_ms = self.number(&field, node)?,
                "attempts_max" => run.attempts_max = self.number(&field, node)?,
                _ => return Err(self.unknown(&field, key)),
            }
        }
        Ok(run)
    }

    fn reload(&mut self, at: &str, node: &Node<'_>) -> Result<ReloadConfig, ConfigError> {
        let mut reload = ReloadConfig::default();
        for (key, node) in self.table(at, node)?.iter() {
            let field = join(at, key.get_ref());
            match key.get_ref().as_ref() {
                "allow_external" => reload.allow_external = self.boolean(&field, node)?,
                "deadline_ms" => reload.deadline_ms = self.number(&field, node)?,
                _ => return Err(self.unknown(&field, key)),
            }
        }
        Ok(reload)
    }

    fn stop(&mut self, at: &str, node: &Node<'_>) -> Result<StopConfig, ConfigError> {
        let mut stop = StopConfig::default();
        for (key, node) in self.table(at, node)?.iter() {
            let field = join(at, key.get_ref());
            match key.get_ref().as_ref() {
                "deadline_ms" => stop.deadline_ms = self.number(&field, node)?,
                _ => return Err(self.unknown(&field, key)),
            }
        }
        Ok(stop)
    }

    /// Reads a table of named entries (channels, sessions), each read by `entry`.
    fn map<K, V>(
        &mut self,
        at: &str,
        node: &Node<'_>,
        entry: fn(&mut Self, &str, &Node<'_>) -> Result<V, ConfigError>,
    ) -> Result<BTreeMap<K, V>, ConfigError>
    where
        K: From<String> + Ord,
    {
        let mut map = BTreeMap::new();
        for (name, node) in self.table(at, node)?.iter() {
            let value = entry(self, &join(at, name.get_ref()), node)?;
            map.insert(K::from(name.get_ref().to_string()), value);
        }
        Ok(map)
    }

    /// The table a node holds.
    fn table<'n, 'i>(
        &self,
        field: &str,
        node: &'n Node<'i>,
    ) -> Result<&'n DeTable<'i>, ConfigError> {
        match node.get_ref() {
            DeValue::Table(table) => Ok(table),
            _ => Err(self.expected(field, node, "a table")),
        }
    }

    /// A non-negative integer. `-0` is 0. One too big for its type saturates to the type's
    /// largest value, which is above every bound, so [`Config::validate`] still names it.
    fn number<T: Unsigned>(&mut self, field: &str, node: &Node<'_>) -> Result<T, ConfigError> {
        let DeValue::Integer(integer) = node.get_ref() else {
            return Err(self.expected(field, node, "an integer"));
        };
        let digits = integer.as_str();
        let negative = digits.starts_with('-') && digits.bytes().any(|b| matches!(b, b'1'..=b'9'));
        if negative {
            return Err(self.error(field, Reason::Negative, node.span().start));
        }

        self.remember(field, node);
        // The parser has checked the digits and `from_str_radix` takes a leading `+`, so the
        // only failure left is overflow.
        let magnitude = digits.trim_start_matches('-');
        let value = u64::from_str_radix(magnitude, integer.radix()).unwrap_or(u64::MAX);
        Ok(T::try_from(value).unwrap_or(T::MAX))
    }

    fn boolean(&mut self, field: &str, node: &Node<'_>) -> Result<bool, ConfigError> {
        let DeValue::Boolean(value) = node.get_ref() else {
            return Err(self.expected(field, node, "a boolean"));
        };
        self.remember(field, node);
        Ok(*value)
    }

    /// An enum value, by name.
    fn choice<T: Named>(&mut self, field: &str, node: &Node<'_>) -> Result<T, ConfigError> {
        let name = node.get_ref().as_str().unwrap_or_default();
        let Some(value) = T::ALL.iter().copied().find(|v| v.name() == name) else {
            let reason = Reason::UnknownValue { expected: T::NAMES };
            return Err(self.error(field, reason, node.span().start));
        };
        self.remember(field, node);
        Ok(value)
    }

    fn remember(&mut self, field: &str, node: &Node<'_>) {
        self.lines.insert(field.to_string(), self.index.line(node.span().start));
    }

    /// Gives a validation error the line of its value. `at` is the path validation ran under,
    /// which its field names do not include.
    fn locate(&self, mut error: ConfigError, at: &str) -> ConfigError {
        if !at.is_empty() {
            error.field = format!("{at}.{}", error.field);
        }
        error.line = self.lines.get(&error.field).copied();
        error
    }

    fn unknown(&self, field: &str, key: &Spanned<impl Sized>) -> ConfigError {
        self.error(field, Reason::UnknownField, key.span().start)
    }

    fn expected(&self, field: &str, node: &Node<'_>, expected: &'static str) -> ConfigError {
        let reason = Reason::Expected { expected, found: kind(node.get_ref()) };
        self.error(field, reason, node.span().start)
    }

    fn error(&self, field: &str, reason: Reason, offset: usize) -> ConfigError {
        ConfigError::new(field, reason).at_line(self.index.line(offset))
    }
}

/// The TOML type of a value, with its article, for "expected ..., found ..." messages.
fn kind(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// An unsigned integer type that a config number is stored in.
trait Unsigned: TryFrom<u64> + Copy {
    const MAX: Self;
}

impl Unsigned for u64 {
    const MAX: Self = u64::MAX;
}

impl Unsigned for u32 {
    const MAX: Self = u32::MAX;
}

impl Unsigned for usize {
    const MAX: Self = usize::MAX;
}

/// A config enum, read by name.
trait Named: Copy + 'static {
    /// Every variant, in the order of `NAMES`.
    const ALL: &'static [Self];
    /// Every name, for the error that lists them.
    const NAMES: &'static [&'static str];
    fn name(self) -> &'static str;
}

impl Named for QueueMode {
    const ALL: &'static [Self] = &[Self::Collect, Self::Followup];
    const NAMES: &'static [&'static str] = &["collect", "followup"];
    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl Named for DropPolicy {
    const ALL: &'static [Self] = &[Self::New, Self::Old, Self::Summarize];
    const NAMES: &'static [&'static str] = &["new", "old", "summarize"];
    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// TOML text under construction, one table after another.
#[derive(Default)]
struct Writer {
    text: String,
}

impl Writer {
    /// Starts the table `path`, a blank line after what came before.
    fn header(&mut self, path: &str) {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(&format!("[{path}]\n"));
    }

    /// Writes a number or a boolean, whose `Display` is already TOML.
    fn value(&mut self, key: &str, value: impl fmt::Display) {
        self.text.push_str(&format!("{key} = {value}\n"));
    }

    /// Writes an enum name; names are plain ASCII words, so quotes need no escaping.
    fn name(&mut self, key: &str, name: &str) {
        self.text.push_str(&format!("{key} = \"{name}\"\n"));
    }
}

/// The dotted path of `key` inside the table at `at` (empty for the root).
fn join(at: &str, key: &str) -> String {
    if at.is_empty() { toml_key(key) } else { format!("{at}.{}", toml_key(key)) }
}

/// A key as TOML writes it: bare when it can be, else a quoted basic string.
fn toml_key(key: &str) -> String {
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !key.is_empty() && key.chars().all(bare) {
        return key.to_string();
    }

    let mut quoted = String::from("\"");
    for c in key.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Where each line of a text starts, so that finding the line of an offset is a binary search:
/// scanning from the top for every value would make reading quadratic in the document's size.
struct LineIndex {
    newlines: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let newlines = text.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| i);
        Self { newlines: newlines.collect() }
    }

    /// The 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&newline| newline < offset) + 1
    }
}

/// A best guess at the field a syntax error is in: the key written on the error's line, under
/// the last table header above it. It is a guess from the raw text, since a document that does
/// not parse has no tree to walk; it is right for the common mistakes (a key given twice, a
/// bad value), and the line number is exact either way.
fn field_near(text: &str, offset: usize) -> String {
    let Some(before) = text.get(..offset) else { return String::new() };
    let start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = text.get(start..).and_then(|rest| rest.lines().next()).unwrap_or("");
    if let Some(header) = header_in(line) {
        return header.to_string();
    }

    let key = line.split_once('=').map_or("", |(key, _)| key.trim());
    let header = before.get(..start).and_then(|above| above.lines().rev().find_map(header_in));
    match (header.unwrap_or(""), key) {
        ("", key) => key.to_string(),
        (header, "") => header.to_string(),
        (header, key) => format!("{header}.{key}"),
    }
}

/// The path a table header line names: `queue` for `[queue]`, `a` for `[[a]]`.
fn header_in(line: &str) -> Option<&str> {
    let inner = line.trim().strip_prefix('[')?.trim_start_matches('[');
    Some(inner.split(']').next().unwrap_or("").trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_agree_with_serde() {
        for mode in QueueMode::ALL {
            let json = serde_json::to_string(mode).ok();
            assert_eq!(json, Some(format!("\"{}\"", mode.as_str())));
        }
        for drop in DropPolicy::ALL {
            let json = serde_json::to_string(drop).ok();
            assert_eq!(json, Some(format!("\"{}\"", drop.as_str())));
        }
    }

    #[test]
    fn names_list_every_variant() {
        let modes: Vec<_> = QueueMode::ALL.iter().map(|m| m.as_str()).collect();
        let drops: Vec<_> = DropPolicy::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(modes, QueueMode::NAMES);
        assert_eq!(drops, DropPolicy::NAMES);
    }

    #[test]
    fn odd_keys_are_quoted() {
        assert_eq!(toml_key("tg-1_a"), "tg-1_a");
        assert_eq!(toml_key("a.b"), "\"a.b\"");
        assert_eq!(toml_key(""), "\"\"");
        assert_eq!(toml_key("q\"\\\n"), "\"q\\\"\\\\\\u000A\"");
    }

    #[test]
    fn syntax_field_guess() {
        assert_eq!(field_near("[queue]\ncap = 1\ncap = 2\n", 16), "queue.cap");
        assert_eq!(field_near("[run]\n[run]\n", 7), "run");
        assert_eq!(field_near("a = \n", 4), "a");
        assert_eq!(field_near("garbage", 0), "");
        assert_eq!(field_near("é", 1), "");
    }

    #[test]
    fn line_of_offset() {
        let index = LineIndex::new("a\nb\n\nc");
        let lines: Vec<_> = [0, 1, 2, 4, 5, 99].map(|offset| index.line(offset)).into();
        assert_eq!(lines, [1, 1, 2, 3, 4, 4]);
    }
}
