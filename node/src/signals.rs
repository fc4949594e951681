//! Signals for the daemon: shutdown (SIGTERM, SIGINT) and SIGHUP where nothing reloads.

/// Completes on SIGTERM or SIGINT (Ctrl-C). If the handlers cannot be installed the future
/// never completes, and the failure is logged: the node still runs, it just needs SIGKILL.
pub async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            std::future::pending::<()>().await
        }
    }
}

/// Handles SIGHUP by logging `message` (instead of its default action, the end of the
/// process), for a process that reloads nothing. Call inside the runtime.
pub fn on_hangup(message: &'static str) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::warn!("{message}");
                }
            });
        }
        Err(e) => tracing::error!(error = %e, "cannot handle SIGHUP"),
    }
}
