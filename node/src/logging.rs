//! Log setup: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).

/// Installs the global subscriber once; later calls are ignored.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
