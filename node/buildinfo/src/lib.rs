//! What this build of dsrlb is: its version, git commit and build date, as `--version`
//! prints them (`dsrlb 0.1.0 (1a2b3c4d5e6f, 2026-12-04)`), the metric `dsrlb_build_info`
//! labels them and the admin API reports them. Its own crate so that `dsrlb` and `dsrctl`
//! agree on one string without `dsrctl` depending on the daemon.

/// The release version (the workspace's `version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The short git commit of the build, or `unknown` when built outside a git checkout
/// without `DSRLB_GIT_COMMIT`.
pub const COMMIT: &str = env!("DSRLB_BUILD_COMMIT");

/// The build date, `YYYY-MM-DD` (UTC; `SOURCE_DATE_EPOCH`'s when set).
pub const DATE: &str = env!("DSRLB_BUILD_DATE");

/// `0.1.0 (1a2b3c4d5e6f, 2026-12-04)`: what follows the program name in `--version`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("DSRLB_BUILD_COMMIT"),
    ", ",
    env!("DSRLB_BUILD_DATE"),
    ")"
);

/// `(dsrlb) 0.1.0 (1a2b3c4d5e6f, 2026-12-04)`: the `--version` of a tool that ships with
/// dsrlb, so `dsrctl --version` names the release it belongs to (as GNU's
/// `ls (GNU coreutils) 9.1` does).
pub const TOOL_VERSION: &str = concat!(
    "(dsrlb) ",
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("DSRLB_BUILD_COMMIT"),
    ", ",
    env!("DSRLB_BUILD_DATE"),
    ")"
);

/// How one member's version is shown and carried on the wire: `0.1.0 (1a2b3c4d5e6f)`
/// (the date says nothing about what runs, the commit does).
pub fn short() -> String {
    format!("{VERSION} ({COMMIT})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_long_version_names_version_commit_and_date() {
        assert!(LONG_VERSION.starts_with(VERSION));
        assert!(LONG_VERSION.contains(COMMIT));
        assert_eq!(TOOL_VERSION, format!("(dsrlb) {LONG_VERSION}"));
        assert_eq!(DATE.len(), 10, "{DATE}");
        assert!(!COMMIT.is_empty());
        assert_eq!(short(), format!("{VERSION} ({COMMIT})"));
    }
}
