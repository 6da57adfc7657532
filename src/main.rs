//! The `ringport` binary: everything it does lives in `ringport-tools`.

fn main() {
    ringport_tools::main();
}
