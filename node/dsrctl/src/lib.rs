//! `dsrctl`, the admin client: the command line, calls to `dsrlb.admin.v1` with endpoint
//! failover, and output as aligned tables or JSON.
//!
//! Must not know: the daemon or Raft. It speaks only `proto` (messages, token header, PEM
//! reading, the names of protocols and states).
//!
//! Layout:
//! - [`cli`], [`parse`]: clap definitions and value parsers; malformed arguments are usage
//!   errors (exit 2).
//! - [`request`]: arguments → API requests (pure).
//! - [`client`]: endpoints tried in turn, the bearer token, tonic errors → [`CtlError`].
//! - [`view`]: the JSON shape; [`render`], [`diff`], [`persist`], [`stats`], [`table`]: the
//!   text.
//! - [`run`]: one invocation, verb by verb.

pub mod cli;
pub mod client;
pub mod diff;
pub mod error;
pub mod parse;
pub mod persist;
pub mod render;
pub mod request;
pub mod run;
pub mod stats;
pub mod table;
pub mod view;

pub use error::CtlError;

use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;

/// Runs `dsrctl` with the process arguments; the exit code is 0 ok, 1 failed, 2 usage
/// (clap's own code for a bad command line).
pub fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse().and_then(cli::Cli::checked) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and --version go to stdout; a usage error to stderr, with our exit code.
            let _ = e.print();
            return ExitCode::from(cli::usage_exit_code(&e));
        }
    };
    // Logs only when asked for (RUST_LOG), on stderr: stdout is the command's output.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let stdout = std::io::stdout();
    let tty = stdout.is_terminal();
    let mut out = stdout.lock();
    match run::run(cli, &mut out, tty) {
        Ok(()) => ExitCode::SUCCESS,
        // `dsrctl … | head` closes the pipe early; that is not a failure worth a message.
        Err(CtlError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dsrctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
