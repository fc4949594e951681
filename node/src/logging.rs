//! Log setup: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).

/// openraft logs every API message at `info`, and the heartbeat pacer (cluster) sends one
/// every 15 ms through that API: quiet that target unless `RUST_LOG` names openraft itself.
const QUIET_RAFT_CORE: &str = "openraft::core::raft_core=warn";

/// Installs the global subscriber once; later calls are ignored.
pub fn init() {
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if !asked.contains("openraft")
        && let Ok(quiet) = QUIET_RAFT_CORE.parse()
    {
        filter = filter.add_directive(quiet);
    }
    // A second init (tests, demo) keeps the first subscriber, which is what we want.
    if tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init()
        .is_err()
    {
        tracing::debug!("tracing subscriber already installed");
    }
}
