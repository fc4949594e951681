//! Where a lab runs: whether this machine can build one (root, `ip`), what to say when it
//! cannot, and where the workspace's binaries (`dsrlb`, `dsrctl`) that the lab runs are.

use crate::LabError;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Set to `1` to make a skip (no root, no `ip`) a failure, as CI does: it runs as root, so a
/// lab test that skips there is hiding a broken machine, not a missing privilege.
pub const REQUIRE_ENV: &str = "DSRLB_REQUIRE_LAB";

/// Writes one line to the terminal even when libtest captures output (it captures the
/// `print!` macros, not the stderr handle): skips must be seen on a pass.
pub fn say(line: &str) {
    // A closed stderr must not fail a test; the assertions say what matters.
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Why a lab cannot be built on this machine, or `None` when it can.
pub fn unavailable() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        Some("the lab needs root (network namespaces, AF_PACKET)")
    } else if !Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        Some("the lab needs the `ip` command (apt-get install iproute2)")
    } else {
        None
    }
}

/// Whether `test` can build a lab here. When not, says `SKIPPED: <test>: <reason>` and
/// returns false — or panics when [`REQUIRE_ENV`] is `1`.
pub fn can_run(test: &str) -> bool {
    let Some(reason) = unavailable() else {
        return true;
    };
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
        panic!("{REQUIRE_ENV}=1 but {test} cannot run: {reason}");
    }
    say(&format!(
        "SKIPPED: {test}: {reason} (set {REQUIRE_ENV}=1 to make this a failure)"
    ));
    false
}

/// The workspace binary `name` of this build: beside this executable (a binary in
/// `target/<profile>/`) or one directory up (a test in `target/<profile>/deps/`). Cargo
/// builds a package's binaries only for that package's own tests, so a workspace `cargo
/// test` has them all; a single package's tests need them built first (the error says how).
pub fn binary(name: &str) -> Result<PathBuf, LabError> {
    let exe = std::env::current_exe().map_err(|e| LabError::io("locating this executable", e))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [Some(dir), dir.parent()];
    if let Some(found) = candidates
        .into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
    {
        return Ok(found);
    }
    let package = if name == "dsrlb" { "node" } else { name };
    Err(LabError::File {
        what: match package {
            "node" => "no dsrlb binary (cargo build --release -p node builds it) beside",
            _ => "no dsrctl binary (cargo build --release -p dsrctl builds it) beside",
        },
        path: exe,
        source: std::io::ErrorKind::NotFound.into(),
    })
}
