//! The one scenario generator: a proptest [`Strategy`] that turns a seed into a [`Scenario`] and
//! shrinks a failing one.
//!
//! A strategy rather than a hand-written random walk, because the same draws then give both the
//! seed's scenario and a shrink path (fewer messages, signals and keys; shorter times) through
//! its value tree, with no second generator to keep in step.
//!
//! Generation has two steps. First the strategy draws plain integers: times as ranges of their
//! own, and one die per item that packs its small decisions (`dice`). Then one pure function
//! (`resolve`) turns the draws into a scenario: it picks the config (`swarm`), sorts and names
//! the arrivals, and aims signals, faults, reconnects, cancels and agent outages at the instants
//! where restarts go wrong (DESIGN "Scenario"): inside a debounce window, at a timer flush,
//! during another restart's wait, at a deadline, in a burst of traffic, while a restart drains.
//!
//! Shrinking drops list items (arrivals, signals, faults) and moves times and dice towards 0,
//! which is the plain case of every decision; the keys a scenario lists are only those its
//! arrivals use, so fewer messages also means fewer keys and sessions.
//!
//! Determinism: integers only, no floating point anywhere, and every draw comes from a ChaCha
//! stream seeded by the seed and [`GENERATOR_VERSION`]. A change that alters what any seed
//! draws (including a proptest upgrade that samples differently) bumps the version.
//!
//! Swarm testing: with `swarm` on, each seed also draws the gateway config and the traffic's
//! shape (burstiness, hot keys, failure and hang rates, signal kinds), so different seeds stress
//! different corners instead of all averaging out to the same mild mix.

use std::path::Path;

use proptest::collection::vec;
use proptest::strategy::{BoxedStrategy, Strategy, ValueTree};
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use serde::{Deserialize, Serialize};

use quiesce::config::Config;

use crate::scenario::{Scenario, ScenarioError};

use self::resolve::{Names, resolve};

mod dice;
mod resolve;
mod swarm;

/// The generator's version: a seed means the same scenario on every machine until it changes.
///
/// Version 2 added agent outages aimed at restarts and closes that take a good part of their
/// budget, so runs fail while a restart drains (`docs/PLANS.md`, the `tight-retry` plan).
pub const GENERATOR_VERSION: u32 = 2;

/// The standard parameters, as committed in `scenarios/standard.toml`.
const STANDARD: &str = include_str!("../../scenarios/standard.toml");

/// The longest span of traffic, in ms: arrival times are sorted packed with their rank.
const SPAN_MS_MAX: u64 = 1_000_000_000;
/// The most keys: a die names a key with 10 bits.
const KEYS_MAX: u32 = 1_024;
/// The most messages a scenario offers: arrival times are sorted packed with their rank.
const MESSAGES_MAX: u32 = 100_000;

/// Scripted admission faults per scenario, at most.
const FAULTS_MAX: usize = 3;
/// Channel reconnects per scenario, at most.
const RECONNECTS_MAX: usize = 3;
/// `cancel_key` calls per scenario, at most.
const CANCELS_MAX: usize = 2;
/// Redelivered duplicates per scenario, at most.
const REDELIVERIES_MAX: usize = 4;
/// Runs with a scripted behaviour per scenario, at most.
const RUN_SPECS_MAX: usize = 12;
/// Scripted close durations per scenario, at most.
const CLOSES_MAX: usize = 3;
/// Scheduled boots per scenario, at most.
const BOOTS_MAX: usize = 2;
/// Agent outages per scenario, at most.
const OUTAGES_MAX: usize = 2;
/// Centres of traffic bursts per scenario, at most.
const CENTRES_MAX: usize = 4;
/// Per-session and per-channel queue overrides, at most each.
const OVERRIDES_MAX: usize = 2;

/// An inclusive range of counts in the parameters file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// The smallest count.
    pub min: u32,
    /// The largest count.
    pub max: u32,
}

/// The generator's parameters: the shape of the world every seed draws from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// How many channels the keys spread over.
    pub channels: u32,
    /// How many keys messages may use.
    pub keys: u32,
    /// How many sessions the keys feed; each session has at least one key.
    pub sessions: u32,
    /// How many messages a scenario offers, redeliveries not counted.
    pub messages: Bounds,
    /// How long the traffic lasts, in virtual ms.
    pub span_ms: u64,
    /// How many signals a scenario sends.
    pub signals: Bounds,
    /// Whether each seed draws its own config and traffic shape (swarm testing).
    pub swarm: bool,
    /// A fixed gateway config: only the traffic and timing are drawn.
    #[serde(default)]
    pub config: Option<Config>,
}

impl Params {
    /// The standard parameters (DESIGN "Scenario"): 3 channels, 24 keys over 16 sessions, 80 to
    /// 120 messages over 30 s, 1 to 3 signals, swarm config.
    pub fn standard() -> Self {
        Self::from_toml_str(STANDARD).expect("scenarios/standard.toml is valid")
    }

    /// Reads parameters from a file.
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        crate::scenario::read_toml_file(path, Self::from_toml_str)
    }

    /// Parses parameters from TOML text and checks that they describe a world.
    pub fn from_toml_str(text: &str) -> Result<Self, ScenarioError> {
        Config::from_toml_section(text, "config").map_err(crate::scenario::config_error)?;
        let params: Params =
            toml::from_str(text).map_err(|e| crate::scenario::toml_error(text, &e))?;
        params.validate()?;
        Ok(params)
    }

    /// The same parameters with the config fixed to `config`.
    pub fn with_config(self, config: Config) -> Self {
        Self { config: Some(config), ..self }
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |field: &str, reason: &str| ScenarioError {
            file: None,
            line: None,
            field: Some(field.to_owned()),
            reason: reason.to_owned(),
        };
        if self.channels == 0 {
            return Err(bad("channels", "must be at least 1"));
        }
        if self.keys == 0 || self.keys > KEYS_MAX {
            return Err(bad("keys", "must be between 1 and 1,024"));
        }
        if self.sessions == 0 || self.sessions > self.keys {
            return Err(bad("sessions", "must be between 1 and `keys`"));
        }
        if self.messages.min > self.messages.max {
            return Err(bad("messages", "`min` must not exceed `max`"));
        }
        if self.signals.min > self.signals.max {
            return Err(bad("signals", "`min` must not exceed `max`"));
        }
        if self.span_ms == 0 || self.span_ms > SPAN_MS_MAX {
            return Err(bad("span_ms", "must be between 1 and 1,000,000,000 (about 11 days)"));
        }
        if self.messages.max > MESSAGES_MAX {
            return Err(bad("messages", "`max` must be at most 100,000"));
        }
        Ok(())
    }
}

/// A generator built once for a set of parameters and used for many seeds.
pub struct Generator {
    strategy: BoxedStrategy<Scenario>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator").finish_non_exhaustive()
    }
}

impl Generator {
    /// A generator for `params`.
    pub fn new(params: &Params) -> Self {
        Self { strategy: scenario_strategy(params).boxed() }
    }

    /// The scenario of `seed`.
    pub fn generate(&self, seed: u64) -> Scenario {
        self.value_tree(seed).current()
    }

    /// The value tree of `seed`: `current()` is its scenario, `simplify()` shrinks it.
    pub fn value_tree(&self, seed: u64) -> impl ValueTree<Value = Scenario> + use<> {
        let mut runner = seeded_runner(seed);
        self.strategy.new_tree(&mut runner).expect("the scenario strategy never rejects")
    }
}

/// The scenario of `seed` under `params`.
pub fn generate(seed: u64, params: &Params) -> Scenario {
    Generator::new(params).generate(seed)
}

/// The value tree of `seed` under `params`, for shrinking.
pub fn value_tree(seed: u64, params: &Params) -> impl ValueTree<Value = Scenario> + use<> {
    Generator::new(params).value_tree(seed)
}

/// A test runner whose random stream depends on the seed and the generator version only.
fn seeded_runner(seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..12].copy_from_slice(&GENERATOR_VERSION.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    TestRunner::new_with_rng(proptest::test_runner::Config::default(), rng)
}

/// The one generator: every scenario the simulation explores comes from here.
///
/// The strategy draws plain numbers (times, and dice that pack an item's small decisions);
/// [`resolve`] turns them into the scenario. Times are drawn as ranges of their own, so
/// shrinking moves them towards 0.
pub fn scenario_strategy(params: &Params) -> impl Strategy<Value = Scenario> + use<> {
    let names = Names::new(params);
    let params = params.clone();
    let die = proptest::num::u64::ANY;
    let span_ms = 0..params.span_ms;
    let messages = params.messages.min as usize..=params.messages.max as usize;
    let signals = params.signals.min as usize..=params.signals.max as usize;
    let traffic = (
        proptest::array::uniform5(die),
        proptest::array::uniform5(die),
        vec(span_ms.clone(), 1..=CENTRES_MAX),
        vec(die, (params.keys as usize).div_ceil(32)),
        vec((span_ms.clone(), die), messages),
        vec((span_ms, die, die), signals),
    );
    let world = (
        vec(die, params.channels as usize),
        vec((die, die), 0..=OVERRIDES_MAX),
        vec((die, die), 0..=OVERRIDES_MAX),
        vec(die, 0..=REDELIVERIES_MAX),
        vec(die, 0..=RUN_SPECS_MAX),
    );
    let scripts = (
        vec(die, 0..=FAULTS_MAX),
        vec(die, 0..=RECONNECTS_MAX),
        vec(die, 0..=CANCELS_MAX),
        vec(die, 0..=CLOSES_MAX),
        vec(die, 0..=BOOTS_MAX),
        vec(die, 0..=OUTAGES_MAX),
    );
    (traffic, world, scripts).prop_map(move |raw| resolve(&names, &params, raw))
}
