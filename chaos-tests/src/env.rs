//! Where the suite runs: whether this machine can build a lab (root, `ip`), what to say when
//! it cannot, and where the `dsrlb` binary the nodes run is.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Set to a directory to keep every scenario's process logs there (`<dir>/<scenario>-<seed>/`).
pub const LOG_DIR_ENV: &str = "DSRLB_CHAOS_LOG_DIR";

/// Copies the `*.log` files of `lab_dir` to `$DSRLB_CHAOS_LOG_DIR/<run>/` when that is set;
/// says where, or why not.
pub fn keep_logs(lab_dir: &Path, run: &str) {
    let Some(base) = std::env::var_os(LOG_DIR_ENV) else {
        return;
    };
    let to = PathBuf::from(base).join(run);
    let copied = std::fs::create_dir_all(&to).and_then(|()| {
        let mut n = 0;
        for entry in std::fs::read_dir(lab_dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "log") {
                std::fs::copy(&path, to.join(path.file_name().unwrap_or_default()))?;
                n += 1;
            }
        }
        Ok(n)
    });
    match copied {
        Ok(n) => say(&format!("{run}: {n} logs kept in {}", to.display())),
        Err(e) => say(&format!("{run}: cannot keep logs in {}: {e}", to.display())),
    }
}

/// Set to `1` to make a skip (no root, no `ip`) a failure, as CI does where it has root.
pub const REQUIRE_ENV: &str = "DSRLB_REQUIRE_LAB";

/// Writes one line to the terminal even when libtest captures output (it captures the
/// `print!` macros, not the stderr handle): summary rows and skips must be seen on a pass.
pub fn say(line: &str) {
    // A closed stderr must not fail a scenario; the assertions say what matters.
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Whether a lab can be built here. When not, says `SKIPPED: <test>: <reason>` and returns
/// false, or panics with `DSRLB_REQUIRE_LAB=1`.
pub fn can_run_lab(test: &str) -> bool {
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("the lab needs root (network namespaces, AF_PACKET)")
    } else if !Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        Some("the lab needs the `ip` command (apt-get install iproute2)")
    } else {
        None
    };
    let Some(reason) = reason else {
        return true;
    };
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
        panic!("{REQUIRE_ENV}=1 but chaos {test} cannot run: {reason}");
    }
    say(&format!(
        "SKIPPED: chaos {test}: {reason} (set {REQUIRE_ENV}=1 to make this a failure)"
    ));
    false
}

/// The `dsrlb` binary of this build: `target/<profile>/dsrlb`, beside the directory of this
/// test binary (`target/<profile>/deps/<test>`). Cargo builds another package's binaries
/// only for that package's own tests, so a workspace test run has it; alone, build it first.
///
/// # Panics
/// When it is missing, with the command that builds it.
pub fn dsrlb() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps");
    let bin = dir.join("dsrlb");
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("release");
    let flag = if profile == "debug" {
        String::new()
    } else {
        format!(" --profile {profile}")
    };
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build{flag} -p node --bin dsrlb` (a workspace \
         `cargo test` builds it for node's own tests)",
        bin.display()
    );
    bin
}
