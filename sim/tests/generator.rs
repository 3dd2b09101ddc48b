//! The generator: a seed names one scenario, a fixed config is kept, every scenario reads back
//! from its TOML, and shrinking walks down to the smallest world the parameters allow.

use std::collections::BTreeSet;

use proptest::strategy::ValueTree;

use quiesce::config::{Config, QueueMode};
use quiesce_sim::generate::{GENERATOR_VERSION, Generator, Params, generate, value_tree};
use quiesce_sim::scenario::Scenario;

/// The distinct message ids: redeliveries repeat one.
fn ids(scenario: &Scenario) -> BTreeSet<&str> {
    scenario.arrivals.iter().map(|a| a.id.as_str()).collect()
}

#[test]
fn same_seed_gives_same_scenario() {
    let params = Params::standard();
    for seed in [0, 1, 42, u64::MAX] {
        assert_eq!(generate(seed, &params), generate(seed, &params), "seed {seed}");
    }
}

#[test]
fn one_generator_matches_a_fresh_one() {
    let params = Params::standard();
    let generator = Generator::new(&params);
    for seed in 0..5 {
        assert_eq!(generator.generate(seed), generate(seed, &params), "seed {seed}");
    }
}

#[test]
fn different_seeds_differ() {
    let generator = Generator::new(&Params::standard());
    let scenarios: Vec<Scenario> = (0..20).map(|seed| generator.generate(seed)).collect();
    for (n, a) in scenarios.iter().enumerate() {
        for b in &scenarios[n + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn standard_params_are_the_designed_world() {
    let params = Params::standard();
    assert_eq!((params.channels, params.keys, params.sessions), (3, 24, 16));
    assert_eq!((params.messages.min, params.messages.max), (80, 120));
    assert_eq!((params.signals.min, params.signals.max), (1, 3));
    assert_eq!(params.span_ms, 30_000);
    assert!(params.swarm);
    assert_eq!(params.config, None);
    assert_eq!(GENERATOR_VERSION, 2);
}

#[test]
fn scenarios_stay_inside_the_params() {
    let generator = Generator::new(&Params::standard());
    for seed in 0..50 {
        let scenario = generator.generate(seed);
        let messages = ids(&scenario).len();
        assert!((80..=120).contains(&messages), "seed {seed}: {messages} messages");
        assert!((1..=3).contains(&scenario.signals.len()), "seed {seed}");
        assert!(scenario.keys.len() <= 24, "seed {seed}");
        let sessions: BTreeSet<_> = scenario.keys.iter().map(|k| &k.session).collect();
        assert!(sessions.len() <= 16, "seed {seed}");
        assert!(scenario.arrivals.windows(2).all(|w| w[0].at_ms <= w[1].at_ms), "seed {seed}");
    }
}

#[test]
fn fixed_config_is_kept() {
    let mut config = Config::default();
    config.queue.mode = QueueMode::Followup;
    config.queue.cap = 3;
    config.inbound.window_ms = 250;
    let generator = Generator::new(&Params::standard().with_config(config.clone()));
    for seed in 0..20 {
        let scenario = generator.generate(seed);
        assert_eq!(scenario.config, config, "seed {seed}");
        assert!(scenario.signals.iter().all(|s| s.config.is_none()), "seed {seed}");
    }
}

#[test]
fn swarm_draws_different_configs() {
    let generator = Generator::new(&Params::standard());
    let configs: Vec<Config> = (0..20).map(|seed| generator.generate(seed).config).collect();
    assert!(configs.iter().any(|c| *c != configs[0]));
}

#[test]
fn scenarios_round_trip_through_toml() {
    let generator = Generator::new(&Params::standard());
    for seed in 0..50 {
        let scenario = generator.generate(seed);
        let text = scenario.to_toml_string();
        let back = Scenario::from_toml_str(&text).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(back, scenario, "seed {seed}");
    }
}

#[test]
fn params_read_back_from_toml() {
    let text = "channels = 1\nkeys = 2\nsessions = 1\nspan_ms = 100\nswarm = false\n\
                messages = { min = 3, max = 3 }\nsignals = { min = 0, max = 0 }\n";
    let params = Params::from_toml_str(text).expect("valid params");
    let scenario = generate(9, &params);
    assert_eq!(ids(&scenario).len(), 3);
    assert!(scenario.signals.is_empty());
    assert_eq!(scenario.config, Config::default());
}

#[test]
fn bad_params_name_the_field() {
    let text = "channels = 0\nkeys = 2\nsessions = 1\nspan_ms = 100\nswarm = false\n\
                messages = { min = 3, max = 3 }\nsignals = { min = 0, max = 0 }\n";
    let error = Params::from_toml_str(text).expect_err("no channels");
    assert_eq!(error.field.as_deref(), Some("channels"));
}

#[test]
fn shrinking_reaches_the_smallest_world() {
    let mut tree = value_tree(11, &Params::standard());
    let mut steps = 0;
    while tree.simplify() {
        steps += 1;
        assert!(steps < 100_000, "shrinking does not end");
    }
    let smallest = tree.current();
    assert_eq!(smallest.arrivals.len(), 80);
    assert_eq!(smallest.signals.len(), 1);
    assert!(smallest.faults.is_empty() && smallest.runs.is_empty() && smallest.cancels.is_empty());
    assert!(smallest.arrivals.iter().all(|a| a.at_ms == 0));
    Scenario::from_toml_str(&smallest.to_toml_string()).expect("a shrunk scenario is valid");
}
