//! What `dsrlb-persistbench` needs around the measurement: where the `dsrlb` binary is, the
//! node config with the benchmark's flags, the owner's MAC as the client's neighbour table
//! shows it, the machine's load, and the report header.

use std::path::Path;

use anyhow::Context;
use lab::{Lab, LabFarm, MacAddr, NodeOptions};

use crate::{Args, FARMS, FIRST_PORT, TTL};

/// Node `i`'s lab config with the benchmark's options, checked by the node's own parser
/// (it has the last word on what the flags produced).
pub fn node_config(
    lab: &Lab,
    i: usize,
    farms: &[LabFarm],
    opts: &NodeOptions,
) -> anyhow::Result<String> {
    let text = lab
        .node_config_with(i, farms, opts)
        .context("writing a node config")?;
    node::config::parse(&text).context("the lab's node config with the benchmark's flags")?;
    Ok(text)
}

/// What the node logs say about ownership and the batcher, one line per node (each `dsrlb
/// run` writes `n<k>-dsrlb-<seq>.log` in the lab dir); with `keep`, the logs are also copied
/// there. Reading a log is best effort: a failure becomes part of the line.
pub fn scan_node_logs(dir: &Path, keep: Option<&Path>) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![format!("node logs: cannot list {}", dir.display())];
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('n') && n.contains("-dsrlb-") && n.ends_with(".log"))
        .collect();
    names.sort();
    let mut lines = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                lines.push(format!("{name}: unreadable: {e}"));
                continue;
            }
        };
        if let Some(keep) = keep {
            let copied = std::fs::create_dir_all(keep)
                .and_then(|()| std::fs::write(keep.join(&name), &text));
            if let Err(e) = copied {
                lines.push(format!("{name}: not kept in {}: {e}", keep.display()));
            }
        }
        let count = |what: &str| text.lines().filter(|l| l.contains(what)).count();
        lines.push(format!(
            "{name}: VIP acquired {}, released {}, raft role changes {}, batches not \
             committed (warnings) {}, WARN/ERROR lines {}",
            count("VIP owner: announcing and forwarding"),
            count("VIP ownership released"),
            count("raft role changed"),
            count("persistence batch was not committed"),
            text.lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .count()
        ));
    }
    lines
}

/// The MAC of an `ip neigh show` line that has one (`… lladdr 02:… REACHABLE`).
pub fn neighbour_mac(text: &str) -> Option<MacAddr> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next()?.parse().ok()
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| {
            let v: Vec<&str> = t.split_whitespace().take(3).collect();
            (v.len() == 3).then(|| v.join(" "))
        })
        .unwrap_or_else(|| "?".into())
}

pub fn header(args: &Args, lab: &Lab, load: &str) -> Vec<String> {
    let (cpus, kernel) = bench::machine();
    let last_port = FIRST_PORT + FARMS - 1;
    vec![
        bench::lab_line("dsrlb-persistbench", lab, ""),
        format!(
            "{FARMS} UDP farms with persistence = srcip, ttl {TTL}, on ports \
             {FIRST_PORT}-{last_port} over b1-b3; persistence_batch_ms {}; 2 datapath workers \
             per node",
            args.batch_ms
                .map_or_else(|| "default (50)".into(), |m| m.to_string())
        ),
        format!(
            "load: one 60-byte UDP datagram per new (farm, client) pair from spoofed sources in \
             198.19.0.0/16 and 198.18.1.0-198.18.255.255 (raw frames to the owner's MAC, \
             paced per ms), {} s per rate; a step is clean with no drop of any kind and every \
             sent pin on both followers within {} ms",
            args.step_seconds, args.settle_ms
        ),
        format!(
            "machine: {cpus} CPUs (kernel {kernel}, load average {load}) shared by the three \
             nodes, the backends and the sender"
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_lines() {
        assert_eq!(
            neighbour_mac("198.18.0.100 dev eth0 lladdr 02:00:00:01:00:11 REACHABLE\n"),
            Some(MacAddr([2, 0, 0, 1, 0, 0x11]))
        );
        assert_eq!(neighbour_mac("198.18.0.100 dev eth0 INCOMPLETE\n"), None);
        assert_eq!(neighbour_mac(""), None);
    }
}
