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
            eprintln!(
                "es: {} (see es --help)",
                one_line(&error.render().to_string())
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
        // The reader went away (`es tail | head`): the output ends there.
        Err(es_cli::error::CliError::Io(error))
            if error.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("es: {error}");
            error.exit_code()
        }
    }
}

/// Clap's message on one line: what it says before its usage lines (a
/// missing argument is named on the line after the first).
fn one_line(text: &str) -> String {
    let words: Vec<&str> = text
        .lines()
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more"))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let line = words.join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_owned()
}
