//! The service manager's view of the daemon (systemd `Type=notify`): `READY=1` once the
//! node is of use — listeners bound and the first forwarding table built from the replicated
//! state published — and `STOPPING=1` when it begins to shut down. Nothing is sent when no
//! service manager asked for it (`NOTIFY_SOCKET` unset), and a failed send only logs: the
//! node's work never depends on the manager.

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// The node is ready; `status` is what `systemctl status` shows beside it.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// The node has begun to shut down (its handover follows).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}
