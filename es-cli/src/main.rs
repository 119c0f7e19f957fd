//! The `es` binary: parses the command line, runs it, and turns the outcome
//! into an exit code (0 success, 1 the operation failed, 2 bad usage or no
//! connection).

use std::process::ExitCode;

use clap::Parser as _;
use es_cli::args::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // Help and version: to stdout, status 0.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            // Bad usage: one line naming what is wrong, status 2.
            let text = error.render().to_string();
            let first = text.lines().next().unwrap_or("bad usage");
            eprintln!(
                "es: {} (see es --help)",
                first.strip_prefix("error: ").unwrap_or(first)
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("es: cannot start: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(es_cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("es: {error}");
            error.exit_code()
        }
    }
}
