//! The leader's heartbeats, sent every `heartbeat` by this task instead of openraft's tick
//! (docs/design.md#heartbeats). openraft 0.9 uses its `heartbeat_interval` both as the tick
//! that sends heartbeats and as the AppendEntries timeout; at 15 ms every reply a busy
//! follower sends 16 ms late is a missed acknowledgement, and once a cluster is down to one
//! peer (a pair and its witness after a loss) a few of those end the VIP lease and the owner
//! drops the VIPs for nothing. So openraft's interval is set to the RPC timeout (the lease,
//! below the election minimum) with its own heartbeats off, and this task paces them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use openraft::ServerState;
use tokio::sync::watch;

use crate::shared::Shared;

/// Sends a heartbeat every `timing.heartbeat` while this node leads and heartbeats are on
/// (a handover turns them off, see `handover`).
pub(crate) async fn pacer(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(shared.timing.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metrics = shared.raft.metrics();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let leading = metrics.borrow_and_update().state == ServerState::Leader;
        if !leading || !shared.heartbeats.load(Ordering::Acquire) {
            continue;
        }
        if shared.raft.trigger().heartbeat().await.is_err() {
            // The Raft core has stopped (shutdown or a fatal storage error).
            return;
        }
    }
}
