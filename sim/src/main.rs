//! `quiesce-sim`: explore seeds, replay one, or run a scenario file (see `cli`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
