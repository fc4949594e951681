//! `dsrctl`: the operator's client for the dsrlb admin API. Thin: everything lives in
//! `node::ctl`.

fn main() -> std::process::ExitCode {
    node::ctl::main()
}
