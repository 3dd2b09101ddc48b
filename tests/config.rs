//! The config file: defaults, precedence, every rejected case with its field, reason and line,
//! and the round trip through `to_toml_string`.

use std::path::Path;

use quiesce::config::{
    ChannelInbound, Config, ConfigError, DropPolicy, QueueMode, QueueOverride, QueueSettings,
    Reason,
};
use quiesce::message::{ChannelId, SessionId};

/// A document that sets every field and both kinds of override.
const FULL: &str = r#"
close_budget_ms = 0
intake_max = 500

[inbound]
window_ms = 200
keys_max = 64

[inbound.channels.telegram]
window_ms = 1500

[inbound.channels.slack]

[queue]
mode = "followup"
cap = 30
drop = "new"
quiet_ms = 250

[queue.channels.telegram]
cap = 10
drop = "old"

[queue.sessions.s1]
mode = "collect"
quiet_ms = 0

[run]
timeout_ms = 60000
attempts_max = 3

[reload]
allow_external = false
deadline_ms = 45000

[stop]
deadline_ms = 10000
"#;

fn read(text: &str) -> Config {
    match Config::from_toml_str(text) {
        Ok(config) => config,
        Err(error) => panic!("config refused: {error}\n{text}"),
    }
}

/// Checks that `text` is refused for `field`, with `reason` as the message gives it, at `line`.
fn rejects(text: &str, field: &str, reason: &str, line: usize) {
    let error = match Config::from_toml_str(text) {
        Ok(config) => panic!("config accepted: {config:?}\n{text}"),
        Err(error) => error,
    };
    assert_eq!(
        (error.field(), error.reason().to_string().as_str(), error.line()),
        (field, reason, Some(line)),
        "{text}"
    );
}

fn settings(config: &Config, session: &str, channel: &str) -> QueueSettings {
    config.queue_settings(&SessionId::from(session), &ChannelId::from(channel))
}

#[test]
fn empty_document_gives_defaults() {
    assert_eq!(read(""), Config::default());
    assert_eq!(read("# nothing set\n\n"), Config::default());
}

#[test]
fn defaults_follow_spec() {
    let config = Config::default();
    assert_eq!(config.inbound.window_ms, 0);
    assert_eq!(config.inbound.keys_max, 2_048);
    assert_eq!(config.queue.mode, QueueMode::Collect);
    assert_eq!(config.queue.cap, 20);
    assert_eq!(config.queue.drop, DropPolicy::Summarize);
    assert_eq!(config.queue.quiet_ms, 500);
    assert_eq!(config.run.timeout_ms, 600_000);
    assert_eq!(config.run.attempts_max, 5);
    assert!(config.reload.allow_external);
    assert_eq!(config.reload.deadline_ms, 90_000);
    assert_eq!(config.stop.deadline_ms, 25_000);
    assert_eq!(config.close_budget_ms, 5_000);
    assert_eq!(config.intake_max, 10_000);
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn full_document_sets_every_field() {
    let config = read(FULL);
    assert_eq!((config.close_budget_ms, config.intake_max), (0, 500));
    assert_eq!((config.inbound.window_ms, config.inbound.keys_max), (200, 64));
    assert_eq!(config.queue.mode, QueueMode::Followup);
    assert_eq!((config.queue.cap, config.queue.drop), (30, DropPolicy::New));
    assert_eq!(config.queue.quiet_ms, 250);
    assert_eq!((config.run.timeout_ms, config.run.attempts_max), (60_000, 3));
    assert_eq!((config.reload.allow_external, config.reload.deadline_ms), (false, 45_000));
    assert_eq!(config.stop.deadline_ms, 10_000);
    let slack = config.inbound.channels.get(&ChannelId::from("slack"));
    assert_eq!(slack, Some(&ChannelInbound { window_ms: None }));
}

#[test]
fn channel_window_over_global() {
    let config = read(FULL);
    assert_eq!(config.window_ms(&ChannelId::from("telegram")), 1_500);
    assert_eq!(config.window_ms(&ChannelId::from("slack")), 200);
    assert_eq!(config.window_ms(&ChannelId::from("unlisted")), 200);
}

#[test]
fn session_over_channel_over_global() {
    let config = read(FULL);
    let both = settings(&config, "s1", "telegram");
    let expected =
        QueueSettings { mode: QueueMode::Collect, cap: 10, drop: DropPolicy::Old, quiet_ms: 0 };
    assert_eq!(both, expected);

    let channel_only = settings(&config, "s2", "telegram");
    let expected =
        QueueSettings { mode: QueueMode::Followup, cap: 10, drop: DropPolicy::Old, quiet_ms: 250 };
    assert_eq!(channel_only, expected);

    let global = settings(&config, "s2", "slack");
    let expected =
        QueueSettings { mode: QueueMode::Followup, cap: 30, drop: DropPolicy::New, quiet_ms: 250 };
    assert_eq!(global, expected);
}

#[test]
fn zero_where_zero_means_no_wait() {
    let text = "close_budget_ms = 0\n\
                [inbound]\nwindow_ms = 0\n\
                [inbound.channels.a]\nwindow_ms = 0\n\
                [queue]\nquiet_ms = 0\n\
                [queue.sessions.s]\nquiet_ms = 0\n";
    let config = read(text);
    assert_eq!(config.close_budget_ms, 0);
    assert_eq!(config.queue.quiet_ms, 0);
}

#[test]
fn zero_refused_where_meaningless() {
    let must = "must be at least 1";
    rejects("[queue]\ncap = 0", "queue.cap", must, 2);
    rejects("[queue.channels.tg]\ncap = 0", "queue.channels.tg.cap", must, 2);
    rejects("[queue.sessions.s1]\n\ncap = 0", "queue.sessions.s1.cap", must, 3);
    rejects("[run]\nattempts_max = 0", "run.attempts_max", must, 2);
    rejects("[run]\ntimeout_ms = 0", "run.timeout_ms", must, 2);
    rejects("[reload]\ndeadline_ms = 0", "reload.deadline_ms", must, 2);
    rejects("[stop]\ndeadline_ms = 0", "stop.deadline_ms", must, 2);
    rejects("intake_max = 0", "intake_max", must, 1);
    rejects("[inbound]\nkeys_max = 0", "inbound.keys_max", must, 2);
}

#[test]
fn negative_refused() {
    let never = "must not be negative";
    rejects("[queue.sessions.s1]\nquiet_ms = -1", "queue.sessions.s1.quiet_ms", never, 2);
    rejects(
        "[inbound.channels.telegram]\nwindow_ms = -5",
        "inbound.channels.telegram.window_ms",
        never,
        2,
    );
    rejects("close_budget_ms = -99999999999999999999999", "close_budget_ms", never, 1);
    rejects("[inbound]\nwindow_ms = -1", "inbound.window_ms", never, 2);
}

#[test]
fn negative_zero_is_zero() {
    assert_eq!(read("[inbound]\nwindow_ms = -0").inbound.window_ms, 0);
}

#[test]
fn integer_forms_accepted() {
    let config = read("intake_max = +1_000\n[queue]\ncap = 0x10\nquiet_ms = 0o17\n");
    assert_eq!((config.intake_max, config.queue.cap, config.queue.quiet_ms), (1_000, 16, 15));
}

#[test]
fn bounds_accepted_at_limit() {
    let text = "close_budget_ms = 86400000\nintake_max = 10000000\n[run]\nattempts_max = 100\n\
                timeout_ms = 86400000\n";
    assert_eq!(read(text).run.attempts_max, 100);
}

#[test]
fn too_large_refused() {
    let day = "must be at most 86400000";
    rejects("[inbound]\nwindow_ms = 86400001", "inbound.window_ms", day, 2);
    rejects("close_budget_ms = 99999999999999999999999", "close_budget_ms", day, 1);
    rejects("[run]\ntimeout_ms = 9223372036854775807", "run.timeout_ms", day, 2);
    rejects("[run]\nattempts_max = 5000000000", "run.attempts_max", "must be at most 100", 2);
    let count = "must be at most 10000000";
    rejects("intake_max = 18446744073709551616", "intake_max", count, 1);
    rejects("[queue.channels.x]\ncap = 10000001", "queue.channels.x.cap", count, 2);
}

#[test]
fn unknown_field_refused() {
    let unknown = "unknown field";
    rejects("colour = 1", "colour", unknown, 1);
    rejects("[queue]\ncap = 1\ncapacity = 2", "queue.capacity", unknown, 3);
    rejects("[queue.sessions.s1]\nwindow_ms = 2", "queue.sessions.s1.window_ms", unknown, 2);
    rejects("[inbound.channels.tg]\ncap = 2", "inbound.channels.tg.cap", unknown, 2);
    rejects("\n[metrics]\nport = 9", "metrics", unknown, 2);
    rejects("[run.extra]", "run.extra", unknown, 1);
}

#[test]
fn unknown_enum_value_refused() {
    let modes = "expected one of collect, followup";
    rejects("[queue]\nmode = \"fast\"", "queue.mode", modes, 2);
    rejects("[queue]\nmode = \"Collect\"", "queue.mode", modes, 2);
    rejects("[queue.sessions.s]\nmode = 1", "queue.sessions.s.mode", modes, 2);
    let drops = "expected one of new, old, summarize";
    rejects("[queue.channels.c]\ndrop = \"all\"", "queue.channels.c.drop", drops, 2);
}

#[test]
fn wrong_type_refused() {
    rejects("[queue]\ncap = \"20\"", "queue.cap", "expected an integer, found a string", 2);
    rejects("[queue]\ncap = 2.5", "queue.cap", "expected an integer, found a float", 2);
    rejects("[queue]\ncap = 2.0", "queue.cap", "expected an integer, found a float", 2);
    rejects("intake_max = true", "intake_max", "expected an integer, found a boolean", 1);
    rejects("intake_max = [1]", "intake_max", "expected an integer, found an array", 1);
    rejects("intake_max = 1979-05-27", "intake_max", "expected an integer, found a datetime", 1);
    let boolean = "expected a boolean, found a string";
    rejects("[reload]\nallow_external = \"yes\"", "reload.allow_external", boolean, 2);
}

#[test]
fn table_expected_refused() {
    rejects("queue = 5", "queue", "expected a table, found an integer", 1);
    rejects("[[queue]]\ncap = 1", "queue", "expected a table, found an array", 1);
    let entry = "expected a table, found an integer";
    rejects("[queue.sessions]\ns1 = 3", "queue.sessions.s1", entry, 2);
    rejects("[inbound]\nchannels = 3", "inbound.channels", entry, 2);
}

#[test]
fn inline_tables_accepted() {
    let config = read("queue = { cap = 7, sessions = { s1 = { cap = 3 } } }");
    assert_eq!(settings(&config, "s1", "c").cap, 3);
    assert_eq!(settings(&config, "s2", "c").cap, 7);
}

#[test]
fn duplicate_key_refused() {
    let error = Config::from_toml_str("[queue]\ncap = 1\ncap = 2\n").err();
    let error = error.as_ref().map(|e| (e.field(), e.line(), e.reason()));
    let reason = Reason::Syntax("duplicate key".to_string());
    assert_eq!(error, Some(("queue.cap", Some(3), &reason)));
}

#[test]
fn duplicate_table_refused() {
    let error = Config::from_toml_str("[run]\n[stop]\n[run]\n").err();
    assert_eq!(error.as_ref().map(|e| (e.field(), e.line())), Some(("run", Some(3))));
}

#[test]
fn invalid_toml_refused() {
    let error = Config::from_toml_str("[queue]\ncap = \n").err();
    let error =
        error.as_ref().map(|e| (e.field(), e.line(), matches!(e.reason(), Reason::Syntax(_))));
    assert_eq!(error, Some(("queue.cap", Some(2), true)));
}

#[test]
fn quoted_names_in_paths() {
    rejects(
        "[queue.sessions.\"a.b\"]\ncap = 0",
        "queue.sessions.\"a.b\".cap",
        "must be at least 1",
        2,
    );
}

#[test]
fn odd_inputs_never_panic() {
    let inputs = [
        "\u{0}",
        "[",
        "]]]",
        "=",
        "a.b.c.d.e = 1",
        "[queue.sessions.\"\"]\ncap = 1",
        "queue.sessions = []",
        "queue = { sessions = { s = [] } }",
        "inbound.channels.\"\u{1F600}\".window_ms = 1",
        "x = \"unterminated",
        "cap = 1\r\n[queue]\r\ncap = 0\r\n",
        "\u{FEFF}intake_max = 1",
        "[queue]\nmode = \"\"",
        "[queue]\nmode = { a = 1 }",
        "intake_max = nan",
        "intake_max = -inf",
        "intake_max = 0b",
        "é = 1",
    ];
    for input in inputs {
        let _ = Config::from_toml_str(input);
    }
}

#[test]
fn mutated_documents_never_panic() {
    let bytes = FULL.as_bytes();
    let replacements = [b'-', b'"', b'[', b'=', b'\n', b'9', b'.'];
    for at in 0..bytes.len() {
        for replacement in replacements {
            let mut mutated = bytes.to_vec();
            mutated[at] = replacement;
            let _ = Config::from_toml_str(&String::from_utf8_lossy(&mutated));
        }
        let _ = Config::from_toml_str(&String::from_utf8_lossy(&bytes[..at]));
    }
}

#[test]
fn round_trip_full() {
    let config = read(FULL);
    assert_eq!(read(&config.to_toml_string()), config);
}

#[test]
fn round_trip_defaults() {
    let config = Config::default();
    assert_eq!(read(&config.to_toml_string()), config);
}

#[test]
fn round_trip_odd_names() {
    let mut config = Config::default();
    for name in ["a.b", "", "quote\"back\\slash", "tab\tnew\nline", "\u{1F600} x", "del\u{7F}"] {
        let channel = ChannelId::from(name);
        let window = ChannelInbound { window_ms: Some(3) };
        config.inbound.channels.insert(channel.clone(), window);
        config.queue.channels.insert(channel, QueueOverride::default());
        let layer = QueueOverride { cap: Some(2), ..QueueOverride::default() };
        config.queue.sessions.insert(SessionId::from(name), layer);
    }
    assert_eq!(read(&config.to_toml_string()), config);
}

#[test]
fn out_of_bounds_written_then_refused() {
    let mut config = Config::default();
    config.queue.sessions.insert(
        SessionId::from("s"),
        QueueOverride { quiet_ms: Some(u64::MAX), ..QueueOverride::default() },
    );
    let text = config.to_toml_string();
    let error = Config::from_toml_str(&text).err();
    assert_eq!(error.as_ref().map(ConfigError::field), Some("queue.sessions.s.quiet_ms"));
}

#[test]
fn validate_checks_built_config() {
    let mut config = Config::default();
    config.queue.channels.insert(
        ChannelId::from("tg"),
        QueueOverride { cap: Some(0), mode: Some(QueueMode::Followup), ..QueueOverride::default() },
    );
    let error = config.validate().err();
    let error = error.as_ref().map(|e| (e.field(), e.reason().to_string(), e.line()));
    assert_eq!(error, Some(("queue.channels.tg.cap", "must be at least 1".to_string(), None)));
}

#[test]
fn section_of_larger_document() {
    let text = "name = \"r4\"\nseed = 7\n\n[config.queue]\ncap = 5\n";
    let config = Config::from_toml_section(text, "config").ok();
    assert_eq!(config.map(|c| c.queue.cap), Some(5));
    let missing = Config::from_toml_section("name = \"r4\"", "config").ok();
    assert_eq!(missing, Some(Config::default()));
}

#[test]
fn section_errors_named_from_root() {
    let text = "name = \"r4\"\n\n[config.queue.sessions.s1]\ncap = 0\n";
    let error = Config::from_toml_section(text, "config").err();
    let error = error.as_ref().map(|e| (e.field(), e.line()));
    assert_eq!(error, Some(("config.queue.sessions.s1.cap", Some(4))));

    let error = Config::from_toml_section("config = 1", "config").err();
    assert_eq!(error.as_ref().map(ConfigError::field), Some("config"));
    let error = Config::from_toml_section("[config]\nbogus = 1", "config").err();
    assert_eq!(error.as_ref().map(ConfigError::field), Some("config.bogus"));
}

#[test]
fn file_errors_name_the_file() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("quiesce.toml");
    std::fs::write(&path, "[queue]\n\ncap = 0\n")?;
    let error = Config::from_file(&path).err().map(|e| e.to_string());
    assert_eq!(error, Some(format!("{}:3: queue.cap: must be at least 1", path.display())));
    Ok(())
}

#[test]
fn file_read_and_validated() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("quiesce.toml");
    std::fs::write(&path, FULL)?;
    assert_eq!(Config::from_file(&path).ok(), Some(read(FULL)));
    Ok(())
}

#[test]
fn missing_file_unreadable() {
    let path = Path::new("/nonexistent/quiesce.toml");
    let error = Config::from_file(path).err();
    assert_eq!(error.as_ref().and_then(ConfigError::file), Some(path));
    let unreadable = error.as_ref().map(|e| matches!(e.reason(), Reason::Unreadable(_)));
    assert_eq!(unreadable, Some(true));
}

#[test]
fn display_reads_like_compiler() {
    let error = ConfigError::new("queue.cap", Reason::TooSmall { min: 1 });
    assert_eq!(error.to_string(), "queue.cap: must be at least 1");
    assert_eq!(error.clone().at_line(4).to_string(), "line 4: queue.cap: must be at least 1");
    let in_file = error.in_file(Path::new("s.toml"));
    assert_eq!(in_file.to_string(), "s.toml: queue.cap: must be at least 1");
    let syntax = ConfigError::new("", Reason::Syntax("duplicate key".into())).at_line(2);
    assert_eq!(syntax.to_string(), "line 2: invalid TOML: duplicate key");
}

#[test]
fn doc_example_reads() {
    let doc = include_str!("../docs/CONFIG.md");
    let example = doc.split("```toml\n").nth(1).and_then(|rest| rest.split("```").next());
    let config = read(example.unwrap_or_default());
    let ops = settings(&config, "ops", "telegram");
    let expected =
        QueueSettings { mode: QueueMode::Followup, cap: 5, drop: DropPolicy::Old, quiet_ms: 0 };
    assert_eq!(ops, expected);
    let other = settings(&config, "s2", "telegram");
    let expected =
        QueueSettings { mode: QueueMode::Collect, cap: 10, drop: DropPolicy::Old, quiet_ms: 250 };
    assert_eq!(other, expected);
}
