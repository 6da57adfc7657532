//! `ringport`: serve internal ports with the thread-per-core io_uring engine.
//!
//! `ringport` alone (or `cargo run --release`) serves the default listeners on
//! loopback with one shard per CPU; `ringport serve --help` lists the flags.

mod admin;
mod cli;
mod config;
mod metrics;
mod relay;
mod serve;
mod signals;

use clap::Parser;

use cli::{Cli, Command, ServeArgs};

fn main() {
    let cli = Cli::parse();
    let result = match cli
        .command
        .unwrap_or(Command::Serve(Box::new(ServeArgs::default_serve())))
    {
        Command::Serve(args) => serve::run(*args),
        Command::CheckConfig { file } => serve::check_config(&file),
        Command::Relay { command } => relay::run(command),
    };
    if let Err(e) = result {
        eprintln!("ringport: error: {e:#}");
        std::process::exit(1);
    }
}
