//! Running the real `dsrctl` binary of this build: in this process's namespace or inside a
//! lab host, with a clean environment, capturing exit code and output (the node's lab tests
//! and dsrctl's own tests drive the client this way, as an operator would).

use crate::Host;
use std::path::PathBuf;
use std::process::Command;

/// This build's `dsrctl` (see [`crate::binary`]).
///
/// # Panics
/// When it was not built, with the command that builds it.
pub fn dsrctl_bin() -> PathBuf {
    crate::binary("dsrctl").unwrap_or_else(|e| panic!("{e}"))
}

/// One finished `dsrctl` run.
#[derive(Debug)]
pub struct Ctl {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ctl {
    /// Panics with the whole run when it did not exit 0.
    pub fn ok(self) -> Ctl {
        assert_eq!(self.code, 0, "dsrctl failed: {self:#?}");
        self
    }

    /// The stdout as JSON of type `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not the JSON expected ({e}): {}", self.stdout))
    }

    /// Asserts a failure (a non-zero exit; which one, the caller checks where it matters)
    /// with exactly one line on stderr; returns the line.
    pub fn failed_one_line(&self) -> &str {
        assert!(self.code > 0, "expected a failure: {self:#?}");
        let line = self.stderr.trim_end();
        assert!(
            !line.is_empty() && !line.contains('\n'),
            "expected one line on stderr: {:?}",
            self.stderr
        );
        line
    }
}

/// A `dsrctl` command with no DSRCTL_* variables from the caller's environment.
pub fn command(args: &[String]) -> Command {
    let mut cmd = Command::new(dsrctl_bin());
    cmd.args(args)
        .env_remove("DSRCTL_ENDPOINT")
        .env_remove("DSRCTL_TOKEN_FILE")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null());
    cmd
}

/// Runs `cmd` to completion (dsrctl bounds itself with --timeout).
pub fn output(mut cmd: Command) -> Ctl {
    let out = cmd.output().expect("dsrctl runs");
    Ctl {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `dsrctl args…` here.
pub fn run(args: &[&str]) -> Ctl {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    output(command(&args))
}

/// Runs `dsrctl args…` inside lab host `host` (a thread in its namespace starts it, so the
/// process is in that namespace too).
pub fn run_in(host: &Host, args: &[String]) -> Ctl {
    let cmd = command(args);
    host.run(move || output(cmd))
}

/// Strings from string slices, for argument lists.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}
