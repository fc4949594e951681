//! SIGHUP: what a running node takes from its config file without a restart, and what it
//! says needs one (docs/design.md#reload).
//!
//! Reloaded: the admin token (`admin.token_file` is read again; the listener expects the new
//! token from the next call and the old one is refused). Everything else is compared with
//! what the node runs and each changed key is logged once as needing a restart: listeners,
//! the data dir and Raft timing are bound into running tasks, and a cluster token changed
//! on one node alone would cut it off from its peers. `[[farm]]` tables that differ from
//! the cluster's farms are reported: after bootstrap the farms come from the log.
//!
//! A file that does not load leaves everything as it was (the error is logged): a reload
//! never makes a node run on half a config.

use crate::admin::AdminToken;
use crate::config::{self, Config, Loaded};
use cluster::{ClusterState, Farm};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::Signal;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// What a reload acts on.
pub struct Reloader {
    pub path: PathBuf,
    /// The config the node started with (what "needs a restart" is compared against).
    pub running: Config,
    pub admin_token: AdminToken,
    /// The replicated state, for the farms notice.
    pub state: watch::Receiver<Arc<ClusterState>>,
    /// The cluster token the member runs with (`None`: a cluster of one's random token).
    pub cluster_token: Option<String>,
}

impl Reloader {
    /// Reloads on every signal of `hangups` until the task is aborted.
    pub async fn serve(mut self, mut hangups: Signal) {
        while hangups.recv().await.is_some() {
            info!(config = %self.path.display(), "SIGHUP: reloading");
            self.reload();
        }
    }

    /// One reload; public for the daemon's tests.
    pub fn reload(&mut self) {
        let file = match config::load_role(&self.path, false) {
            Ok(Loaded::Node(c)) => c,
            Ok(Loaded::Witness { .. }) => {
                error!("reload refused: the file now describes a witness; nothing changed");
                return;
            }
            Err(e) => {
                error!("reload refused: {e}; nothing changed");
                return;
            }
        };
        let mut done = Vec::new();
        match config::read_token("admin.token_file", &file.admin_token_file) {
            Ok(token) => {
                if self.admin_token.set(&token) {
                    done.push("admin token");
                }
            }
            Err(e) => error!("admin token not reloaded: {e}"),
        }
        let mut restart = needs_restart(&self.running, &file);
        let cluster_token = match &file.cluster.token_file {
            Some(path) => config::read_token("cluster.token_file", path).ok(),
            None => None,
        };
        if cluster_token != self.cluster_token {
            restart.push("cluster token (change it on every member, then restart them in turn)");
        }
        if !restart.is_empty() {
            warn!(
                keys = ?restart,
                "changed in the file but not applied: needs a restart (dsrlb run reads them at start)"
            );
        }
        let farms = self.state.borrow().farms.clone();
        if differs(&farms, &file.farms) {
            info!(
                "the file's [[farm]] tables differ from the cluster's farms: the cluster's farms \
                 come from the log; use dsrctl apply"
            );
        }
        info!(reloaded = ?done, "reload done");
        self.running.admin_token_file = file.admin_token_file;
    }
}

fn differs(cluster: &BTreeMap<String, Arc<Farm>>, file: &[Farm]) -> bool {
    cluster.len() != file.len()
        || file
            .iter()
            .any(|f| cluster.get(&f.name).map(|c| &**c) != Some(f))
}

/// The keys whose new value a running node cannot take, by section.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let dbg = |v: &dyn std::fmt::Debug| format!("{v:?}");
    let mut out = Vec::new();
    let pairs: [(&'static str, bool); 10] = [
        ("node.id", old.node_id != new.node_id),
        ("node.data_dir", old.data_dir != new.data_dir),
        (
            "cluster (members, listen, timing, token_file, tls, max_connections)",
            dbg(&old.cluster) != dbg(&new.cluster),
        ),
        ("admin.listen", old.admin_listen != new.admin_listen),
        ("admin.tls_*", tls_differs(&old.admin_tls, &new.admin_tls)),
        ("datapath", dbg(&old.datapath) != dbg(&new.datapath)),
        ("metrics.listen", old.metrics_listen != new.metrics_listen),
        (
            "metrics (max_connections, token_file), node.idle_timeout",
            old.metrics != new.metrics,
        ),
        (
            "admin.max_connections, node.idle_timeout",
            old.admin_limits != new.admin_limits,
        ),
        (
            "admin.token_file (the path; the token itself is reloaded)",
            old.admin_token_file != new.admin_token_file,
        ),
    ];
    for (key, changed) in pairs {
        if changed {
            out.push(key);
        }
    }
    out
}

fn tls_differs(a: &Option<config::AdminTls>, b: &Option<config::AdminTls>) -> bool {
    match (a, b) {
        (None, None) => false,
        (Some(a), Some(b)) => {
            a.cert_pem != b.cert_pem
                || a.key_pem != b.key_pem
                || a.ca_pem != b.ca_pem
                || a.client_ca_pem != b.client_ca_pem
        }
        _ => true,
    }
}
