//! `apply`'s change list as a plan, in the manner of `terraform plan` / `kubectl diff`:
//! `+` create, `~` update, `-` delete, each farm's details indented under it, then a
//! summary line that says whether anything was written.

use super::view::ApplyView;

fn sign(action: &str) -> &'static str {
    match action {
        "create" => "+",
        "update" => "~",
        "delete" => "-",
        "keep" => "=",
        _ => "?",
    }
}

/// The plan for `file` (shown in the summary).
pub fn render(v: &ApplyView, file: &str) -> String {
    let mut out = String::new();
    for c in &v.changes {
        out.push_str(&format!("{} farm {}\n", sign(&c.action), c.farm));
        for d in &c.details {
            out.push_str(&format!("    {d}\n"));
        }
    }
    let count = |a: &str| v.changes.iter().filter(|c| c.action == a).count();
    let kept = count("keep");
    if v.changes.len() == kept {
        if kept > 0 {
            out.push_str(&format!(
                "\nNo changes to the farms {file} lists; {kept} it does not list kept (--prune \
                 deletes them) (answered by node {}).\n",
                v.answered_by
            ));
            return out;
        }
        out.push_str(&format!(
            "No changes: the cluster already matches {file} (answered by node {}).\n",
            v.answered_by
        ));
        return out;
    }
    out.push('\n');
    let mut plan = format!(
        "{} to create, {} to update, {} to delete",
        count("create"),
        count("update"),
        count("delete")
    );
    if kept > 0 {
        plan.push_str(&format!(
            ", {kept} kept that the file does not list (--prune deletes them)"
        ));
    }
    if v.dry_run {
        out.push_str(&format!("Plan: {plan}. Dry run: nothing was written.\n"));
    } else if v.applied {
        out.push_str(&format!(
            "Applied: {plan} (at index {}, request taken by node {}).\n",
            v.applied_index, v.answered_by
        ));
    } else {
        out.push_str(&format!("Plan: {plan}. Not applied.\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::view::ChangeView;
    use super::*;

    fn change(action: &str, farm: &str, details: &[&str]) -> ChangeView {
        ChangeView {
            action: action.into(),
            farm: farm.into(),
            details: details.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    fn plan(dry_run: bool, applied: bool) -> ApplyView {
        ApplyView {
            dry_run,
            applied,
            applied_index: 21,
            answered_by: 2,
            changes: vec![
                change(
                    "create",
                    "dns",
                    &["vip 198.18.0.101, ports 53/udp", "backend d1: 198.18.0.20"],
                ),
                change("update", "web", &["backend b2: weight 1 -> 3"]),
                change("delete", "old", &[]),
            ],
        }
    }

    #[test]
    fn dry_run_plan() {
        assert_eq!(
            render(&plan(true, false), "farms.toml"),
            "+ farm dns\n\
             \x20   vip 198.18.0.101, ports 53/udp\n\
             \x20   backend d1: 198.18.0.20\n\
             ~ farm web\n\
             \x20   backend b2: weight 1 -> 3\n\
             - farm old\n\
             \n\
             Plan: 1 to create, 1 to update, 1 to delete. Dry run: nothing was written.\n"
        );
    }

    #[test]
    fn applied_and_no_op() {
        let out = render(&plan(false, true), "farms.toml");
        assert!(
            out.ends_with(
                "Applied: 1 to create, 1 to update, 1 to delete (at index 21, request taken by node 2).\n"
            ),
            "{out}"
        );
        let none = ApplyView {
            changes: vec![],
            ..plan(false, false)
        };
        assert_eq!(
            render(&none, "farms.toml"),
            "No changes: the cluster already matches farms.toml (answered by node 2).\n"
        );
    }

    #[test]
    fn farms_kept_without_prune_are_listed_not_counted() {
        let mut v = plan(true, false);
        v.changes.pop();
        v.changes
            .push(change("keep", "old", &["not in the file: kept"]));
        let out = render(&v, "farms.toml");
        assert!(
            out.contains("= farm old\n    not in the file: kept\n"),
            "{out}"
        );
        assert!(
            out.ends_with(
                "Plan: 1 to create, 1 to update, 0 to delete, 1 kept that the file does not \
                 list (--prune deletes them). Dry run: nothing was written.\n"
            ),
            "{out}"
        );
        let only_kept = ApplyView {
            changes: vec![change("keep", "old", &[])],
            ..plan(false, false)
        };
        assert_eq!(
            render(&only_kept, "farms.toml"),
            "= farm old\n\nNo changes to the farms farms.toml lists; 1 it does not list kept \
             (--prune deletes them) (answered by node 2).\n"
        );
    }
}
