//! The command line: exit codes, error messages that name what is wrong, and a replay that
//! prints the same bytes every time.

use std::path::PathBuf;
use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quiesce-sim")).args(args).output().expect("the simulator runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A file under the test's scratch directory holding `text`.
fn file(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).expect("the scratch directory is writable");
    path
}

const KEY: &str = "[[key]]\nname = \"K\"\nchannel = \"tg\"\nsession = \"S\"\ndestination = \"D\"\n";

#[test]
fn malformed_scenario_exits_2_naming_file_line_and_field() {
    let text =
        format!("{KEY}\n[[arrival]]\nat_ms = 0\nkey = \"K\"\nid = \"1\"\ncolour = \"red\"\n");
    let path = file("malformed.toml", &text);
    let output = sim(&["run", path.to_str().expect("a UTF-8 path")]);

    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains(&format!("{}:11", path.display())), "{message}");
    assert!(message.contains("colour"), "{message}");
}

#[test]
fn missing_scenario_exits_2_naming_the_file() {
    let output = sim(&["run", "no/such/scenario.toml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("no/such/scenario.toml"), "{}", stderr(&output));
}

#[test]
fn scenario_file_runs_to_a_verdict() {
    let text = format!("{KEY}\n[[arrival]]\nat_ms = 0\nkey = \"K\"\nid = \"1\"\n");
    let output = sim(&["run", file("one_message.toml", &text).to_str().expect("a UTF-8 path")]);

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stdout = String::from_utf8(output.stdout).expect("the log is text");
    assert!(stdout.contains("outcome message=tg/1 kind=delivered"), "{stdout}");
    assert!(stdout.contains("verdict: every invariant held"), "{stdout}");
}

#[test]
fn unknown_flag_exits_2() {
    let output = sim(&["--frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--frobnicate"), "{}", stderr(&output));
}

#[test]
fn unknown_plan_exits_2() {
    let output = sim(&["explore", "--plan", "hope"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("unknown plan"), "{}", stderr(&output));
}

#[test]
fn bad_shard_exits_2() {
    let output = sim(&["--shard", "4/4"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("shard"), "{}", stderr(&output));
}

#[test]
fn seeds_past_the_largest_exit_2() {
    let output = sim(&["explore", "--start", &u64::MAX.to_string(), "--seeds", "2"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("run past the largest seed"), "{}", stderr(&output));
    let last = sim(&["explore", "--start", &u64::MAX.to_string(), "--seeds", "1"]);
    assert_ne!(last.status.code(), Some(2), "the largest seed itself is fine");
}

#[test]
fn malformed_config_file_exits_2_naming_the_field() {
    let path = file("bad_config.toml", "[queue]\ncap = 0\n");
    let output = sim(&["--seeds", "1", "--config", path.to_str().expect("a UTF-8 path")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("queue.cap"), "{}", stderr(&output));
}

#[test]
fn replay_prints_the_same_bytes_twice() {
    let first = sim(&["replay", "--seed", "3"]);
    let second = sim(&["replay", "--seed", "3"]);

    assert_eq!(first.status.code(), second.status.code());
    assert_eq!(first.stdout, second.stdout);
    let stdout = String::from_utf8(first.stdout).expect("the log is text");
    assert!(stdout.starts_with("SEED=3 PLAN=spec GEN=2\n"), "{stdout}");
    assert!(stdout.contains("verdict: "), "{stdout}");
}

#[test]
fn explore_reports_as_json() {
    let output = sim(&[
        "explore", "--seeds", "6", "--start", "100", "--shard", "1/3", "--jobs", "2", "--json",
    ]);
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object");

    assert_eq!(report["gen"], 2);
    assert_eq!(report["plan"], "spec");
    assert_eq!(report["shard"], "1/3");
    let failed = !report["failure"].is_null();
    assert_eq!(output.status.code(), Some(if failed { 1 } else { 0 }));
    if !failed {
        assert_eq!(report["seeds_run"], 6);
    }
}

#[test]
fn shrink_writes_a_minimal_scenario_and_says_what_it_removed() {
    let output_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("shrunk-no-drain.toml");
    let path = output_path.to_str().expect("a UTF-8 path");
    let output = sim(&["shrink", "--seed", "10", "--plan", "no-drain", "-o", path]);

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stdout = String::from_utf8(output.stdout).expect("the report is text");
    assert!(stdout.contains("before: "), "{stdout}");
    assert!(stdout.contains("after:  1 messages, 1 signals, 1 keys, 1 sessions"), "{stdout}");
    assert!(stdout.contains("removed: "), "{stdout}");
    let rerun = sim(&["run", path, "--plan", "no-drain"]);
    assert_eq!(rerun.status.code(), Some(1), "the minimal scenario still fails");
    assert_eq!(sim(&["run", path]).status.code(), Some(0), "and holds under spec");
}

#[test]
fn shrink_of_a_seed_that_holds_exits_2() {
    let output = sim(&["shrink", "--seed", "3"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("nothing to shrink"), "{}", stderr(&output));
}

#[test]
fn timeline_writes_an_svg() {
    let output_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("timeline.svg");
    let path = output_path.to_str().expect("a UTF-8 path");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/plan-no-drain.toml");
    let output = sim(&["timeline", scenario, "--plan", "no-drain", "-o", path]);

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let svg = std::fs::read_to_string(path).expect("the SVG was written");
    assert!(svg.starts_with("<svg "), "{}", &svg[..svg.len().min(80)]);
    assert!(svg.contains("class=\"violation\""));
}

#[test]
fn find_time_prints_the_table() {
    let output = sim(&["find-time", "--plan", "no-drain", "--starts", "2", "--seeds-max", "50"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stdout = String::from_utf8(output.stdout).expect("the table is text");
    assert!(stdout.contains("| plan | median seeds | max seeds | found | caught by |"), "{stdout}");
    assert!(stdout.contains("| `no-drain` |"), "{stdout}");
}

#[test]
fn zero_seeds_exits_2() {
    let output = sim(&["explore", "--seeds", "0"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn an_unwritable_output_or_an_empty_hunt_exits_2() {
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/plan-no-drain.toml");
    let unwritable = ["-o", "/nonexistent-dir/shrunk.toml"];
    let output = sim(&[&["shrink", scenario, "--plan", "no-drain"][..], &unwritable[..]].concat());
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("/nonexistent-dir/shrunk.toml"), "{}", stderr(&output));

    for empty in [["--starts", "0"], ["--seeds-max", "0"]] {
        let output = sim(&[&["find-time", "--plan", "no-drain"][..], &empty[..]].concat());
        assert_eq!(output.status.code(), Some(2), "{empty:?}: {}", stderr(&output));
    }
}
