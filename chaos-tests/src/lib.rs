//! Chaos scenarios for a dsrlb cluster, built on `node::lab`.
//!
//! Empty until the chaos issue (#6): a single node has no leader to kill.
