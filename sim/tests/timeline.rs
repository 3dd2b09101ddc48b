//! The timeline picture: well-formed SVG with one lane per session and key, the restart's
//! bands and deadline, and the violation marked where the lost message was.

use std::collections::BTreeSet;
use std::path::PathBuf;

use quiesce_sim::explore::{self, Problem};
use quiesce_sim::generate::{Generator, Params};
use quiesce_sim::oracle::Violation;
use quiesce_sim::plan::Plan;
use quiesce_sim::scenario::Scenario;
use quiesce_sim::timeline;

fn picture(scenario: &Scenario, plan: Plan) -> String {
    let checked = explore::check(scenario, plan, true);
    let violation: Option<&Violation> = match &checked.problem {
        Some(Problem::Violation(violation)) => Some(violation),
        _ => None,
    };
    timeline::render(scenario, &checked.entries, violation, "test")
}

/// Checks that every tag closes in order and that text holds no stray `<` or `&`: the few
/// rules a hand-written SVG can break. Returns the element names in document order.
fn elements(svg: &str) -> Vec<String> {
    let mut open: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find('<') {
        let text = &rest[..start];
        assert!(text.split('&').skip(1).all(|e| e.contains(';')), "bare & in {text:?}");
        let end = rest[start..].find('>').expect("every tag ends") + start;
        let tag = &rest[start + 1..end];
        assert!(!tag.contains('<'), "a `<` inside the tag {tag:?}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop().as_deref(), Some(name), "tags close in order");
        } else {
            let name: String = tag.chars().take_while(|c| c.is_alphanumeric()).collect();
            names.push(name.clone());
            if !tag.ends_with('/') {
                open.push(name);
            }
        }
        rest = &rest[end + 1..];
    }
    assert!(open.is_empty(), "unclosed: {open:?}");
    names
}

fn count(svg: &str, needle: &str) -> usize {
    svg.matches(needle).count()
}

#[test]
fn shrunk_failure_marks_the_lost_message() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/plan-no-drain.toml");
    let scenario = Scenario::from_file(&path).expect("committed scenarios parse");
    let svg = picture(&scenario, Plan::NoDrain);

    let names = elements(&svg);
    assert_eq!(names.first().map(String::as_str), Some("svg"));
    assert_eq!(count(&svg, "<g class=\"lane session\""), 1);
    assert_eq!(count(&svg, "<g class=\"lane key\""), 1);
    assert_eq!(count(&svg, "<line class=\"violation\""), 1);
    assert_eq!(count(&svg, "<path class=\"lost\""), 1, "a cross where the message was lost");
    assert_eq!(count(&svg, "class=\"span buffer is-lost\""), 1, "its buffer, outlined");
    assert!(svg.contains("vanished from Buffer"), "the reason, in the tooltip and the title");
    assert_eq!(count(&svg, "<rect class=\"band close\""), 1);
    assert_eq!(count(&svg, "<g class=\"mark signal\""), 1);
}

#[test]
fn thirty_second_run_has_a_lane_per_session_and_key() {
    let scenario = Generator::new(&Params::standard()).generate(3);
    let svg = picture(&scenario, Plan::Spec);
    elements(&svg);

    let sessions: BTreeSet<_> = scenario.keys.iter().map(|k| &k.session).collect();
    assert_eq!(count(&svg, "<g class=\"lane session\""), sessions.len());
    assert_eq!(count(&svg, "<g class=\"lane key\""), scenario.keys.len());
    assert!(sessions.len() >= 12, "a busy world: {} sessions", sessions.len());
    assert!(count(&svg, "<rect class=\"run ") > 20);
    assert!(count(&svg, "<rect class=\"band wait\"") >= 1);
    assert!(count(&svg, "<g class=\"mark signal\"") >= 1);
    assert_eq!(count(&svg, "<line class=\"violation\""), 0);
    assert_eq!(count(&svg, "<g class=\"legend\""), 1);
    assert!(count(&svg, "<title>") > 100, "every bar has a tooltip");
}

#[test]
fn a_restart_with_a_deadline_draws_it() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/plan-count-one.toml");
    let scenario = Scenario::from_file(&path).expect("committed scenarios parse");
    let svg = picture(&scenario, Plan::CountOne);
    elements(&svg);
    assert_eq!(count(&svg, "<g class=\"mark deadline\""), 1);
    assert!(svg.contains("warning 1"), "the drain warning, on the restart lane");
    assert!(count(&svg, "class=\"run failure\"") >= 2, "runs with their attempts");
    assert!(svg.contains(">3#2<") || svg.contains(">4#2<"), "a retry's label carries its attempt");
}
