//! The `dsrlb run` daemon: checks the host, joins the Raft cluster, keeps the forwarding
//! table in step with the replicated state on every node (hot standby), owns the VIPs while
//! it leads under a fresh quorum lease, and runs health checks while it leads.
//!
//! Every node also serves the admin API (`admin`) on `[admin] listen`; it is stopped before
//! the cluster member so that the member's handle is the daemon's alone at shutdown.
//!
//! One loop reacts to four things: the replicated state (rebuild the table; restart the
//! checks if the checked set changed), Raft metrics (leadership, term, quorum ack), learned
//! MACs (rebuild the table), and a short tick that re-judges ownership, because a lease runs
//! out without any event. Shutdown drops ownership first (no more ARP answers, no more
//! forwarding), then hands Raft leadership over, then stops the workers.

use crate::config::{ClusterConfig, Config};
use crate::health::{CheckLog, CheckTarget, HealthChecker, VerdictChange};
use crate::metrics::{self, NodeMetrics};
use crate::ownership::{self, Arbiter, Grant, Inputs, Ownership, SegmentInputs, Transition};
use crate::persist::{self, DatapathSink, PersistMetrics};
use crate::preflight::{self, HostFacts};
use crate::segment::{SegmentGate, SegmentWatch, claimed_since};
use crate::tables;
use anyhow::Context;
use cluster::{ClusterNode, ClusterSettings, ClusterState, Command, ServerState, Verdict};
use datapath::{
    Datapath, DatapathConfig, MacAddr, MacResolver, ProcessorConfig, Shared, instant_ns,
};
use proto::listener::GuardedListener;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, error, info, info_span, warn};

/// How often learned MACs are compared with the table's and ownership is re-judged. Short:
/// a lease (120 ms by default) must be noticed to expire well within its length.
const TICK: Duration = Duration::from_millis(10);

/// Raises this process's open-file soft limit to its hard limit (systemd's default soft
/// limit is 1024, its hard limit far higher), so idle connections to the listeners run out
/// the hard limit, not the soft one, before health checks and the datapath run short.
/// Returns the (soft, hard) limits now in force.
pub fn raise_fd_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the hard one needs
        // no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Runs a node until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let span = info_span!("node", id = config.node_id);
    run_inner(config, None, shutdown).instrument(span).await
}

/// [`run`], reloading what it can from `path` on SIGHUP (`reload`).
pub async fn run_reloading(
    config: Config,
    path: std::path::PathBuf,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let span = info_span!("node", id = config.node_id);
    run_inner(config, Some(path), shutdown)
        .instrument(span)
        .await
}

async fn run_inner(
    config: Config,
    reload_from: Option<std::path::PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // First of all: SIGHUP's default action ends the process, and a reload must never.
    let hangups = match reload_from {
        Some(path) => {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some((path, s)),
                Err(e) => {
                    warn!(error = %e, "cannot handle SIGHUP: no reload");
                    None
                }
            }
        }
        None => None,
    };
    for why in config.warnings() {
        warn!("config: {why}");
    }
    let facts = HostFacts::gather(&config.datapath.interface)
        .context("reading interface and sysctl facts")?;
    let approved = preflight::check(&config, &facts)?;
    let iface = datapath::InterfaceInfo::lookup(&config.datapath.interface)?;
    info!(
        interface = %config.datapath.interface,
        mac = %approved.mac,
        ip = %approved.own_ip,
        "host checks passed"
    );

    let workers = datapath::resolve_workers(config.datapath.workers);
    let shared = Shared::new(workers, approved.mac);
    let persist_metrics = Arc::new(PersistMetrics::default());
    let node_metrics = Arc::new(NodeMetrics::new(shared.clone(), persist_metrics.clone()));
    let check_log = Arc::new(CheckLog::default());
    // Routes a killed predecessor's via_vip checks left (docs/design.md#health).
    match crate::vippath::clean() {
        Ok(0) => {}
        Ok(n) => info!(
            rules = n,
            "removed via_vip check routes left by an earlier run"
        ),
        Err(e) => tracing::debug!(error = %e, "no via_vip routes looked for"),
    }
    node_metrics.set_check_log(check_log.clone());

    // docs/design.md#binaries: every file is read and every listener bound before Raft and
    // the datapath start, so a missing token or a port in use stops the node with nothing
    // started — no election won, no gratuitous ARP sent.
    let admin_token =
        crate::admin::AdminToken::new(read_token("admin.token_file", &config.admin_token_file)?);
    let cluster_token = match &config.cluster.token_file {
        Some(path) => Some(read_token("cluster.token_file", path)?),
        None => None,
    };
    let mut settings = cluster_settings(config.node_id, &config.data_dir, &config.cluster)?;
    if !config.cluster.witness {
        settings.datapath_mac = approved.mac.to_string();
    }
    let metrics_token = match &config.metrics.token_file {
        Some(path) => Some(read_token("metrics.token_file", path)?),
        None => None,
    };
    let admin_listener = GuardedListener::new(
        bind("admin.listen", config.admin_listen).await?,
        "admin",
        config.admin_limits,
    );
    node_metrics.add_listener("admin", admin_listener.stats());
    let metrics_listener = match config.metrics_listen {
        Some(addr) => {
            let l = GuardedListener::new(
                bind("metrics.listen", addr).await?,
                "metrics",
                config.metrics.limits,
            );
            node_metrics.add_listener("metrics", l.stats());
            Some(l)
        }
        None => None,
    };
    let peer_listener = ClusterNode::bind(config.cluster.listen)
        .await
        .context("cluster.listen")?;
    let sink = Arc::new(DatapathSink::new(shared.clone(), persist_metrics.clone()));
    settings.pin_sink = sink.clone();
    // docs/design.md#pair-segment: every peer call goes through the gate first.
    let gate = config
        .cluster
        .segment
        .map(|_| Arc::new(SegmentGate::new(shared.clone())));
    if let Some(gate) = &gate {
        settings.peer_contact = gate.clone();
        let _ = node_metrics.segment().released_by_peer.set(gate.clone());
    }
    let cluster = Arc::new(
        ClusterNode::start_on(settings, config.farms.clone(), Some(peer_listener))
            .await
            .context("starting the cluster member")?,
    );
    node_metrics.set_pins(cluster.pins());
    node_metrics.set_raft(cluster.raft_metrics());
    node_metrics.add_listener("peer", cluster.peer_listener());
    info!(
        members = config.cluster.members.len(),
        witness = config.cluster.witness,
        "cluster member started"
    );

    let resolver = MacResolver::start(&iface, approved.own_ip)?;
    // A gratuitous ARP round that falls due after the lease ran out (the node was frozen)
    // must not go out: it would claim the VIP for a node that no longer owns it.
    resolver.announce_only_while_owner(shared.clone());
    // Jobs started by a takeover or a new VIP then keep announcing until release (which
    // cancels them) or the VIP's removal (which withdraws it).
    resolver.set_garp_refresh(config.datapath.garp_refresh);
    node_metrics.set_resolver(resolver.stats_reader());
    // docs/design.md#arp-flux: every datapath node asks, so each one's Status shows the
    // conflicts (a wrong answer goes to the asker alone).
    node_metrics.set_flux(resolver.handle());
    let flux = (!config.cluster.witness).then(|| {
        resolver.ask_for_vips(true);
        crate::flux::spawn(
            cluster.clone(),
            resolver.handle(),
            shared.clone(),
            approved.mac,
        )
    });
    let datapath = Datapath::start(
        DatapathConfig {
            interface: config.datapath.interface.clone(),
            workers,
            ring_slots: config.datapath.ring_slots,
            processor: ProcessorConfig {
                flow_capacity: config.datapath.flow_capacity,
                // Bounded to a day by the config; saturate rather than wrap all the same.
                flow_idle_ns: u64::try_from(config.datapath.flow_idle.as_nanos())
                    .unwrap_or(u64::MAX),
                tcp_strict_grace_ns: u64::try_from(config.datapath.tcp_strict_grace.as_nanos())
                    .unwrap_or(u64::MAX),
                // The datapath sets the share of the workers it starts.
                ..ProcessorConfig::default()
            },
            io: config.datapath.io,
            fast_path: config.datapath.fast_path,
        },
        shared.clone(),
    )?;
    node_metrics.set_io(datapath.backend(), datapath.fast_path());
    info!(
        workers,
        io = datapath.backend().as_str(),
        io_mode = datapath.backend().mode(),
        fast_path = datapath.fast_path(),
        configured = config.datapath.io.as_str(),
        "datapath started"
    );
    let admin_server = crate::admin::serve(
        admin_listener,
        crate::admin::AdminContext {
            cluster: cluster.clone(),
            datapath: shared.clone(),
            net: crate::admin::NetFacts {
                node_addrs: facts.local_addrs.clone(),
                subnets: facts
                    .interface
                    .as_ref()
                    .map(|i| i.nets().collect())
                    .unwrap_or_default(),
            },
            token: admin_token.clone(),
            admin_port: config.admin_listen.port(),
            tls: config.admin_tls.clone(),
            arbiter: node_metrics.arbiter.clone(),
            pair_segment: config.cluster.segment.is_some(),
            check_log: check_log.clone(),
            flux: flux.is_some().then(|| resolver.handle()),
            log_clock: sink.clock(),
        },
    )
    .await?;
    let local_pins = Arc::new(AtomicBool::new(false));
    let batcher = persist::spawn_batcher(
        cluster.clone(),
        shared.clone(),
        persist_metrics,
        local_pins.clone(),
        sink.clone(),
    );
    let pair = match (&gate, config.cluster.segment) {
        (Some(gate), Some(cfg)) => {
            let peer = config
                .cluster
                .members
                .iter()
                .map(|(id, _)| *id)
                .find(|id| *id != config.node_id)
                .context("cluster.pair_arbiter: no peer in cluster.members")?;
            info!(
                peer,
                probe_interval = ?cfg.probe_interval,
                probe_count = cfg.probe_count,
                "pair arbitrated by the datapath segment"
            );
            Some(Pair {
                gate: gate.clone(),
                probe_interval: cfg.probe_interval,
                peer,
                watch: SegmentWatch::new(cfg.probe_count),
                started: Instant::now(),
                silence: config
                    .cluster
                    .lease
                    .saturating_sub(TICK * 2)
                    .max(config.cluster.lease / 2),
                silent: false,
                probing: false,
            })
        }
        _ => None,
    };
    let reloader = hangups.map(|(path, signal)| {
        tokio::spawn(
            crate::reload::Reloader {
                path,
                running: config.clone(),
                admin_token,
                state: cluster.state(),
                cluster_token,
            }
            .serve(signal)
            .in_current_span(),
        )
    });
    let metrics_server = match metrics_listener {
        Some(listener) => {
            let m = node_metrics.clone();
            let p = node_metrics.clone();
            let ready = metrics::raft_readiness(cluster.raft_metrics(), move || {
                if p.published.load(Ordering::Acquire) {
                    Ok(())
                } else {
                    Err("no forwarding table of the cluster's farms published yet".into())
                }
            });
            Some(
                metrics::serve(
                    listener,
                    Arc::new(move || m.render()),
                    ready,
                    metrics_token.clone(),
                )
                .await?,
            )
        }
        None => None,
    };

    let mut node = Node {
        config: &config,
        cluster: &cluster,
        shared: &shared,
        metrics: &node_metrics,
        resolver: &resolver,
        state: cluster.state().borrow().clone(),
        specs: tables::Specs::default(),
        ownership: Ownership::default(),
        inputs: Inputs {
            is_leader: false,
            last_quorum_ack: None,
            lease: config.cluster.lease,
            witness: config.cluster.witness,
            stopping: false,
            handing_over: false,
            sole_voter: false,
            segment: None,
        },
        checker: None,
        check_targets: Vec::new(),
        writes: JoinSet::new(),
        verdicts: None,
        pending_verdicts: Vec::new(),
        verdict_in_flight: Arc::new(AtomicBool::new(false)),
        check_log: check_log.clone(),
        vip_paths: None,
        pair,
        grant: None,
        owned_since: None,
        last_judge: Instant::now(),
        local_health: BTreeMap::new(),
        local_pins,
        sink,
    };
    let result = node.run(shutdown).await;

    if let Some(task) = reloader {
        task.abort();
    }
    if let Some(task) = flux {
        task.abort();
        // It holds the cluster member, which is unwrapped below.
        let _ = task.await;
    }
    info!("shutting down: releasing VIPs");
    crate::notify::stopping();
    node.release();
    if let Some(checker) = node.checker.take() {
        checker.stop().await;
    }
    if node.vip_paths.take().is_some()
        && let Err(e) = crate::vippath::clean()
    {
        warn!(error = %e, "could not remove the via_vip check routes");
    }
    node.writes.shutdown().await;
    drop(node);
    batcher.abort();
    // Its handle on the cluster member must be gone before the member is unwrapped below.
    let _ = batcher.await;
    admin_server.stop().await;
    match Arc::try_unwrap(cluster) {
        Ok(cluster) => {
            if let Err(e) = cluster.shutdown().await {
                warn!(error = %e, "cluster member did not shut down cleanly");
            }
        }
        Err(_) => warn!("cluster member still referenced; stopping without a handover"),
    }
    datapath.stop();
    resolver.stop();
    if let Some(server) = metrics_server {
        server.abort();
    }
    info!("stopped");
    result
}

/// The cluster member's settings from the config file.
pub(crate) fn cluster_settings(
    node_id: u64,
    data_dir: &str,
    c: &ClusterConfig,
) -> anyhow::Result<ClusterSettings> {
    let token = match &c.token_file {
        Some(path) => read_token("cluster.token_file", path)?,
        // A cluster of one talks to no peer; a random token keeps its listener closed.
        None => random_token().context("generating a token for a cluster of one")?,
    };
    let mut s = ClusterSettings::new(node_id, data_dir.into(), c.listen, token);
    s.advertise = c.advertise;
    s.members = c.members.clone();
    s.heartbeat = c.heartbeat;
    s.election_timeout = c.election_timeout;
    s.vip_lease = c.lease;
    s.witness = c.witness;
    s.tls = c.tls.clone();
    s.shared = c.shared.clone();
    s.version = buildinfo::short();
    s.peer_limits = c.peer_limits;
    Ok(s)
}

/// Binds a listener of the config's `key`, naming the key and address when it cannot.
pub(crate) async fn bind(key: &str, addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("{key} {addr}: cannot listen"))
}

fn read_token(key: &str, path: &str) -> anyhow::Result<String> {
    Ok(crate::config::read_token(key, path)?)
}

fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What woke the control loop.
enum Wake {
    /// The replicated state changed (`false`: the cluster member stopped).
    State(bool),
    /// Raft metrics changed (`false`: the cluster member stopped).
    Metrics(bool),
    Verdict(VerdictChange),
    WriteDone,
    Tick,
}

/// A pair arbitrated by the segment: what the control loop keeps between judgements.
struct Pair {
    gate: Arc<SegmentGate>,
    probe_interval: Duration,
    /// The other member's id: of two segment owners, the higher id yields.
    peer: u64,
    watch: SegmentWatch,
    /// Counts as the last contact until the peer is first heard (as the elector does).
    started: Instant,
    /// How long without a peer call or a quorum ack makes the peer silent: the lease, less
    /// two loop turns, so that an owner whose quorum ends with its peer is judged under the
    /// segment before its quorum deadline passes (no gap in its ARP answers).
    silence: Duration,
    /// The peer was silent at the last judgement (logged on change).
    silent: bool,
    /// The ARP thread is probing the segment.
    probing: bool,
}

/// The running node's control loop and what it acts on.
struct Node<'a> {
    config: &'a Config,
    cluster: &'a Arc<ClusterNode>,
    shared: &'a Arc<Shared>,
    metrics: &'a NodeMetrics,
    resolver: &'a MacResolver,
    state: Arc<ClusterState>,
    /// The farms' datapath specs, with the MACs learned by ARP they are made with.
    specs: tables::Specs,
    ownership: Ownership,
    inputs: Inputs,
    checker: Option<HealthChecker>,
    check_targets: Vec<CheckTarget>,
    /// Verdict commits in flight; aborted on shutdown so the cluster handle is ours again.
    writes: JoinSet<()>,
    /// Where health checkers send verdict changes (set when the loop starts).
    verdicts: Option<mpsc::UnboundedSender<VerdictChange>>,
    /// Verdicts waiting for the commit in flight to end: committed together in one entry.
    pending_verdicts: Vec<VerdictChange>,
    /// Set while a verdict commit is in flight (cleared by its task).
    verdict_in_flight: Arc<AtomicBool>,
    /// Every probe's outcome on this node (admin API, metrics).
    check_log: Arc<CheckLog>,
    /// The routes of the running `via_vip` checks.
    vip_paths: Option<crate::vippath::VipPaths>,
    /// `Some`: `pair_arbiter = "segment"`.
    pair: Option<Pair>,
    /// The arbiter of the current ownership.
    grant: Option<Arbiter>,
    /// When this node last became the owner.
    owned_since: Option<Instant>,
    /// When ownership was last judged: a loop that stalled for a lease is no incumbent.
    last_judge: Instant,
    /// Health verdicts of a segment owner that could not be committed: applied on top of
    /// the replicated ones until the log rules again.
    local_health: BTreeMap<(String, String), bool>,
    /// Tells the persistence batcher to apply pins locally (segment ownership).
    local_pins: Arc<AtomicBool>,
    sink: Arc<DatapathSink>,
}

impl Node<'_> {
    async fn run(&mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut state_rx = self.cluster.state();
        let mut metrics_rx = self.cluster.raft_metrics();
        let (verdict_tx, mut verdict_rx) = mpsc::unbounded_channel::<VerdictChange>();
        self.verdicts = Some(verdict_tx.clone());
        self.state = state_rx.borrow_and_update().clone();
        self.on_state(&verdict_tx)?;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When the loop last looked for new Raft metrics. A value read now was published
        // after that moment (or it would have been read then), so its quorum-ack age is
        // counted from there: after a stop (SIGSTOP, starvation) a value published before the
        // stop cannot pass for fresh, and in normal running the cost is one loop turn.
        let mut looked_at = Instant::now();
        tokio::pin!(shutdown);
        loop {
            let wake = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                changed = state_rx.changed() => Wake::State(changed.is_ok()),
                changed = metrics_rx.changed() => Wake::Metrics(changed.is_ok()),
                Some(change) = verdict_rx.recv() => Wake::Verdict(change),
                Some(_) = self.writes.join_next(), if !self.writes.is_empty() => Wake::WriteDone,
                _ = tick.tick() => Wake::Tick,
            };
            let now = Instant::now();
            // Metrics are read on every wake-up, whatever won the race, so that `looked_at`
            // really bounds their age. (`changed()` winning has already marked them seen.)
            let fresh = match (&wake, metrics_rx.has_changed()) {
                (Wake::Metrics(true), _) | (_, Ok(true)) => true,
                (_, Ok(false)) => false,
                (_, Err(_)) => anyhow::bail!("the cluster member stopped"),
            };
            if fresh {
                let m = metrics_rx.borrow_and_update().clone();
                self.on_metrics(&m, looked_at, &verdict_tx);
            }
            looked_at = now;
            match wake {
                Wake::State(ok) => {
                    if !ok {
                        anyhow::bail!("the cluster member stopped");
                    }
                    self.state = state_rx.borrow_and_update().clone();
                    self.on_state(&verdict_tx)?;
                }
                Wake::Metrics(ok) => {
                    if !ok {
                        anyhow::bail!("the cluster member stopped");
                    }
                }
                Wake::Verdict(change) => {
                    self.pending_verdicts.push(change);
                    while let Ok(more) = verdict_rx.try_recv() {
                        self.pending_verdicts.push(more);
                    }
                    self.commit_verdicts();
                }
                Wake::WriteDone => self.commit_verdicts(),
                Wake::Tick => self.poll_learned()?,
            }
            self.judge(Instant::now());
        }
    }

    /// New replicated state: rebuild the table, refresh ARP targets, and (on the leader)
    /// restart the checks if the set of checked backends changed.
    fn on_state(&mut self, verdicts: &mpsc::UnboundedSender<VerdictChange>) -> anyhow::Result<()> {
        self.publish()?;
        if self.inputs.is_leader {
            self.restart_checks(verdicts, false);
        }
        Ok(())
    }

    /// New Raft metrics, published no earlier than `published_after`.
    fn on_metrics(
        &mut self,
        m: &cluster::RaftMetrics,
        published_after: Instant,
        verdicts: &mpsc::UnboundedSender<VerdictChange>,
    ) {
        let leader =
            m.state == ServerState::Leader && m.current_leader == Some(self.config.node_id);
        if leader != self.inputs.is_leader {
            info!(term = m.current_term, leader, "raft role changed");
            self.inputs.is_leader = leader;
            self.restart_checks(verdicts, true);
        }
        let voters = m.membership_config.membership().voter_ids().count();
        self.inputs.sole_voter = voters == 1;
        self.inputs.last_quorum_ack = match (leader, m.millis_since_quorum_ack) {
            (true, Some(ms)) => published_after.checked_sub(Duration::from_millis(ms)),
            _ => None,
        };
    }

    /// Applies the ownership decision: extends or ends the datapath's lease, and acts once
    /// on each transition.
    fn judge(&mut self, now: Instant) {
        self.inputs.handing_over = self.cluster.is_handing_over();
        let grant = match self.pair.is_some() {
            false => {
                let g = ownership::decide(&self.inputs, now);
                self.extend(g);
                g
            }
            true => self.judge_pair(now),
        };
        self.last_judge = now;
        let by = grant.map(|g| g.by);
        match self.ownership.update(grant.is_some()) {
            Some(Transition::Acquired) => {
                let vips: Vec<IpAddr> = self.shared.table.load().vips().collect();
                self.metrics.takeovers.fetch_add(1, Ordering::Relaxed);
                self.owned_since = Some(now);
                info!(term = self.cluster.raft_metrics().borrow().current_term, arbiter = by.map_or("", Arbiter::as_str), vips = ?vips, "VIP owner: announcing and forwarding");
                self.resolver.send_garp(
                    &vips,
                    self.config.datapath.garp_count,
                    self.config.datapath.garp_interval,
                );
            }
            Some(Transition::Released) => {
                self.shared.set_owner(false);
                self.resolver.cancel_garp();
                self.owned_since = None;
                info!(
                    leader = self.inputs.is_leader,
                    "VIP ownership released: no more ARP answers or forwarding"
                );
            }
            None => {
                if let (Some(old), Some(new)) = (self.grant, by)
                    && old != new
                {
                    info!(
                        from = old.as_str(),
                        to = new.as_str(),
                        "VIP ownership now granted by another arbiter"
                    );
                }
            }
        }
        if by != self.grant {
            let (was, is) = (self.grant, by);
            self.grant = by;
            self.metrics.arbiter.set(by);
            self.on_arbiter_change(was, is);
        }
    }

    /// Sets the datapath's deadline from a grant (a release is the transition's to make).
    fn extend(&self, grant: Option<Grant>) {
        if let Some(g) = grant {
            match g.until {
                Some(deadline) => self.shared.own_until(instant_ns(deadline)),
                None => self.shared.set_owner(true),
            }
        }
    }

    /// The decision of a pair arbitrated by the segment, made and applied under the gate's
    /// lock, so a peer call is either seen here or ends what is granted here.
    fn judge_pair(&mut self, now: Instant) -> Option<Grant> {
        let was_owner = self.ownership.is_owner();
        let stalled = now.saturating_duration_since(self.last_judge) >= self.inputs.lease;
        let ev = self.resolver.segment_evidence();
        let pair = self.pair.as_mut()?;
        let gate_arc = pair.gate.clone();
        let mut gate = gate_arc.lock();
        let contact = [
            gate.last_contact,
            self.inputs.last_quorum_ack,
            Some(pair.started),
        ]
        .into_iter()
        .flatten()
        .max();
        let silent = contact.is_none_or(|c| now.saturating_duration_since(c) >= pair.silence);
        pair.watch.observe(
            &ev,
            silent && !was_owner,
            self.config.node_id > pair.peer,
            now,
        );
        let yields = was_owner
            && self.config.node_id > pair.peer
            && self.owned_since.is_some_and(|t| claimed_since(&ev, t));
        self.inputs.segment = Some(SegmentInputs {
            peer_silent: silent,
            incumbent: was_owner && !stalled,
            clear: pair.watch.clear(&ev),
            yields,
        });
        let grant = ownership::decide(&self.inputs, now);
        // Also when a quorum grant is extended by the segment: the part beyond the quorum
        // lease is the segment's, and a peer call must end it.
        let segment_owner = grant.is_some() && self.inputs.segment.is_some_and(|s| s.grants());
        gate.segment_owner = segment_owner;
        if let Some(g) = grant {
            match g.until {
                Some(deadline) => self.shared.own_until(instant_ns(deadline)),
                None => self.shared.set_owner(true),
            }
        }
        drop(gate);
        let probe = silent || segment_owner;
        if probe != pair.probing {
            pair.probing = probe;
            self.resolver
                .probe_vips(probe.then_some(pair.probe_interval));
        }
        if silent != pair.silent {
            pair.silent = silent;
            if silent {
                warn!(
                    peer = pair.peer,
                    "peer silent on the control plane: probing the segment for the VIPs"
                );
            } else {
                info!(peer = pair.peer, "peer heard again on the control plane");
            }
        }
        if let Some(m) = self.metrics.segment_opt() {
            m.peer_silent.store(silent, Ordering::Relaxed);
            if yields && self.grant == Some(Arbiter::Segment) && grant.is_none() {
                m.yields.fetch_add(1, Ordering::Relaxed);
            }
        }
        if yields && self.grant == Some(Arbiter::Segment) && grant.is_none() {
            warn!(
                peer = pair.peer,
                claimed_by = ?ev.last_claim.map(|(_, mac)| mac.to_string()),
                "another owner of the VIPs on the segment has the higher priority: yielding"
            );
        }
        grant
    }

    /// Entering or leaving ownership without a quorum: local overlays on, or dropped so
    /// the log rules again (docs/design.md#pair-segment).
    fn on_arbiter_change(&mut self, was: Option<Arbiter>, is: Option<Arbiter>) {
        let segment = is == Some(Arbiter::Segment);
        if segment == (was == Some(Arbiter::Segment)) {
            return;
        }
        self.local_pins.store(segment, Ordering::Relaxed);
        if segment {
            warn!(
                "no quorum: the peer is down; owning by the segment: health verdicts and \
                 persistence pins apply on this node only, admin writes are refused"
            );
        } else {
            info!("segment ownership over: local verdicts and pins dropped, the log rules again");
            self.sink.resync(&self.cluster.pins());
            if !self.local_health.is_empty() {
                self.local_health.clear();
                if let Err(e) = self.publish() {
                    error!(error = %e, "could not rebuild the forwarding table");
                }
            }
        }
        if let Some(tx) = self.verdicts.clone() {
            self.restart_checks(&tx, false);
        }
    }

    fn release(&mut self) {
        self.inputs.stopping = true;
        self.judge(Instant::now());
        self.shared.set_owner(false);
    }

    fn poll_learned(&mut self) -> anyhow::Result<()> {
        let now: HashMap<IpAddr, MacAddr> = self.resolver.learned().into_iter().collect();
        let learned = self.specs.learned();
        if now == *learned {
            return Ok(());
        }
        for (ip, mac) in &now {
            if learned.get(ip) != Some(mac) {
                info!(%ip, %mac, "backend MAC learned");
            }
        }
        for ip in learned.keys().filter(|ip| !now.contains_key(ip)) {
            warn!(%ip, "backend MAC forgotten (no ARP answer)");
        }
        self.specs.set_learned(now);
        self.publish()
    }

    /// Rebuilds the forwarding table from the current state and swaps it in.
    fn publish(&mut self) -> anyhow::Result<()> {
        let overlaid;
        let state: &ClusterState = if self.local_health.is_empty() {
            &self.state
        } else {
            let mut s = (*self.state).clone();
            for ((farm, backend), up) in &self.local_health {
                s.health
                    .entry(farm.clone())
                    .or_default()
                    .insert(backend.clone(), *up);
            }
            overlaid = s;
            &overlaid
        };
        let started = Instant::now();
        let prev = self.shared.table.load();
        let table = prev
            .rebuild(
                self.specs.update(state, &self.shared.pins),
                &self.shared.counters,
            )
            .context("building the forwarding table")?;
        if let Some(targets) = self.specs.take_arp_targets() {
            self.resolver.set_targets(targets);
        }
        // Most changes keep the VIPs: nothing to announce, withdraw or watch.
        let vips_changed = !prev.same_vips(&table);
        // The ARP-flux watch and the pair's segment probes speak ARP: IPv4 VIPs only; the
        // IPv6 ones get their solicited-node groups joined.
        let (added, removed, v4, v6) = if vips_changed {
            let before: HashSet<IpAddr> = prev.vips().collect();
            let after: HashSet<IpAddr> = table.vips().collect();
            // In the table's order, so new VIPs are announced first farms first.
            let added: Vec<IpAddr> = table.vips().filter(|v| !before.contains(v)).collect();
            let removed: Vec<IpAddr> = before.difference(&after).copied().collect();
            let v4: Vec<Ipv4Addr> = table.vips4().collect();
            let v6: Vec<std::net::Ipv6Addr> = table.vips6().collect();
            (added, removed, v4, v6)
        } else {
            Default::default()
        };
        let rebuilt = table.rebuilt_farms();
        let farms = table.farm_count();
        self.shared.publish(table);
        debug!(
            farms,
            rebuilt,
            took_us = started.elapsed().as_micros() as u64,
            "forwarding table published"
        );
        // Ready once the table holds the cluster's farms: a state not yet bootstrapped (a
        // fresh cluster before its Bootstrap entry applies, a joining node before the log
        // reaches it) publishes an empty table that promises nothing.
        if self.state.bootstrapped && !self.metrics.published.swap(true, Ordering::AcqRel) {
            // Every listener was bound before the node started running: this is the moment
            // the node is of use, and the one a service manager waits for.
            crate::notify::ready(&format!("{farms} farm(s), forwarding table published"));
        }
        if vips_changed {
            self.resolver.join_vip_groups(&v6);
            self.resolver.set_flux_vips(v4.clone());
            if self.pair.is_some() {
                self.resolver.watch_vips(v4);
            }
        }
        // A removed VIP's remaining rounds (and refresh) would draw its traffic here only to
        // be dropped as `not_vip`.
        self.resolver.withdraw_garp(&removed);
        // A VIP that appears while we own the VIPs is announced like a takeover's.
        if self.ownership.is_owner() && !added.is_empty() {
            info!(vips = ?added, "announcing new VIPs");
            self.resolver.send_garp(
                &added,
                self.config.datapath.garp_count,
                self.config.datapath.garp_interval,
            );
        }
        Ok(())
    }

    /// Health checks run on the leader only; their targets follow the replicated farms.
    fn restart_checks(&mut self, verdicts: &mpsc::UnboundedSender<VerdictChange>, force: bool) {
        let checking = self.inputs.is_leader || self.grant == Some(Arbiter::Segment);
        let mut targets = if checking && !self.inputs.witness {
            check_targets(&self.state)
        } else {
            Vec::new()
        };
        let same_set = targets.len() == self.check_targets.len()
            && targets
                .iter()
                .zip(&self.check_targets)
                .all(|(a, b)| a.key == b.key && a.addr == b.addr && a.check == b.check);
        if same_set && !force {
            return;
        }
        if let Some(old) = self.checker.take() {
            // Aborting is immediate; the tasks hold nothing that needs an orderly stop.
            tokio::spawn(old.stop());
        }
        self.set_vip_paths(&mut targets);
        if !targets.is_empty() {
            info!(
                backends = targets.len(),
                "health checks running on this leader"
            );
            self.checker = Some(HealthChecker::start(
                targets.clone(),
                verdicts.clone(),
                self.check_log.clone(),
            ));
        }
        let keys: std::collections::HashSet<_> = targets.iter().map(|t| t.key.clone()).collect();
        self.check_log.retain(|k| keys.contains(k));
        self.check_targets = targets;
    }

    /// Sets up the routes of the `via_vip` checks among `targets` (replacing the previous
    /// ones) and gives each its socket mark; removes them when no target needs them. A node
    /// that cannot set them up runs those checks as "not run" (its own fault, logged).
    fn set_vip_paths(&mut self, targets: &mut [CheckTarget]) {
        // The VIP paths are IPv4 policy routes; an IPv6 target is never `via_vip`
        // (`check_targets`).
        let via: Vec<Ipv4Addr> = targets
            .iter()
            .filter(|t| t.via_vip)
            .filter_map(|t| match t.addr.ip() {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(_) => None,
            })
            .collect();
        if via.is_empty() {
            if self.vip_paths.take().is_some()
                && let Err(e) = crate::vippath::clean()
            {
                warn!(error = %e, "could not remove the via_vip check routes");
            }
            return;
        }
        match crate::vippath::VipPaths::setup(&self.config.datapath.interface, via) {
            Ok(paths) => {
                for t in targets.iter_mut().filter(|t| t.via_vip) {
                    if let IpAddr::V4(ip) = t.addr.ip() {
                        t.mark = paths.mark(ip);
                    }
                }
                info!(backends = paths.len(), "via_vip check routes set up");
                self.vip_paths = Some(paths);
            }
            Err(e) => {
                self.vip_paths = None;
                // Checks that asked for the VIP path cannot run here (not run, never down);
                // those that left it to the node probe the backend's own address instead.
                for t in targets.iter_mut().filter(|t| t.check.via_vip.is_none()) {
                    t.via_vip = false;
                }
                if targets.iter().any(|t| t.via_vip) {
                    error!(error = %e, "via_vip checks cannot run on this node: no route through the VIP");
                } else {
                    warn!(error = %e, "checks probe the backends' own addresses: no route through the VIP here");
                }
            }
        }
    }

    /// Commits the pending verdict changes through the log in one entry, without blocking
    /// the loop, unless a verdict commit is in flight: then they wait for it to end, so a
    /// burst of verdicts (a switch failing under a thousand backends) costs a few entries,
    /// not one each. A segment owner, which cannot commit, applies them on this node only.
    fn commit_verdicts(&mut self) {
        if self.pending_verdicts.is_empty() {
            return;
        }
        if self.grant == Some(Arbiter::Segment) {
            for change in self.pending_verdicts.drain(..) {
                let (farm, backend) = &change.key;
                warn!(%farm, %backend, up = change.up, "no quorum: health verdict applied on this node only");
                self.local_health.insert(change.key, change.up);
            }
            if let Err(e) = self.publish() {
                error!(error = %e, "could not rebuild the forwarding table");
            }
            return;
        }
        if self.verdict_in_flight.swap(true, Ordering::AcqRel) {
            return;
        }
        // The last verdict of a backend wins; order among backends does not matter.
        let mut latest: BTreeMap<(String, String), bool> = BTreeMap::new();
        for change in self.pending_verdicts.drain(..) {
            latest.insert(change.key, change.up);
        }
        let verdicts: Vec<Verdict> = latest
            .into_iter()
            .map(|((farm, backend), up)| Verdict { farm, backend, up })
            .collect();
        let cluster = self.cluster.clone();
        let in_flight = self.verdict_in_flight.clone();
        self.writes.spawn(async move {
            let n = verdicts.len();
            let cmd = match <[Verdict; 1]>::try_from(verdicts) {
                Ok([v]) => Command::SetHealth {
                    farm: v.farm,
                    backend: v.backend,
                    up: v.up,
                },
                Err(many) => Command::SetHealthMany(many),
            };
            if let Err(e) = cluster.write(cmd).await {
                error!(verdicts = n, error = %e, "could not commit health verdicts");
            }
            in_flight.store(false, Ordering::Release);
        });
    }
}

/// Every checked backend of the state, with its replicated verdict.
fn check_targets(state: &ClusterState) -> Vec<CheckTarget> {
    state
        .farms
        .values()
        .filter_map(|farm| farm.check.as_ref().map(|check| (farm, check)))
        .flat_map(|(farm, check)| {
            farm.backends.iter().map(move |b| CheckTarget {
                key: (farm.name.clone(), b.name.clone()),
                addr: crate::health::check_addr(b.ip, farm.port_first, check),
                vip: farm.vip,
                // The VIP paths are IPv4 policy routes (docs/design.md#ipv6): an IPv6
                // backend is checked at its own address.
                via_vip: farm.vip.is_ipv4()
                    && check.via_vip.unwrap_or(matches!(
                        check.kind,
                        cluster::CheckKind::Tcp | cluster::CheckKind::Http(_)
                    )),
                mark: None,
                check: check.clone(),
                verdict: state
                    .health
                    .get(&farm.name)
                    .and_then(|m| m.get(&b.name))
                    .copied(),
            })
        })
        .collect()
}
