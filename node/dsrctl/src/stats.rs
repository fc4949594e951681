//! `stats`: rates per second between two samples of the counters (pure), and the table.

use super::cli::Format;
use super::render;
use super::table::Table;
use super::view::StatsView;
use std::time::Duration;

/// `cur` with rates filled in from `prev`, taken `elapsed` earlier. A counter that went
/// down (the node restarted, or a different node answered) has no rate rather than a wrong
/// one; farms and backends are matched by name.
pub fn with_rates(prev: &StatsView, mut cur: StatsView, elapsed: Duration) -> StatsView {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 || prev.node != cur.node {
        return cur;
    }
    let rate = |now: u64, before: u64| now.checked_sub(before).map(|d| d as f64 / secs);
    cur.interval_s = Some(secs);
    for farm in &mut cur.farms {
        let Some(pf) = prev.farms.iter().find(|f| f.name == farm.name) else {
            continue;
        };
        farm.flows_new_per_s = rate(farm.flows_new, pf.flows_new);
        for b in &mut farm.backends {
            let Some(pb) = pf.backends.iter().find(|x| x.name == b.name) else {
                continue;
            };
            b.packets_per_s = rate(b.packets, pb.packets);
            b.bytes_per_s = rate(b.bytes, pb.bytes);
        }
    }
    cur
}

fn per_s(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |r| format!("{r:.1}"))
}

/// The counters as two tables (farms, then backends); rate columns once there are rates.
pub fn render(v: &StatsView) -> String {
    let owner = if v.vip_owner {
        "VIP owner"
    } else {
        "not the VIP owner"
    };
    let mut out = format!(
        "node {} ({owner}), answered by node {}",
        v.node, v.answered_by
    );
    if let Some(s) = v.interval_s {
        out.push_str(&format!(", rates over {s:.1} s"));
    }
    out.push_str("\n\n");
    if v.farms.is_empty() {
        out.push_str("no farms\n");
        return out;
    }
    let rates = v.interval_s.is_some();
    let mut farms = if rates {
        Table::new(&["farm", "new flows", "flows/s"])
    } else {
        Table::new(&["farm", "new flows"])
    };
    let mut backends = if rates {
        Table::new(&[
            "farm", "backend", "state", "healthy", "packets", "bytes", "pkt/s", "bytes/s",
        ])
    } else {
        Table::new(&["farm", "backend", "state", "healthy", "packets", "bytes"])
    };
    for f in &v.farms {
        let mut row = vec![f.name.clone(), f.flows_new.to_string()];
        if rates {
            row.push(per_s(f.flows_new_per_s));
        }
        farms.row(row);
        for b in &f.backends {
            let mut row = vec![
                f.name.clone(),
                b.name.clone(),
                b.state.clone(),
                if b.healthy { "yes" } else { "no" }.into(),
                b.packets.to_string(),
                b.bytes.to_string(),
            ];
            if rates {
                row.push(per_s(b.packets_per_s));
                row.push(per_s(b.bytes_per_s));
            }
            backends.row(row);
        }
    }
    out.push_str(&farms.render());
    out.push('\n');
    out.push_str(&backends.render());
    out
}

/// ANSI: cursor home, clear screen.
pub const REDRAW: &str = "\x1b[H\x1b[2J";

/// One refresh as printed: with `--watch` on a terminal the table is redrawn in place;
/// elsewhere refreshes follow each other (tables separated by a blank line, JSON one object
/// per line so a script can read it as a stream).
pub fn frame(v: &StatsView, format: Format, watch: bool, tty: bool) -> String {
    match (format, watch) {
        (Format::Json, true) => serde_json::to_string(v).unwrap_or_default() + "\n",
        (Format::Json, false) => render::json(v),
        (Format::Table | Format::Wide, true) if tty => format!("{REDRAW}{}", render(v)),
        (Format::Table | Format::Wide, true) => format!("{}\n", render(v)),
        (Format::Table | Format::Wide, false) => render(v),
    }
}

#[cfg(test)]
mod tests {
    use super::super::view::{BackendStatsView, FarmStatsView};
    use super::*;

    fn sample(flows: u64, packets: u64, bytes: u64) -> StatsView {
        StatsView {
            node: 1,
            vip_owner: true,
            answered_by: 2,
            interval_s: None,
            farms: vec![FarmStatsView {
                name: "web".into(),
                flows_new: flows,
                flows_new_per_s: None,
                backends: vec![BackendStatsView {
                    name: "b1".into(),
                    state: "up".into(),
                    healthy: true,
                    packets,
                    bytes,
                    packets_per_s: None,
                    bytes_per_s: None,
                }],
            }],
        }
    }

    #[test]
    fn rates_between_samples() {
        let v = with_rates(
            &sample(10, 100, 6000),
            sample(30, 500, 30000),
            Duration::from_secs(2),
        );
        assert_eq!(v.interval_s, Some(2.0));
        assert_eq!(v.farms[0].flows_new_per_s, Some(10.0));
        assert_eq!(v.farms[0].backends[0].packets_per_s, Some(200.0));
        assert_eq!(v.farms[0].backends[0].bytes_per_s, Some(12000.0));
        assert_eq!(
            render(&v),
            "node 1 (VIP owner), answered by node 2, rates over 2.0 s\n\
             \n\
             FARM  NEW FLOWS  FLOWS/S\n\
             web   30         10.0\n\
             \n\
             FARM  BACKEND  STATE  HEALTHY  PACKETS  BYTES  PKT/S  BYTES/S\n\
             web   b1       up     yes      500      30000  200.0  12000.0\n"
        );
    }

    #[test]
    fn a_counter_that_went_down_has_no_rate() {
        let v = with_rates(
            &sample(10, 100, 6000),
            sample(3, 500, 30000),
            Duration::from_secs(1),
        );
        assert_eq!(v.farms[0].flows_new_per_s, None);
        assert_eq!(v.farms[0].backends[0].packets_per_s, Some(400.0));
        let mut other = sample(30, 500, 30000);
        other.node = 2;
        assert_eq!(
            with_rates(&sample(10, 100, 6000), other, Duration::from_secs(1)).interval_s,
            None
        );
    }

    #[test]
    fn first_sample_has_no_rate_columns() {
        let out = render(&sample(1, 2, 3));
        assert!(out.contains("FARM  NEW FLOWS\n"), "{out}");
        assert!(!out.contains("PKT/S"), "{out}");
    }

    #[test]
    fn watch_frames() {
        let v = sample(1, 2, 3);
        let table = render(&v);
        assert_eq!(
            frame(&v, Format::Table, true, true),
            format!("{REDRAW}{table}")
        );
        assert_eq!(frame(&v, Format::Table, true, false), format!("{table}\n"));
        assert_eq!(frame(&v, Format::Table, false, true), table);
        let line = frame(&v, Format::Json, true, true);
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line}"
        );
        let back: StatsView = serde_json::from_str(&line).expect("JSON");
        assert_eq!(back, v);
    }
}
