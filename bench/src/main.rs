//! `ringport-bench`: runs the scenarios and prints the comparison table.
//!
//! `cargo run --release --bin ringport-bench` with no arguments runs the
//! standard suite; `--help` lists the flags. Exits 1 when a run's errors or
//! loss exceed `--max-error-rate`, 2 when the harness itself fails.

fn main() {
    let args = ringport_bench::cli::parse_env();
    let command: Vec<String> = std::env::args().collect();
    match ringport_bench::cli::run(&args, command) {
        Ok(report) if report.passed => {}
        Ok(_) => {
            eprintln!(
                "ringport-bench: errors or loss above --max-error-rate {}",
                args.max_error_rate
            );
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("ringport-bench: error: {e:#}");
            std::process::exit(2);
        }
    }
}
