//! The `layerscope` binary: parse arguments, run, map errors to exit codes.
//!
//! Exit codes: 0 success, 1 bad input (one line on stderr), 2 usage (clap);
//! `check`: 0 clean, 1 problems found, 2 could not check.
use std::process::ExitCode;

use clap::Parser;
use layerscope::cli::{self, Cli};

fn main() -> ExitCode {
    let args = Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if cli::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let (status, say) = cli::exit_status(&err);
            if say {
                eprintln!("layerscope: {}", cli::error_line(&err));
            }
            ExitCode::from(status)
        }
    }
}
