//! Log setup: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as text for a
//! terminal or journald, or one JSON object per line for a log pipeline (`--log-format`).

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colour only on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`), `target`,
    /// and `spans` (node id, term, farm where the event happened inside them).
    Json,
}

/// Installs the global subscriber once; later calls are ignored.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
    // A second init (tests, demo) keeps the first subscriber, which is what we want.
    if installed.is_err() {
        tracing::debug!("tracing subscriber already installed");
    }
}
