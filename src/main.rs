//! The `quiesce` daemon binary: `quiesce serve --config FILE`. Everything is in
//! [`quiesce::daemon::cli`], so the library's tests and users reach the same code.

fn main() -> std::process::ExitCode {
    quiesce::daemon::cli::main()
}
