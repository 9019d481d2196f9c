//! The short plan a confirmation shows before a change (and `--dry-run` above its script):
//! what runs now and what will, how the schema moves, the backup taken first, what restarts.
//! A few labelled lines, so the engineer answers the question knowing what it means.

use crate::migrations::Direction;

/// A titled list of `label  text` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub title: String,
    pub rows: Vec<(&'static str, String)>,
}

impl Summary {
    pub fn new(title: impl Into<String>) -> Self {
        Summary {
            title: title.into(),
            rows: Vec::new(),
        }
    }

    pub fn row(mut self, label: &'static str, text: impl Into<String>) -> Self {
        self.rows.push((label, text.into()));
        self
    }

    /// The title, then each row indented with the labels in one column.
    pub fn render(&self) -> String {
        let width = self.rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let mut text = format!("{}:", self.title);
        for (label, value) in &self.rows {
            text.push_str(&format!("\n  {label:<width$}  {value}"));
        }
        text
    }
}

/// One side of a switch: the release and, from the host's release history, when and by
/// whom it was deployed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Side {
    pub reference: String,
    pub version: String,
    pub commit: String,
    /// `(result, at, by)` of the newest history record of this commit.
    pub deployed: Option<(String, String, String)>,
}

impl Side {
    /// `v1.27.0, version 1.27.0, commit 5a8a31f1c2d3, deployed 2026-11-30T14:00:00Z by ann@desk`
    pub fn describe(&self) -> String {
        let commit: String = self.commit.chars().take(12).collect();
        let mut text = format!(
            "{}, version {}, commit {commit}",
            if self.reference.is_empty() {
                "(no ref)"
            } else {
                &self.reference
            },
            if self.version.is_empty() {
                "unknown"
            } else {
                &self.version
            }
        );
        match &self.deployed {
            Some((result, at, by)) if result == "found" => {
                text.push_str(&format!(", running when ctops first deployed ({at})"));
                let _ = by;
            }
            Some((result, at, by)) => text.push_str(&format!(", {result} {at} by {by}")),
            None => text.push_str(", not in the release history"),
        }
        text
    }
}

/// The schema row: `0003 → 0002: downgrade, ...`.
pub fn schema_move(direction: Direction, from: Option<&str>, to: Option<&str>) -> String {
    let (from, to) = (from.unwrap_or("base"), to.unwrap_or("base"));
    match direction {
        Direction::None => format!("unchanged at {from}"),
        Direction::Upgrade => format!(
            "{from} → {to}: upgrade, with the new image in a one-off container, before the services are replaced"
        ),
        Direction::Downgrade => format!(
            "{from} → {to}: downgrade, with the current image (it has the scripts), before the old code is checked out"
        ),
        Direction::Diverged => format!("{from} → {to}: diverged, ctops will not move it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollback_summary_names_both_releases_the_schema_move_and_the_backup() {
        let from = Side {
            reference: "v1.27.0".into(),
            version: "1.27.0".into(),
            commit: "c3c3c3c3c3c3c3c3".into(),
            deployed: Some((
                "deployed".into(),
                "2026-11-30T14:00:00Z".into(),
                "ann@desk".into(),
            )),
        };
        let to = Side {
            reference: "v1.26.0".into(),
            version: "1.26.0".into(),
            commit: "b2b2b2b2b2b2b2b2".into(),
            deployed: Some(("found".into(), "2026-11-29T09:00:00Z".into(), "bob".into())),
        };
        let text = Summary::new("rollback prod (calm-prod)")
            .row("from", from.describe())
            .row("to", to.describe())
            .row(
                "schema",
                schema_move(Direction::Downgrade, Some("c3"), Some("b2")),
            )
            .row("backup", "a dump of the database first")
            .render();
        assert_eq!(
            text.lines().next(),
            Some("rollback prod (calm-prod):"),
            "{text}"
        );
        assert!(text.contains("  from    v1.27.0, version 1.27.0, commit c3c3c3c3c3c3, deployed 2026-11-30T14:00:00Z by ann@desk"), "{text}");
        assert!(text.contains("  to      v1.26.0, version 1.26.0"), "{text}");
        assert!(text.contains("  schema  c3 → b2: downgrade"), "{text}");
    }
}
