//! The chaos suite: one test binary (linking is the slow part of CI), one scenario per file.
//! Each scenario builds its own lab under its own prefix, so two run side by side with
//! `--test-threads=2`; each prints one `CHAOS ...` summary row and replays with the seed it
//! prints (`DSRLB_CHAOS_SEED=<seed> cargo test --release -p chaos-tests --test chaos -- <name>`).
//!
//! Without root every scenario prints `SKIPPED: ...` and passes, unless `DSRLB_REQUIRE_LAB=1`.
//! The nodes run `target/<profile>/dsrlb`: a workspace test run builds it; for this package
//! alone, `cargo build --release -p node --bin dsrlb` first.
//!
//! A new scenario is one more file here and one more `mod` line below.

mod can_fail;
mod dual_owner;
mod kill_backend_takeover;
mod kill_follower;
mod kill_leader;
mod partition_link;
mod partition_peers;
mod persistent_clients;
mod restart_cluster;
mod rolling_restart;
mod sigstop_leader;
