//! The node's lab tests, one binary: each module builds its own network-namespace lab
//! (`lab` crate) and runs real `dsrlb` processes in it (root; under `DSRLB_REQUIRE_LAB=1` a
//! test that cannot build its lab fails instead of skipping). One binary because linking is
//! the slow part of a test run and the modules share their harness (`common`,
//! `admin_support`, `tls_common`); `cargo test -p node --test lab <module>::` runs one area.
//!
//! Areas, by module prefix: `lab_*` one node and its datapath, `cluster_*` Raft and VIP
//! ownership across real processes, `admin_*` the admin API, `dsrctl_*` the client against
//! a cluster, `tls_*` peer and admin TLS, `pair_*` a two-node pair, `persistence` source-IP pins, `demo` `dsrlb demo`,
//! `product_*` what an operator runs it with (versions, reload, service manager, monitoring).

mod common;

mod admin_support;
mod tls_common;

mod admin_api;
mod admin_drain;
mod admin_membership;
mod admin_persistence;
mod admin_validation;
mod cluster_auth;
mod cluster_durability;
mod cluster_kill_leader;
mod cluster_pair;
mod cluster_partition;
mod cluster_sigstop;
mod cluster_single_owner;
mod cluster_transfer;
mod cluster_witness;
mod demo;
mod dsrctl_failover;
mod dsrctl_membership;
mod dsrctl_persistence;
mod dsrctl_traffic;
mod dsrctl_verbs;
mod lab_arp_flux;
mod lab_backend_ipv6;
mod lab_backend_persist;
mod lab_balancing;
mod lab_check_kinds;
mod lab_check_load;
mod lab_dsr;
mod lab_fast_path;
mod lab_flood;
mod lab_garp_refresh;
mod lab_health;
mod lab_ipv6;
mod lab_limits;
mod lab_listeners;
mod lab_malformed;
mod lab_not_owner;
mod lab_preflight;
mod lab_scale;
mod lab_selftest;
mod lab_sigterm;
mod lab_start_order;
mod lab_syn_flood;
mod lab_udp_sink;
mod lab_via_vip;
mod lab_xdp_lifecycle;
mod pair_segment;
mod persistence;
mod product_dashboards;
mod product_health;
mod product_reload;
mod product_systemd;
mod product_version;
mod tls_cluster;
mod tls_peer_foreign;
