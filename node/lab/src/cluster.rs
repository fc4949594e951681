//! `ClusterLab`: a lab whose nodes run as one dsrlb cluster, with the moves cluster tests and
//! the chaos suite make on it — kill -9 a node, start it again from its data dir, and watch
//! which node owns the VIP — so both drive a cluster the same way.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Lab, LabError, LabFarm, LabProcess, LabSpec, NodeOptions, scrape};

/// A lab running every node as one Raft cluster, plus its backends and clients.
#[derive(Debug)]
pub struct ClusterLab {
    /// `procs[i]` runs node `i`; `None` while it is down. Declared first so the nodes are
    /// killed and reaped before the lab removes their namespaces.
    pub procs: Vec<Option<LabProcess>>,
    pub lab: Lab,
    /// The farms of every node's config.
    pub farms: Vec<LabFarm>,
    /// Nodes started as witnesses (they vote, never own).
    pub witnesses: Vec<usize>,
    dsrlb: PathBuf,
}

impl ClusterLab {
    /// Builds the lab of `spec`, starts its backends with `dsrlb lab-backend` and its nodes
    /// as one cluster, and waits until exactly one node owns the VIP with every backend up
    /// everywhere.
    pub fn start(
        spec: &LabSpec,
        dsrlb: &Path,
        farms: &[LabFarm],
        witnesses: &[usize],
    ) -> Result<ClusterLab, LabError> {
        let mut lab = Lab::build(spec)?;
        lab.start_backends(dsrlb)?;
        let procs = lab.start_cluster(dsrlb, farms, witnesses)?;
        Ok(ClusterLab {
            procs: procs.into_iter().map(Some).collect(),
            lab,
            farms: farms.to_vec(),
            witnesses: witnesses.to_vec(),
            dsrlb: dsrlb.to_path_buf(),
        })
    }

    /// The `dsrlb` binary the nodes run.
    pub fn dsrlb(&self) -> &Path {
        &self.dsrlb
    }

    /// The one node that owns the VIP, waiting up to `limit` for exactly one. Says so on
    /// stderr when a scrape saw no owner or several first: on a loaded machine a lease can
    /// lapse for a moment, and that is worth seeing in the output.
    pub fn sole_owner(&self, limit: Duration) -> Result<usize, LabError> {
        let mut seen = Vec::new();
        let one = wait_for(limit, || {
            let owners = self.lab.owners();
            match owners.as_slice() {
                [one] => Some(*one),
                _ => {
                    seen.push(owners);
                    None
                }
            }
        });
        if !seen.is_empty() {
            eprintln!("sole_owner: scrapes before one owner showed {seen:?}");
        }
        one.ok_or_else(|| LabError::NotReady {
            name: "a single VIP owner".into(),
            waited: limit,
            detail: format!("scrapes showed {seen:?}"),
        })
    }

    /// kill -9 node `i` and reap it; the instant just before the signal.
    pub fn kill(&mut self, i: usize) -> Result<Instant, LabError> {
        let mut p = self.take_running(i)?;
        let at = Instant::now();
        p.kill()?;
        Ok(at)
    }

    /// Takes node `i`'s process out of the cluster's hands (to stop it some other way, e.g.
    /// SIGTERM and a wait); the node counts as down from now on.
    pub fn take_running(&mut self, i: usize) -> Result<LabProcess, LabError> {
        self.procs
            .get_mut(i)
            .and_then(Option::take)
            .ok_or_else(|| LabError::Spec(format!("node {i} is not running")))
    }

    /// Starts node `i` again from its data dir, with `farms` in its config.
    pub fn restart_with(&mut self, i: usize, farms: &[LabFarm]) -> Result<(), LabError> {
        match self.procs.get(i) {
            None => return Err(LabError::Spec(format!("no node {i}"))),
            Some(Some(_)) => return Err(LabError::Spec(format!("node {i} still runs"))),
            Some(None) => {}
        }
        let opts = NodeOptions {
            witness: self.witnesses.contains(&i),
            ..NodeOptions::default()
        };
        let p = self.lab.spawn_node(i, &self.dsrlb, farms, &opts)?;
        self.procs[i] = Some(p);
        Ok(())
    }

    /// Starts node `i` again from its data dir with the original config.
    pub fn restart(&mut self, i: usize) -> Result<(), LabError> {
        let farms = self.farms.clone();
        self.restart_with(i, &farms)
    }

    /// Indexes of the nodes whose process runs (frozen ones included).
    pub fn running(&self) -> Vec<usize> {
        (0..self.procs.len())
            .filter(|&i| self.procs[i].is_some())
            .collect()
    }

    /// The node whose interface has `mac`.
    pub fn node_of_mac(&self, mac: super::MacAddr) -> Option<usize> {
        self.lab.nodes().iter().position(|n| n.mac == mac)
    }

    /// Logs of every running node (tails), for failure messages.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .enumerate()
            .map(|(i, p)| match p {
                Some(p) => format!("--- node {i} ---\n{}", p.log_tail(15)),
                None => format!("--- node {i}: down ---"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The nodes among `among` whose metrics say they own the VIP. Only those are scraped:
    /// a frozen (SIGSTOP) node accepts the connection and then answers nothing, and a scrape
    /// of it would block for the client's whole I/O timeout.
    pub fn owners_among(&self, among: &[usize]) -> Vec<usize> {
        among
            .iter()
            .copied()
            .filter(|&i| {
                scrape(&self.lab.nodes()[i]).is_ok_and(|m| m.get("dsrlb_vip_owner", &[]) == 1.0)
            })
            .collect()
    }

    /// Waits until exactly one node among `among` owns the VIP (nodes outside `among` are
    /// not looked at).
    pub fn wait_owner(&self, among: &[usize], limit: Duration) -> Option<usize> {
        wait_for(limit, || match self.owners_among(among).as_slice() {
            [one] => Some(*one),
            _ => None,
        })
    }

    /// Waits until one node owns the VIP and every running node reports the same term.
    pub fn wait_converged(&self, limit: Duration) -> Option<(usize, f64)> {
        wait_for(limit, || {
            let owners = self.lab.owners();
            let [owner] = owners.as_slice() else {
                return None;
            };
            let mut terms = Vec::new();
            for (i, p) in self.procs.iter().enumerate() {
                if p.is_some() {
                    terms.push(
                        scrape(&self.lab.nodes()[i])
                            .ok()?
                            .get("dsrlb_raft_term", &[]),
                    );
                }
            }
            let first = *terms.first()?;
            terms.iter().all(|t| *t == first).then_some((*owner, first))
        })
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
