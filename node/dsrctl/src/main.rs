//! `dsrctl`: the operator's client for the dsrlb admin API. Thin: everything lives in the
//! library (`dsrctl::main`), so the integration tests can reach its parts.

fn main() -> std::process::ExitCode {
    dsrctl::main()
}
