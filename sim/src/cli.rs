//! The command line of `quiesce-sim`: `explore` (the default), `replay --seed N`, `run FILE`,
//! and for reading a failure `shrink`, `timeline` and `find-time` (in `plans`).
//!
//! It parses arguments, runs the library, prints for humans or as JSON, and maps the result to
//! the exit code: 0 every invariant held, 1 an invariant failed, 2 bad input (an unknown flag, a
//! bad value, an unreadable or malformed file). A failure's first two lines are the seed and the
//! exact command that replays it, so a CI log cut short still says how to reproduce it.
//!
//! This is the one place that reads the wall clock, to report throughput; nothing it measures
//! feeds back into a simulated run.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use quiesce_sim::explore::{self, Checked, Exploration, Failure, Plan, Problem, Shard, Summary};
use quiesce_sim::generate::{GENERATOR_VERSION, Generator, Params};
use quiesce_sim::log;
use quiesce_sim::oracle::Coverage;
use quiesce_sim::scenario::{Scenario, ScenarioError};

use self::plans::{FindTimeArgs, ShrinkArgs, TimelineArgs};
use self::stopwatch::Stopwatch;

mod plans;

/// Seeds `explore` runs by default: a few seconds on two cores in release, far under a minute
/// even with a slower oracle.
const DEFAULT_SEEDS: u64 = 20_000;

/// How many trailing log lines a failure prints; the whole log goes to a file.
const TAIL_LINES: usize = 20;

/// Deterministic simulation of the quiesce gateway core.
#[derive(Debug, Parser)]
#[command(name = "quiesce-sim", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    explore: ExploreArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run many seeds and report the lowest failing one (the default).
    Explore(ExploreArgs),
    /// Run one seed: its event log and verdict.
    Replay(ReplayArgs),
    /// Run one scenario file: its event log and verdict.
    Run(RunArgs),
    /// Reduce a failing seed or scenario file to a minimal scenario failing the same invariant.
    Shrink(ShrinkArgs),
    /// Draw a seed's or a scenario file's run as an SVG timeline.
    Timeline(TimelineArgs),
    /// For each historical plan, how many seeds it takes to catch it, from spread-out starts.
    FindTime(FindTimeArgs),
}

#[derive(Debug, Args)]
struct ExploreArgs {
    /// How many seeds to run (of this shard); at least 1, so a pass always means something.
    #[arg(long, default_value_t = DEFAULT_SEEDS, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// How many threads run seeds; defaults to the available cores.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    jobs: Option<u32>,
    /// Run only the seeds with `seed % n == i`, written `i/n`.
    #[arg(long, default_value = "0/1", value_name = "I/N")]
    shard: Shard,
    /// Fix the gateway config to this file's; only traffic and timing are drawn.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The restart plan the core runs under.
    #[arg(long, default_value = "spec", value_name = "NAME")]
    plan: Plan,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// The seed to replay.
    #[arg(long)]
    seed: u64,
    /// The config file the seed was explored with, if any.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The restart plan the seed was explored with.
    #[arg(long, default_value = "spec", value_name = "NAME")]
    plan: Plan,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The scenario file (format: docs/SCENARIO.md).
    file: PathBuf,
    /// The restart plan the core runs under.
    #[arg(long, default_value = "spec", value_name = "NAME")]
    plan: Plan,
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    let result = match cli.command {
        None => explore_command(&cli.explore),
        Some(Command::Explore(args)) => explore_command(&args),
        Some(Command::Replay(args)) => replay_command(&args),
        Some(Command::Run(args)) => run_command(&args),
        Some(Command::Shrink(args)) => plans::shrink_command(&args),
        Some(Command::Timeline(args)) => plans::timeline_command(&args),
        Some(Command::FindTime(args)) => plans::find_time_command(&args),
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error}");
        ExitCode::from(2)
    })
}

/// Exit code 0 or 1 for a verdict.
fn verdict_code(held: bool) -> ExitCode {
    if held { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The generator's parameters: the standard ones, with the config fixed if a file is given.
fn params(config: Option<&Path>) -> Result<Params, ScenarioError> {
    let params = Params::standard();
    let Some(path) = config else { return Ok(params) };
    Ok(params.with_config(Scenario::config_from_file(path)?))
}

fn explore_command(args: &ExploreArgs) -> Result<ExitCode, ScenarioError> {
    let jobs = args.jobs.map_or_else(default_jobs, |jobs| jobs as usize);
    let params = params(args.config.as_deref())?;
    let exploration = Exploration {
        params,
        plan: args.plan,
        start: args.start,
        seeds: args.seeds,
        shard: args.shard,
        jobs,
    };
    if exploration.seed(exploration.seeds - 1).is_none() {
        eprintln!(
            "error: {} seeds of shard {} from --start {} run past the largest seed, {}",
            args.seeds,
            args.shard,
            args.start,
            u64::MAX
        );
        return Ok(ExitCode::from(2));
    }

    let stopwatch = Stopwatch::start();
    let summary = explore_with_progress(&exploration);
    let elapsed = stopwatch.elapsed();

    let failure = summary
        .first_failure()
        .map(|f| FailureReport::new(&exploration, f, args.config.as_deref()));
    let run = Explored {
        exploration: &exploration,
        summary: &summary,
        elapsed,
        failure: failure.as_ref(),
    };
    if args.json {
        println!("{}", run.json());
    } else {
        run.print();
    }
    Ok(verdict_code(failure.is_none()))
}

fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Runs the exploration; on a terminal, draws a progress bar on stderr meanwhile.
fn explore_with_progress(exploration: &Exploration) -> Summary {
    let done = AtomicU64::new(0);
    if !std::io::stderr().is_terminal() {
        return explore::explore(exploration, &done);
    }
    let watcher = std::thread::current();
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let summary = explore::explore(exploration, &done);
            watcher.unpark();
            summary
        });
        while !worker.is_finished() {
            draw_progress(done.load(Ordering::Relaxed), exploration.seeds);
            std::thread::park_timeout(Duration::from_millis(100));
        }
        eprint!("\r\x1b[2K");
        worker.join().expect("the exploration thread panicked")
    })
}

fn draw_progress(done: u64, total: u64) {
    const WIDTH: u64 = 40;
    let filled = done.saturating_mul(WIDTH).checked_div(total).unwrap_or(WIDTH).min(WIDTH) as usize;
    let bar = format!("{}{}", "#".repeat(filled), ".".repeat(WIDTH as usize - filled));
    eprint!("\r[{bar}] {done}/{total} seeds");
}

/// A failing seed, replayed with recording on, and where its log went.
struct FailureReport {
    failure: Failure,
    plan: Plan,
    replay: String,
    log_tail: Vec<String>,
    log_lines: usize,
    log_file: Option<PathBuf>,
    scenario_file: Option<PathBuf>,
    /// Whether the recorded replay went wrong the same way.
    replay_matches: bool,
}

impl FailureReport {
    fn new(exploration: &Exploration, failure: &Failure, config: Option<&Path>) -> Self {
        let generator = Generator::new(&exploration.params);
        let scenario = generator.generate(failure.seed);
        let replay = explore::check(&scenario, exploration.plan, true);
        let replay_matches = replay.problem.as_ref() == Some(&failure.problem);

        let log = log::render(&replay.entries);
        let lines: Vec<&str> = log.lines().collect();
        let log_tail = lines[lines.len().saturating_sub(TAIL_LINES)..]
            .iter()
            .map(|l| (*l).to_owned())
            .collect();
        let name = format!("seed-{}", failure.seed);
        Self {
            failure: failure.clone(),
            plan: exploration.plan,
            replay: replay_command_line(failure.seed, exploration.plan, config),
            log_tail,
            log_lines: lines.len(),
            log_file: save(&format!("{name}.log"), &log),
            scenario_file: save(&format!("{name}.toml"), &scenario.to_toml_string()),
            replay_matches,
        }
    }

    fn print(&self) {
        println!("SEED={} PLAN={} GEN={GENERATOR_VERSION}", self.failure.seed, self.plan.name());
        println!("{}", self.replay);
        println!("{}", self.failure.problem);
        if !self.replay_matches {
            println!("warning: the recorded replay went otherwise; the run is not deterministic");
        }
        println!("last {} of {} log lines:", self.log_tail.len(), self.log_lines);
        self.log_tail.iter().for_each(|line| println!("{line}"));
        print_path("full log", self.log_file.as_deref());
        print_path("scenario", self.scenario_file.as_deref());
    }

    fn json(&self) -> serde_json::Value {
        let (invariant, title, at_ms) = match &self.failure.problem {
            Problem::Violation(v) => {
                (Some(format!("{:?}", v.invariant)), Some(v.invariant.title()), Some(v.at_ms))
            }
            Problem::Panic(_) => (None, None, None),
        };
        json!({
            "seed": self.failure.seed,
            "plan": self.plan.name(),
            "gen": GENERATOR_VERSION,
            "replay": self.replay,
            "invariant": invariant,
            "title": title,
            "at_ms": at_ms,
            "problem": self.failure.problem.to_string(),
            "panicked": matches!(self.failure.problem, Problem::Panic(_)),
            "replay_matches": self.replay_matches,
            "log_file": self.log_file.as_ref().map(|p| p.display().to_string()),
            "scenario_file": self.scenario_file.as_ref().map(|p| p.display().to_string()),
            "log_lines": self.log_lines,
            "log_tail": self.log_tail,
        })
    }
}

fn print_path(what: &str, path: Option<&Path>) {
    match path {
        Some(path) => println!("{what}: {}", path.display()),
        None => println!("{what}: not written (see the warning above)"),
    }
}

/// The command that replays `seed` exactly as it was explored.
fn replay_command_line(seed: u64, plan: Plan, config: Option<&Path>) -> String {
    let mut line = format!("cargo run --release -p quiesce-sim -- replay --seed {seed}");
    if let Some(path) = config {
        line.push_str(&format!(" --config {}", shell_word(&path.display().to_string())));
    }
    if plan != Plan::default() {
        line.push_str(&format!(" --plan {}", plan.name()));
    }
    line
}

/// A word a shell reads back as itself.
fn shell_word(word: &str) -> String {
    let plain = word.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,".contains(c));
    if plain { word.to_owned() } else { format!("'{}'", word.replace('\'', "'\\''")) }
}

/// Writes a failure's file under `target/quiesce-sim/` (or `$CARGO_TARGET_DIR/quiesce-sim/`).
fn save(name: &str, text: &str) -> Option<PathBuf> {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let dir = target.join("quiesce-sim");
    let path = dir.join(name);
    let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text));
    match written {
        Ok(()) => Some(path),
        Err(error) => {
            eprintln!("warning: could not write {}: {error}", path.display());
            None
        }
    }
}

/// An exploration that ran, for printing.
struct Explored<'a> {
    exploration: &'a Exploration,
    summary: &'a Summary,
    elapsed: Duration,
    failure: Option<&'a FailureReport>,
}

impl Explored<'_> {
    fn print(&self) {
        if let Some(failure) = self.failure {
            failure.print();
            println!();
        }
        let (e, s) = (self.exploration, self.summary);
        let (plan, ms) = (e.plan.name(), self.elapsed.as_millis());
        print!("explored {} seeds from {} (shard {}, plan {plan}, ", s.seeds_run, e.start, e.shard);
        println!("gen {GENERATOR_VERSION}) on {} jobs in {ms} ms", e.jobs);
        println!(
            "throughput: {} scenarios/s, {} events/s",
            self.per_second(s.seeds_run),
            self.per_second(s.events)
        );
        println!("failures: {}", s.failures.len());
        print_coverage(&s.coverage);
    }

    fn json(&self) -> serde_json::Value {
        let (e, s) = (self.exploration, self.summary);
        let coverage: serde_json::Map<String, serde_json::Value> =
            s.coverage.facts().map(|(fact, n)| (fact.to_owned(), n.into())).collect();
        json!({
            "seeds_run": s.seeds_run,
            "start": e.start,
            "shard": e.shard.to_string(),
            "plan": e.plan.name(),
            "gen": GENERATOR_VERSION,
            "jobs": e.jobs,
            "elapsed_ms": self.elapsed.as_millis() as u64,
            "scenarios_per_s": self.per_second(s.seeds_run),
            "events_per_s": self.per_second(s.events),
            "inputs": s.inputs,
            "events": s.events,
            "failures": s.failures.len(),
            "failure": self.failure.map(FailureReport::json),
            "coverage": coverage,
        })
    }

    /// A count per wall-clock second, in integers.
    fn per_second(&self, count: u64) -> u64 {
        let micros = self.elapsed.as_micros().max(1);
        (u128::from(count) * 1_000_000 / micros) as u64
    }
}

fn print_coverage(coverage: &Coverage) {
    let facts: Vec<(&str, u64)> = coverage.facts().collect();
    if facts.is_empty() {
        println!("coverage: no facts defined");
        return;
    }
    println!("coverage:");
    let width = facts.iter().map(|(fact, _)| fact.len()).max().unwrap_or(0);
    for (fact, n) in facts {
        println!("  {fact:<width$} {n}");
    }
}

fn replay_command(args: &ReplayArgs) -> Result<ExitCode, ScenarioError> {
    let params = params(args.config.as_deref())?;
    let scenario = Generator::new(&params).generate(args.seed);
    println!("SEED={} PLAN={} GEN={GENERATOR_VERSION}", args.seed, args.plan.name());
    Ok(run_and_print(&scenario, args.plan))
}

fn run_command(args: &RunArgs) -> Result<ExitCode, ScenarioError> {
    let scenario = Scenario::from_file(&args.file)?;
    println!("FILE={} PLAN={}", args.file.display(), args.plan.name());
    Ok(run_and_print(&scenario, args.plan))
}

/// Runs a scenario twice with recording on, prints its log and verdict, and checks that the
/// two runs gave the same entries (DESIGN "Determinism rules").
fn run_and_print(scenario: &Scenario, plan: Plan) -> ExitCode {
    let first = explore::check(scenario, plan, true);
    let second = explore::check(scenario, plan, true);
    print!("{}", log::render(&first.entries));

    if let Some((_, divergence)) = log::first_divergence(&first.entries, &second.entries) {
        println!("verdict: not deterministic: {divergence}");
        return ExitCode::FAILURE;
    }
    println!("verdict: {}", verdict(&first));
    verdict_code(first.problem.is_none())
}

fn verdict(checked: &Checked) -> String {
    match &checked.problem {
        Some(problem) => problem.to_string(),
        None => {
            let (events, end_ms) = (checked.report.events, checked.report.end_ms);
            format!("every invariant held ({events} events, settled at t={end_ms} ms)")
        }
    }
}

/// The wall clock, for throughput only.
#[allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "throughput is wall-clock time by definition; it never reaches a simulated run"
)]
mod stopwatch {
    use std::time::{Duration, Instant};

    /// Measures how long an exploration took.
    pub struct Stopwatch(Instant);

    impl Stopwatch {
        pub fn start() -> Self {
            Self(Instant::now())
        }

        pub fn elapsed(&self) -> Duration {
            self.0.elapsed()
        }
    }
}
