//! What `dsrlb-failbench` needs around the measurement: where the `dsrlb` binary is, the
//! timing flags as `[cluster]` lines and read back through the node's own config parser, the
//! report header, and what the node logs say about VIP ownership once the run is over.

use std::path::Path;

use anyhow::Context;
use lab::{BACKEND_HTTP_PORT, Lab, LabFarm, NodeOptions};

use crate::report::{LogCounts, Timing};
use crate::{Args, STEADY_REQUESTS};

/// Counts what the node logs say about ownership: every `dsrlb run` of a node host (restarts
/// included) writes `n<k>-dsrlb-<seq>.log` in the lab dir.
/// With `keep`, the logs are also copied there (a failed copy is counted as unreadable).
pub fn scan_node_logs(dir: &Path, keep: Option<&Path>) -> LogCounts {
    let mut counts = LogCounts::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        counts.unreadable += 1;
        return counts;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with('n') && name.contains("-dsrlb-") && name.ends_with(".log")) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            counts.unreadable += 1;
            continue;
        };
        counts.files += 1;
        if let Some(keep) = keep {
            let copied = std::fs::create_dir_all(keep)
                .and_then(|()| std::fs::write(keep.join(&name), &text));
            if let Err(e) = copied {
                eprintln!("dsrlb-failbench: keeping {name} in {}: {e}", keep.display());
                counts.unreadable += 1;
            }
        }
        for line in text.lines() {
            counts.acquired += usize::from(line.contains("VIP owner: announcing and forwarding"));
            counts.released += usize::from(line.contains("VIP ownership released"));
            counts.stalls += usize::from(line.contains("control loop stalled"));
        }
    }
    counts
}

/// The `[cluster]` lines the timing flags add to every node's config.
pub fn cluster_lines(args: &Args) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(h) = args.heartbeat_ms {
        lines.push(format!("heartbeat_ms = {h}"));
    }
    if let Some((min, max)) = args.election_ms {
        lines.push(format!("election_timeout_ms = [{min}, {max}]"));
    }
    if let Some(l) = args.lease_ms {
        lines.push(format!("lease_ms = {l}"));
    }
    lines
}

/// The timing every node runs with, read back through the node's own config parser, so a
/// bad combination is refused here with the node's message and the report shows what the
/// nodes really used (defaults included).
pub fn read_timing(
    lab: &Lab,
    farms: &[LabFarm],
    opts: &NodeOptions,
    args: &Args,
) -> anyhow::Result<Timing> {
    let text = lab
        .node_config_with(0, farms, opts)
        .context("writing a node config")?;
    let config = node::config::parse(&text).context("the lab's node config with these flags")?;
    let c = &config.cluster;
    Ok(Timing {
        heartbeat: c.heartbeat,
        election: c.election_timeout,
        lease: c.lease,
        garp_count: config.datapath.garp_count,
        garp_interval: config.datapath.garp_interval,
        cluster_lines: cluster_lines(args),
    })
}

pub fn header(args: &Args, shape: crate::Shape, lab: &Lab) -> Vec<String> {
    let (cpus, kernel) = bench::machine();
    let mut lines = vec![
        bench::lab_line("dsrlb-failbench", lab, &format!(":{BACKEND_HTTP_PORT}")),
        format!(
            "outage = signal to the owner -> first GET / answered by a backend through another \
             node (the client's ARP entry for the VIP names neither the old owner before nor \
             after the request); {} probers staggered over the {} ms connect timeout, retrying \
             at once; {} ms for the answer once connected",
            args.probers, args.connect_timeout_ms, args.request_timeout_ms
        ),
        format!(
            "after each sample the old node restarts on its data dir; next sample once one node \
             owns the VIP, every node has both backends up and one term, {} ms more have passed \
             (log catch-up) and {STEADY_REQUESTS} requests through the VIP succeeded",
            args.quiet_ms
        ),
        format!(
            "ARP-level outage = signal -> first reply from another node's MAC to the client's \
             ARP probes for the VIP (one every {} ms, each tagged with its round), as the \
             bridge saw it; gratuitous ARP does not count; measured the same way for dsrlb and \
             keepalived",
            crate::arp::PERIOD.as_millis()
        ),
        format!("cluster: {}", shape.describe()),
        format!("machine: {cpus} CPUs (kernel {kernel}) shared by the nodes, backends and client"),
    ];
    if args.keepalived > 0 {
        lines.push(format!(
            "keepalived anchor: after the dsrlb samples, a fresh lab of the same shape with \
             keepalived --vrrp on every node (VRRPv3, advert_int {} s, priorities {:?} on \
             n1..n3, all BACKUP with nopreempt, max_auto_priority, multicast adverts on eth0, \
             VIP /32 on eth0); \
             a sample = kill -9 of the master's keepalived process group and `ip link set eth0 \
             down` on it at the same instant (a node crash: a killed keepalived leaves the VIP \
             on the interface and its kernel would go on answering ARP), then the stale VIP is \
             removed, the link brought up and keepalived restarted; next sample once one node \
             holds the VIP, the restarted one is in a VRRP state and {} ms have passed",
            crate::keepalived::ADVERT_INT,
            crate::keepalived::PRIORITIES,
            args.quiet_ms
        ));
    }
    lines
}
