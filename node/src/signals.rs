//! Shutdown signals for the daemon.

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
