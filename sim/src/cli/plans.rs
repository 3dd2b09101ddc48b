//! The commands that turn a failure into something to read: `shrink` (a minimal scenario file),
//! `timeline` (an SVG picture of a run) and `find-time` (how many seeds each historical plan
//! takes to be caught).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use quiesce_sim::explore::{self, Problem};
use quiesce_sim::find_time::{self, SEEDS_MAX, START_STRIDE, STARTS};
use quiesce_sim::generate::{GENERATOR_VERSION, Generator};
use quiesce_sim::oracle::Violation;
use quiesce_sim::plan::Plan;
use quiesce_sim::scenario::{Scenario, ScenarioError};
use quiesce_sim::shrink::{self, ShrinkError, Shrunk, Size};
use quiesce_sim::timeline;

use super::{default_jobs, params, save, verdict_code};

/// Which run a command looks at: a seed of the generator or a scenario file.
#[derive(Debug, Args)]
pub struct Source {
    /// The seed to take the scenario from.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    seed: Option<u64>,
    /// A scenario file instead of a seed.
    file: Option<PathBuf>,
    /// The config file the seed was explored with, if any.
    #[arg(long, value_name = "FILE", conflicts_with = "file")]
    config: Option<PathBuf>,
    /// The restart plan the core runs under.
    #[arg(long, default_value = "spec", value_name = "NAME")]
    plan: Plan,
}

impl Source {
    /// The scenario, and how to name where it came from.
    fn scenario(&self) -> Result<(Scenario, String), ScenarioError> {
        if let Some(file) = &self.file {
            return Ok((Scenario::from_file(file)?, file.display().to_string()));
        }
        let seed = self.seed.expect("clap requires a seed or a file");
        let generator = Generator::new(&params(self.config.as_deref())?);
        Ok((
            generator.generate(seed),
            format!("seed {seed} (generator version {GENERATOR_VERSION})"),
        ))
    }

    /// A file name stem for what this run writes.
    fn stem(&self) -> String {
        let origin = match (&self.file, self.seed) {
            (Some(file), _) => file.file_stem().map_or("scenario".into(), |s| s.to_string_lossy()),
            (None, seed) => format!("seed-{}", seed.unwrap_or(0)).into(),
        };
        format!("{origin}-{}", self.plan.name())
    }
}

#[derive(Debug, Args)]
pub struct ShrinkArgs {
    #[command(flatten)]
    source: Source,
    /// Where to write the minimal scenario; default under target/quiesce-sim/.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TimelineArgs {
    #[command(flatten)]
    source: Source,
    /// Where to write the SVG; default under target/quiesce-sim/.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FindTimeArgs {
    /// A plan to hunt (repeatable); default every historical plan.
    #[arg(long = "plan", value_name = "NAME")]
    plans: Vec<Plan>,
    /// How many starting seeds, `k * 1,000,003` for k from 0; at least 1, so a table means
    /// something.
    #[arg(long, default_value_t = STARTS, value_parser = clap::value_parser!(u64).range(1..))]
    starts: u64,
    /// How many seeds one start may run before the plan counts as not found; at least 1.
    #[arg(long, default_value_t = SEEDS_MAX, value_parser = clap::value_parser!(u64).range(1..))]
    seeds_max: u64,
    /// How many threads hunt; defaults to the available cores.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    jobs: Option<u32>,
}

pub fn shrink_command(args: &ShrinkArgs) -> Result<ExitCode, ScenarioError> {
    let source = &args.source;
    let plan = source.plan;
    let (scenario, origin) = source.scenario()?;
    println!("SHRINK {origin} PLAN={}", plan.name());
    let shrunk = match (source.seed, &source.file) {
        (Some(seed), None) => {
            let generator = Generator::new(&params(source.config.as_deref())?);
            shrink::shrink_seed(&generator, seed, plan)
        }
        _ => shrink::shrink_file(scenario, plan),
    };
    let shrunk = match shrunk {
        Ok(shrunk) => shrunk,
        Err(error @ (ShrinkError::Holds | ShrinkError::Panicked(_))) => {
            eprintln!("error: {origin} under plan `{}`: {error}", plan.name());
            return Ok(ExitCode::from(2));
        }
    };
    let text = shrink::file_text(&shrunk, plan, &origin);
    let path =
        write_output(args.output.as_deref(), &format!("shrunk-{}.toml", source.stem()), &text);
    print_shrunk(&shrunk);
    match path {
        Some(path) => {
            println!("scenario: {}", path.display());
            let file = path.display();
            println!(
                "run it: cargo run --release -p quiesce-sim -- run {file} --plan {}",
                plan.name()
            );
            Ok(ExitCode::SUCCESS)
        }
        // An unwritable output is a bad input, like an unreadable one: exit 2, not 1.
        None => Ok(ExitCode::from(2)),
    }
}

fn print_shrunk(shrunk: &Shrunk) {
    let (before, after) = (shrunk.before, shrunk.after());
    println!("verdict: {}", shrunk.violation);
    println!("before: {}", size_line(&before));
    println!("after:  {}", size_line(&after));
    println!(
        "removed: {} messages, {} signals, {} keys, {} sessions, {} scripted items; the last input \
         moved {} ms earlier",
        before.messages - after.messages,
        before.signals - after.signals,
        before.keys - after.keys,
        before.sessions - after.sessions,
        before.scripted.saturating_sub(after.scripted),
        before.last_ms.saturating_sub(after.last_ms)
    );
    let (tree, direct) = shrunk.steps;
    println!("tried: {tree} candidates on the generator's value tree, {direct} on the scenario");
}

fn size_line(size: &Size) -> String {
    format!(
        "{} messages, {} signals, {} keys, {} sessions, {} scripted items, last input at t={} ms",
        size.messages, size.signals, size.keys, size.sessions, size.scripted, size.last_ms
    )
}

pub fn timeline_command(args: &TimelineArgs) -> Result<ExitCode, ScenarioError> {
    let source = &args.source;
    let (scenario, origin) = source.scenario()?;
    let checked = explore::check(&scenario, source.plan, true);
    let violation: Option<&Violation> = match &checked.problem {
        Some(Problem::Violation(violation)) => Some(violation),
        _ => None,
    };
    let title = format!("quiesce-sim timeline: {origin}, plan {}", source.plan.name());
    let svg = timeline::render(&scenario, &checked.entries, violation, &title);
    let name = format!("timeline-{}.svg", source.stem());
    let Some(path) = write_output(args.output.as_deref(), &name, &svg) else {
        return Ok(ExitCode::from(2));
    };
    let verdict =
        checked.problem.as_ref().map_or("every invariant held".to_owned(), |p| p.to_string());
    println!("verdict: {verdict}");
    println!("timeline: {}", path.display());
    Ok(ExitCode::SUCCESS)
}

pub fn find_time_command(args: &FindTimeArgs) -> Result<ExitCode, ScenarioError> {
    let plans = if args.plans.is_empty() { Plan::HISTORICAL.to_vec() } else { args.plans.clone() };
    let starts = find_time::starts(args.starts);
    let jobs = args.jobs.map_or_else(default_jobs, |jobs| jobs as usize);
    let rows = find_time::time_to_find(&params(None)?, &plans, &starts, args.seeds_max, jobs);

    println!(
        "time to find: {} starts (k * {START_STRIDE}), at most {} seeds each, generator version \
         {GENERATOR_VERSION}\n",
        starts.len(),
        args.seeds_max
    );
    print!("{}", find_time::markdown(&rows));
    println!();
    for row in &rows {
        let seeds: Vec<String> = row.hunts.iter().map(|h| h.seeds.to_string()).collect();
        println!("{}: seeds to the first failure per start: {}", row.plan.name(), seeds.join(" "));
    }
    let all_found = rows.iter().all(|row| row.found() == row.hunts.len());
    Ok(verdict_code(all_found))
}

/// Writes `text` to `output`, or under target/quiesce-sim/ as `name`; the path, or `None` after
/// printing why it could not be written.
fn write_output(output: Option<&Path>, name: &str, text: &str) -> Option<PathBuf> {
    let Some(path) = output else { return save(name, text) };
    match std::fs::write(path, text) {
        Ok(()) => Some(path.to_owned()),
        Err(error) => {
            eprintln!("error: could not write {}: {error}", path.display());
            None
        }
    }
}
