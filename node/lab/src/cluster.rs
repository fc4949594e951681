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
    /// A `dsrlb witness` in a backend's namespace, the third member of a pair
    /// ([`ClusterLab::start_pair_with_witness`]); before `lab` for the same reason.
    pub external_witness: Option<ExternalWitness>,
    pub lab: Lab,
    /// The farms of every node's config.
    pub farms: Vec<LabFarm>,
    /// Nodes started as witnesses (they vote, never own).
    pub witnesses: Vec<usize>,
    dsrlb: PathBuf,
}

/// A witness that is not one of the lab's nodes: `dsrlb witness` as user `nobody` in another
/// host, listed in every node's members.
#[derive(Debug)]
pub struct ExternalWitness {
    /// Where it runs (a backend).
    pub host: super::Host,
    /// Its node id (one more than the lab's nodes).
    pub id: u64,
    /// `None` while it is down.
    pub proc: Option<LabProcess>,
}

impl ClusterLab {
    /// Builds the lab of `spec` (two nodes, for a pair), starts its backends, a
    /// `dsrlb witness` in backend `backend`'s namespace and the nodes, with the witness as
    /// their third member; waits until one node owns the VIP with every backend up.
    pub fn start_pair_with_witness(
        spec: &LabSpec,
        dsrlb: &Path,
        farms: &[LabFarm],
        backend: usize,
    ) -> Result<ClusterLab, LabError> {
        let mut lab = Lab::build(spec)?;
        lab.start_backends(dsrlb)?;
        let host = lab
            .backends()
            .get(backend)
            .ok_or_else(|| LabError::Spec(format!("no backend {backend}")))?
            .clone();
        let id = lab.nodes().len() as u64 + 1;
        let witness = lab.spawn_witness(&host, id, dsrlb)?;
        let mut c = ClusterLab {
            procs: Vec::new(),
            external_witness: Some(ExternalWitness {
                host,
                id,
                proc: Some(witness),
            }),
            lab,
            farms: farms.to_vec(),
            witnesses: Vec::new(),
            dsrlb: dsrlb.to_path_buf(),
        };
        let mut procs = Vec::new();
        for i in 0..c.lab.nodes().len() {
            procs.push(c.lab.spawn_node(i, dsrlb, farms, &c.node_options(i))?);
        }
        let all: Vec<usize> = (0..c.lab.nodes().len()).collect();
        c.lab
            .wait_ready(&mut procs, &all, farms, Duration::from_secs(20))?;
        c.procs = procs.into_iter().map(Some).collect();
        Ok(c)
    }

    /// How node `i` is configured: a witness if started as one, the external witness among
    /// its members if there is one.
    fn node_options(&self, i: usize) -> NodeOptions {
        NodeOptions {
            witness: self.witnesses.contains(&i),
            extra_members: self
                .external_witness
                .iter()
                .map(|w| (w.id, w.host.ip))
                .collect(),
            ..NodeOptions::default()
        }
    }

    /// kill -9 the external witness and reap it.
    pub fn kill_witness(&mut self) -> Result<Instant, LabError> {
        let mut p = self
            .external_witness
            .as_mut()
            .and_then(|w| w.proc.take())
            .ok_or_else(|| LabError::Spec("no external witness running".into()))?;
        let at = Instant::now();
        p.kill()?;
        Ok(at)
    }

    /// Starts the external witness again from its data dir.
    pub fn restart_witness(&mut self) -> Result<(), LabError> {
        let w = self
            .external_witness
            .as_mut()
            .ok_or_else(|| LabError::Spec("no external witness".into()))?;
        if w.proc.is_some() {
            return Err(LabError::Spec("the witness still runs".into()));
        }
        w.proc = Some(self.lab.spawn_witness(&w.host, w.id, &self.dsrlb)?);
        Ok(())
    }

    /// Builds the lab of `spec`, starts its backends with `dsrlb lab-backend` and its nodes
    /// as one cluster, and waits until exactly one node owns the VIP with every backend up
    /// everywhere.
    pub fn start(
        spec: &LabSpec,
        dsrlb: &Path,
        farms: &[LabFarm],
        witnesses: &[usize],
    ) -> Result<ClusterLab, LabError> {
        Self::start_in(Lab::build(spec)?, dsrlb, farms, witnesses)
    }

    /// [`ClusterLab::start`] in a lab already built, e.g. with a node's clock faked first
    /// ([`Lab::set_clock_offset`]).
    pub fn start_in(
        mut lab: Lab,
        dsrlb: &Path,
        farms: &[LabFarm],
        witnesses: &[usize],
    ) -> Result<ClusterLab, LabError> {
        lab.start_backends(dsrlb)?;
        let procs = lab.start_cluster(dsrlb, farms, witnesses)?;
        Ok(ClusterLab {
            procs: procs.into_iter().map(Some).collect(),
            external_witness: None,
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
        let p = self
            .lab
            .spawn_node(i, &self.dsrlb, farms, &self.node_options(i))?;
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
            .chain(self.external_witness.iter().map(|w| match &w.proc {
                Some(p) => format!("--- witness {} ---\n{}", w.id, p.log_tail(15)),
                None => format!("--- witness {}: down ---", w.id),
            }))
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
