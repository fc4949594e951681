//! The difference between two farm sets, farm by farm, in the config file's words: what
//! `apply` shows before (or instead of, with `dry_run`) writing. Compared in the canonical
//! raw spelling, so only real changes show and every line reads like the file.

use crate::config::{RawBackend, RawFarm};
use cluster::Farm;
use std::collections::BTreeMap;

/// One farm's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarmChange {
    /// `create`, `update` or `delete`.
    pub action: &'static str,
    pub farm: String,
    /// Human-readable lines, e.g. `backend b2: weight 1 -> 3`.
    pub details: Vec<String>,
}

fn farm_fields(f: &RawFarm) -> Vec<(&'static str, String)> {
    let ports = match (&f.port, &f.ports) {
        (Some(p), _) => p.to_string(),
        (None, Some(r)) => r.clone(),
        (None, None) => String::new(),
    };
    let check = match &f.check {
        None => "none".to_string(),
        Some(c) => format!(
            "{} every {} (timeout {}, rise {}, fall {})",
            c.kind, c.interval, c.timeout, c.rise, c.fall
        ),
    };
    vec![
        ("vip", f.vip.clone()),
        ("ports", ports),
        ("protocol", f.protocol.clone()),
        (
            "persistence",
            f.persistence.clone().unwrap_or_else(|| "none".into()),
        ),
        (
            "persistence_ttl",
            f.persistence_ttl.clone().unwrap_or_else(|| "-".into()),
        ),
        ("check", check),
    ]
}

fn backend_fields(b: &RawBackend) -> Vec<(&'static str, String)> {
    let show = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    vec![
        ("ip", b.ip.clone()),
        ("mac", show(b.mac.clone())),
        ("weight", show(b.weight.map(|w| w.to_string()))),
        ("state", show(b.state.clone())),
        ("priority", show(b.priority.map(|p| p.to_string()))),
    ]
}

fn describe_backend(b: &RawBackend) -> String {
    let fields: Vec<String> = backend_fields(b)
        .into_iter()
        .filter(|(_, v)| v != "-")
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    format!("backend {}: {}", b.name, fields.join(", "))
}

fn changed_fields(
    prefix: &str,
    old: &[(&'static str, String)],
    new: &[(&'static str, String)],
    out: &mut Vec<String>,
) {
    for ((k, a), (_, b)) in old.iter().zip(new) {
        if a != b {
            out.push(format!("{prefix}{k} {a} -> {b}"));
        }
    }
}

fn farm_details(old: &RawFarm, new: &RawFarm) -> Vec<String> {
    let mut out = Vec::new();
    changed_fields("", &farm_fields(old), &farm_fields(new), &mut out);
    for b in &old.backend {
        match new.backend.iter().find(|n| n.name == b.name) {
            None => out.push(format!("backend {}: removed", b.name)),
            Some(n) => changed_fields(
                &format!("backend {}: ", b.name),
                &backend_fields(b),
                &backend_fields(n),
                &mut out,
            ),
        }
    }
    for n in &new.backend {
        if !old.backend.iter().any(|b| b.name == n.name) {
            out.push(format!("{} (added)", describe_backend(n)));
        }
    }
    let order = |f: &RawFarm| f.backend.iter().map(|b| b.name.clone()).collect::<Vec<_>>();
    let common = |a: &RawFarm, b: &RawFarm| {
        order(a)
            .into_iter()
            .filter(|n| b.backend.iter().any(|x| &x.name == n))
            .collect::<Vec<_>>()
    };
    if out.is_empty() && common(old, new) != common(new, old) {
        out.push(format!(
            "backend order {} -> {}",
            order(old).join(","),
            order(new).join(",")
        ));
    }
    out
}

/// The changes that turn `current` into `desired` (both by name), in name order; empty when
/// they are equal.
pub fn diff<F: std::borrow::Borrow<Farm>>(
    current: &BTreeMap<String, F>,
    desired: &BTreeMap<String, Farm>,
) -> Vec<FarmChange> {
    let mut out = Vec::new();
    for (name, old) in current {
        let old: &Farm = old.borrow();
        match desired.get(name) {
            None => out.push(FarmChange {
                action: "delete",
                farm: name.clone(),
                details: vec![],
            }),
            Some(new) if new != old => out.push(FarmChange {
                action: "update",
                farm: name.clone(),
                details: farm_details(&RawFarm::from(old), &RawFarm::from(new)),
            }),
            Some(_) => {}
        }
    }
    for (name, new) in desired {
        if !current.contains_key(name) {
            let raw = RawFarm::from(new);
            let mut details: Vec<String> = farm_fields(&raw)
                .into_iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            details.extend(raw.backend.iter().map(describe_backend));
            out.push(FarmChange {
                action: "create",
                farm: name.clone(),
                details,
            });
        }
    }
    out.sort_by(|a, b| a.farm.cmp(&b.farm));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawFarms, validate_farms};

    fn set(text: &str) -> BTreeMap<String, Farm> {
        let raw: RawFarms = toml::from_str(text).unwrap();
        validate_farms(&raw.farm)
            .unwrap()
            .into_iter()
            .map(|f| (f.name.clone(), f))
            .collect()
    }

    const WEB: &str = r#"
        [[farm]]
        name = "web"
        vip = "198.18.0.100"
        port = 80
        protocol = "tcp"
        [[farm.backend]]
        name = "b1"
        ip = "198.18.0.21"
        [[farm.backend]]
        name = "b2"
        ip = "198.18.0.22"
    "#;

    #[test]
    fn equal_sets_have_no_diff_and_changes_read_like_the_file() {
        let a = set(WEB);
        assert!(diff(&a, &a).is_empty());
        let b = set(&WEB.replace("ip = \"198.18.0.22\"", "ip = \"198.18.0.22\"\nweight = 3"));
        let d = diff(&a, &b);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].action, "update");
        assert_eq!(d[0].details, vec!["backend b2: weight 1 -> 3"]);
        let d = diff(&a, &BTreeMap::new());
        assert_eq!((d[0].action, d[0].farm.as_str()), ("delete", "web"));
        let d = diff(&BTreeMap::<String, Farm>::new(), &a);
        assert_eq!(d[0].action, "create");
        assert!(
            d[0].details
                .iter()
                .any(|l| l.starts_with("backend b1: ip 198.18.0.21"))
        );
    }
}
