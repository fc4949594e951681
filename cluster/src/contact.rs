//! [`PeerContact`]: the daemon is told of every authenticated peer call before it is handled.
//!
//! A pair arbitrated by the L2 segment (docs/design.md#pair-segment) owns its VIPs without a
//! quorum while its peer is silent. The first call from the peer ends that: the daemon
//! releases a segment grant synchronously in this hook, *before* the call can be answered,
//! so the peer can never count this node's vote or acknowledgement towards a quorum while
//! this node still owns by the segment.

/// Told of every authenticated peer call that can count towards a quorum (any RPC of
/// `dsrlb.raft.v1` but `Version`, which only reports), before it is handled.
pub trait PeerContact: Send + Sync + 'static {
    /// Must not block: it runs on the peer service's task.
    fn peer_call(&self);
}

/// The default: nobody listens.
pub struct NoContact;

impl PeerContact for NoContact {
    fn peer_call(&self) {}
}
