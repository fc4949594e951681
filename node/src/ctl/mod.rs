//! `dsrctl`, the admin client: command line, calls to `dsrlb.admin.v1`, and output.

use std::process::ExitCode;

/// Runs `dsrctl` with the process arguments; the exit code is 0 ok, 1 failed, 2 usage.
pub fn main() -> ExitCode {
    ExitCode::from(1)
}
