//! The replicated control plane of dsrlb (openraft): farms, backends, health and persistence
//! as a state machine, durable log and snapshots on disk, and the tonic peer transport.
//!
//! Empty until the cluster issue (#3): today a node with no peers is a cluster of one whose
//! farms come from its config file.
