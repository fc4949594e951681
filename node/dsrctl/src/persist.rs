//! The text of `persistence list`: one row per client with ages people read at a glance
//! ("3.2s ago", "4m56s"), and a footer saying how much of the farm's table was shown. Pure:
//! the current time is an argument, so tests compare strings.

use super::table::Table;
use super::view::PersistenceView;

/// A duration in the shortest form that still tells seconds apart where they matter:
/// tenths under a minute, then whole units two at a time.
pub fn short(ms: u64) -> String {
    const MIN: u64 = 60_000;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    match ms {
        // Tenths, truncated: "59.9s" never rounds up to a misleading "60.0s".
        ms if ms < MIN => format!("{}.{}s", ms / 1000, ms % 1000 / 100),
        ms if ms < HOUR => format!("{}m{:02}s", ms / MIN, ms % MIN / 1000),
        ms if ms < DAY => format!("{}h{:02}m", ms / HOUR, ms % HOUR / MIN),
        ms => format!("{}d{:02}h", ms / DAY, ms % DAY / HOUR),
    }
}

fn entries(n: u64) -> String {
    if n == 1 {
        "1 entry".into()
    } else {
        format!("{n} entries")
    }
}

/// `v` as a table; `now_ms` (ms since the Unix epoch, this machine's clock) dates LAST SEEN.
pub fn list(v: &PersistenceView, now_ms: u64) -> String {
    let whose = format!("farm {}, answered by node {}", v.farm, v.answered_by);
    if v.entries.is_empty() {
        return match &v.client {
            Some(c) => format!(
                "no persistence entry for client {c} ({whose}; the farm holds {})\n",
                entries(v.total)
            ),
            None => format!("no persistence entries ({whose})\n"),
        };
    }
    let mut t = Table::new(&["client", "backend", "last seen", "expires in"]);
    for e in &v.entries {
        t.row(vec![
            e.client.clone(),
            e.backend.clone(),
            format!("{} ago", short(now_ms.saturating_sub(e.last_seen_unix_ms))),
            match e.expires_in_ms {
                0 => "due".into(),
                ms => short(ms),
            },
        ]);
    }
    let shown = v.entries.len() as u64;
    let footer = if v.truncated {
        format!(
            "{shown} of {}; a higher --limit shows more ({whose})",
            entries(v.total)
        )
    } else if shown < v.total {
        format!("{shown} of {} ({whose})", entries(v.total))
    } else {
        format!("{} ({whose})", entries(v.total))
    };
    format!("{}{footer}\n", t.render())
}

#[cfg(test)]
mod tests {
    use super::super::view::PersistenceEntryView;
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn entry(client: &str, backend: &str, age_ms: u64, left_ms: u64) -> PersistenceEntryView {
        PersistenceEntryView {
            client: client.into(),
            backend: backend.into(),
            last_seen_unix_ms: NOW - age_ms,
            expires_in_ms: left_ms,
        }
    }

    fn view(entries: Vec<PersistenceEntryView>, total: u64, truncated: bool) -> PersistenceView {
        PersistenceView {
            answered_by: 2,
            farm: "web".into(),
            client: None,
            total,
            truncated,
            entries,
        }
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(short(0), "0.0s");
        assert_eq!(short(3_249), "3.2s");
        assert_eq!(short(59_999), "59.9s");
        assert_eq!(short(60_000), "1m00s");
        assert_eq!(short(296_000), "4m56s");
        assert_eq!(short(3_723_000), "1h02m");
        assert_eq!(short(90_000_000), "1d01h");
    }

    #[test]
    fn a_listing_with_ages_and_its_footer() {
        let v = view(
            vec![
                entry("198.18.0.41", "b1", 3_200, 56_800),
                entry("198.18.0.42", "backend-2", 61_000, 0),
            ],
            2,
            false,
        );
        assert_eq!(
            list(&v, NOW),
            "CLIENT       BACKEND    LAST SEEN  EXPIRES IN\n\
             198.18.0.41  b1         3.2s ago   56.8s\n\
             198.18.0.42  backend-2  1m01s ago  due\n\
             2 entries (farm web, answered by node 2)\n"
        );
        let cut = view(vec![entry("198.18.0.41", "b1", 0, 1_000)], 5234, true);
        assert!(
            list(&cut, NOW).ends_with(
                "1 of 5234 entries; a higher --limit shows more (farm web, answered by node 2)\n"
            ),
            "{}",
            list(&cut, NOW)
        );
        // A clock behind the leader's does not print a negative age.
        let ahead = view(vec![entry("198.18.0.41", "b1", 0, 1_000)], 1, false);
        assert!(list(&ahead, NOW - 5_000).contains("0.0s ago"));
    }

    #[test]
    fn empty_listings_say_so() {
        assert_eq!(
            list(&view(vec![], 0, false), NOW),
            "no persistence entries (farm web, answered by node 2)\n"
        );
        let mut one = view(vec![], 12, false);
        one.client = Some("198.18.0.9".into());
        assert_eq!(
            list(&one, NOW),
            "no persistence entry for client 198.18.0.9 (farm web, answered by node 2; the \
             farm holds 12 entries)\n"
        );
        one.entries = vec![entry("198.18.0.9", "b1", 0, 1_000)];
        assert!(
            list(&one, NOW).ends_with("1 of 12 entries (farm web, answered by node 2)\n"),
            "{}",
            list(&one, NOW)
        );
    }
}
