//! The loaded policy as a table, one row per rule, for `pullgate policy check`.

use std::fmt;

use crate::policy::Policy;

use super::rule::RuleView;

const HEADER: [&str; 8] = ["SCOPE", "NAMESPACES", "REQUIRE", "KEYS", "THRESHOLD", "IDENTITY", "MODE", "FILE"];

pub struct PolicyTable {
    rows: Vec<[String; 8]>,
}

impl PolicyTable {
    pub fn new(policy: &Policy) -> PolicyTable {
        let rows = policy.rules().iter().map(|rule| row(&RuleView::new(rule))).collect();
        PolicyTable { rows }
    }
}

fn row(rule: &RuleView) -> [String; 8] {
    let dash = || "-".to_owned();
    let signed = rule.threshold.is_some();
    [
        rule.scope.clone(),
        rule.namespaces_label(),
        rule.require.to_owned(),
        if signed { rule.keys_label() } else { dash() },
        rule.threshold.map_or_else(dash, |n| n.to_string()),
        if signed { rule.identity.clone() } else { dash() },
        rule.mode.to_owned(),
        rule.file.display().to_string(),
    ]
}

impl fmt::Display for PolicyTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut widths = HEADER.map(str::len);
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        write_row(f, &widths, HEADER.iter().copied())?;
        self.rows.iter().try_for_each(|row| write_row(f, &widths, row.iter().map(String::as_str)))
    }
}

/// Cells padded to their column's width, two spaces apart, without trailing blanks.
fn write_row<'a>(f: &mut fmt::Formatter<'_>, widths: &[usize; 8], cells: impl Iterator<Item = &'a str>) -> fmt::Result {
    let mut line = String::new();
    for (cell, width) in cells.zip(widths) {
        line.push_str(&format!("{cell:<width$}  "));
    }
    writeln!(f, "{}", line.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{IdentityRule, Mode, Requirement, Rule};
    use std::path::PathBuf;

    fn rule(scope: &str, namespaces: Option<Vec<String>>, require: Requirement) -> Rule {
        Rule {
            scope: scope.parse().unwrap(),
            namespaces,
            require,
            keys: vec![],
            identities: vec![],
            threshold: 0,
            identity: IdentityRule::Ignore,
            mode: Mode::Enforce,
            source: PathBuf::from("/p/a.toml"),
            message: None,
            signatures_from: None,
            line: None,
        }
    }

    #[test]
    fn columns_line_up_and_unsigned_rules_show_dashes() {
        let policy = Policy::from_rules(vec![
            rule("*", None, Requirement::Reject),
            rule("registry.example/team", Some(vec!["dev".into(), "ci".into()]), Requirement::Accept),
        ]);
        let text = PolicyTable::new(&policy).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0]
                .starts_with("SCOPE                  NAMESPACES  REQUIRE  KEYS  THRESHOLD  IDENTITY  MODE     FILE"),
            "{text}"
        );
        assert!(
            lines[1].starts_with(
                "*                      all         reject   -     -          -         enforce  /p/a.toml"
            ),
            "{text}"
        );
        assert!(lines[2].starts_with("registry.example/team  dev, ci     accept"), "{text}");
    }
}
