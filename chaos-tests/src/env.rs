//! Where the suite runs: the lab's checks (root, `ip`, `DSRLB_REQUIRE_LAB`) and binary
//! locator under the suite's names, and where a scenario's logs are kept.

use std::path::{Path, PathBuf};

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

pub use lab::env::{REQUIRE_ENV, say};

/// Whether a lab can be built here for chaos scenario `test` (see [`lab::can_run`]).
pub fn can_run_lab(test: &str) -> bool {
    lab::can_run(&format!("chaos {test}"))
}

/// The `dsrlb` binary of this build (see [`lab::binary`]).
///
/// # Panics
/// When it is missing, with the command that builds it.
pub fn dsrlb() -> PathBuf {
    lab::binary("dsrlb").unwrap_or_else(|e| panic!("{e}"))
}
