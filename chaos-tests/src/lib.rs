//! Chaos scenarios for a dsrlb cluster, built on `lab`: real `dsrlb` processes in
//! network namespaces, client traffic through the VIP the whole time, nemeses striking the
//! cluster, and invariants judged from what the clients and a capture of the bridge saw.
//!
//! Must not know: the daemon's internals; it judges from the wire, the clients and the
//! admin API only.
//!
//! Layout:
//! - [`scenario`]: [`Scenario`] — lab, traffic, capture and prober up; `finish` judges the
//!   run and prints its summary row ([`summary`]).
//! - [`nemesis`]: kill -9, SIGSTOP/SIGCONT, peer-only and whole-link partitions, SIGTERM,
//!   restarts, backend kills.
//! - [`workload`]: verified long-lived streams, a short-request TCP loop, a UDP loop, admin
//!   writes.
//! - [`invariants`]: one invariant per file — a single owner on the wire, streams survive,
//!   no acknowledged write lost, convergence after healing — each a pure function.
//! - [`views`], [`admin`]: reading each node's state through the admin API.
//! - [`rng`]: the seed (`DSRLB_CHAOS_SEED` replays a run); [`env`]: root checks, skips and
//!   where the `dsrlb` binary is.
//!
//! The scenarios themselves are the test binary `tests/chaos` (one file per scenario).

pub mod admin;
pub mod env;
pub mod invariants;
pub mod nemesis;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod summary;
pub mod views;
pub mod workload;

pub use report::Verdict;
pub use scenario::{Scenario, Setup};
