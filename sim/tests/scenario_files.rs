//! Scenario files: a malformed one is an error naming the file, the line and the field.

use std::path::Path;

use quiesce_sim::scenario::{Scenario, ScenarioError};

fn error(text: &str) -> ScenarioError {
    Scenario::from_toml_str(text).expect_err("the scenario is malformed")
}

const KEY: &str = "
[[key]]
name = \"K\"
channel = \"tg\"
session = \"S\"
destination = \"D\"
";

#[test]
fn bad_config_value_names_field_and_line() {
    let e = error(&format!("[config.queue]\ncap = 0\n{KEY}"));
    assert_eq!(e.field.as_deref(), Some("config.queue.cap"));
    assert_eq!(e.line, Some(2));
    assert!(e.reason.contains("at least 1"), "{}", e.reason);
}

#[test]
fn unknown_field_names_field_and_line() {
    let e = error("[[key]]\nname = \"K\"\nchannel = \"tg\"\nsesion = \"S\"\n");
    assert_eq!(e.line, Some(4));
    assert_eq!(e.field.as_deref(), Some("sesion"));
}

#[test]
fn undefined_key_is_named() {
    let e = error(&format!("{KEY}\n[[arrival]]\nat_ms = 0\nkey = \"nope\"\nid = \"1\"\n"));
    assert_eq!(e.field.as_deref(), Some("arrival[0].key"));
    assert!(e.reason.contains("nope"));
}

#[test]
fn bad_reload_config_is_named() {
    let text = format!(
        "{KEY}\n[[signal]]\nat_ms = 0\nkind = \"reload\"\nconfig = {{ run = {{ attempts_max = 0 }} }}\n"
    );
    let e = error(&text);
    assert_eq!(e.field.as_deref(), Some("signal[0].config.run.attempts_max"));
}

#[test]
fn negative_time_is_refused() {
    let e = error(&format!("{KEY}\n[[arrival]]\nat_ms = -5\nkey = \"K\"\nid = \"1\"\n"));
    assert_eq!(e.line, Some(9));
    assert_eq!(e.field.as_deref(), Some("arrival.at_ms"));
}

#[test]
fn missing_file_names_the_file() {
    let e = Scenario::from_file(Path::new("/nonexistent/x.toml")).expect_err("no such file");
    assert_eq!(e.file.as_deref(), Some("/nonexistent/x.toml"));
    assert!(e.to_string().starts_with("/nonexistent/x.toml: "), "{e}");
}

#[test]
fn committed_scenarios_round_trip() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("scenarios/ exists") {
        let path = entry.expect("readable").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let scenario_file = name.starts_with('f') || name.starts_with("plan-");
        if !scenario_file || path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let scenario = Scenario::from_file(&path).expect("committed scenarios parse");
        let again = Scenario::from_toml_str(&scenario.to_toml_string()).expect("round trip parses");
        assert_eq!(again, scenario, "{name}");
        seen += 1;
    }
    assert_eq!(seen, 15, "F1 to F10 and the five historical plans");
}

#[test]
fn outage_ending_before_it_begins_is_refused() {
    let e = error(&format!("{KEY}\n[[outage]]\nfrom_ms = 10\nuntil_ms = 5\n"));
    assert_eq!(e.field.as_deref(), Some("outage[0].until_ms"));
}

#[test]
fn wrong_type_names_the_field() {
    let e = error(&format!("{KEY}\n[[signal]]\nat_ms = 0\nkind = \"reboot\"\n"));
    assert_eq!((e.line, e.field.as_deref()), (Some(10), Some("signal.kind")));
}

#[test]
fn a_key_defined_twice_is_refused() {
    let e = error(&format!("{KEY}{KEY}"));
    assert_eq!(e.field.as_deref(), Some("key[1].name"));
}

#[test]
fn run_zero_is_refused() {
    let e = error(&format!("{KEY}\n[[run]]\nsession = \"S\"\nnth = 0\n"));
    assert_eq!(e.field.as_deref(), Some("run[0].nth"));
}
