//! `bascule`: the command-line client for the Bascule control socket.
//! Parse, run one command, map the outcome to a documented exit code.
#![deny(unsafe_code)]

mod args;
mod boot;
mod cluster;
mod commands;
mod exit;
mod follow;
mod journal;
mod output;
mod progress;
mod rollback;
mod upgrade;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Usage errors exit 2 from inside clap.
    let cli = args::Cli::parse();
    match commands::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if let Some(message) = &failure.message {
                // eprintln! would panic if stderr is gone; nothing to do then.
                let _ = writeln!(std::io::stderr(), "bascule: {message}");
            }
            ExitCode::from(failure.code)
        }
    }
}
