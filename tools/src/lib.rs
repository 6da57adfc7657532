//! The `ringport` command line: serve internal ports with the thread-per-core
//! io_uring engine, check a config file or the machine (`doctor`), talk `relay`.
//!
//! The binary itself is the root package's `src/main.rs`, which calls
//! [`main`]; it lives there so that `cargo test --workspace` builds it before
//! the tests in `tests/` that run it. `ringport` alone (or `cargo run
//! --release`) serves the default listeners on loopback with one shard per
//! CPU; `ringport serve --help` lists the flags.

mod admin;
mod cli;
mod config;
mod doctor;
/// The fuzzing entry point (`fuzz/`); not public API.
#[doc(hidden)]
pub mod fuzzing;
mod metrics;
pub mod mqtt;
pub mod mqtt_auth;
pub mod nats;
mod notices;
mod relay;
mod serve;
mod signals;
pub mod testing;
mod tls_client;
mod tls_config;

/// The admin endpoint's HTTP request parser (fuzzed in `fuzz/`).
pub use admin::request as admin_request;

use clap::Parser;

use cli::{Cli, Command, ServeArgs};

/// Parses the command line and runs it; exits 1 with the error on failure.
pub fn main() {
    let cli = Cli::parse();
    let result = match cli
        .command
        .unwrap_or(Command::Serve(Box::new(ServeArgs::default_serve())))
    {
        Command::Serve(args) => serve::run(*args),
        Command::CheckConfig { file } => serve::check_config(&file),
        Command::Doctor(args) => match doctor::run(&args) {
            Ok(true) => Ok(()),
            // A check failed: the output says which, and the status says so.
            Ok(false) => std::process::exit(1),
            Err(e) => Err(e),
        },
        Command::Relay { command } => relay::run(command),
        Command::Mqtt {
            command:
                cli::MqttCommand::Passwd {
                    file,
                    user,
                    iterations,
                },
        } => mqtt_auth::passwd_from_stdin(&file, &user, iterations),
    };
    if let Err(e) = result {
        eprintln!("ringport: error: {e:#}");
        std::process::exit(1);
    }
}
