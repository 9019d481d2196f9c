//! Alembic revisions read from the migration scripts at any git ref, without running them:
//! how ctops knows a release's head revision, and whether going there means an upgrade or
//! a downgrade, before anything changes.

use std::collections::{BTreeMap, BTreeSet};

/// Revision → the revisions it comes after (empty for the first one).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Graph {
    down: BTreeMap<String, Vec<String>>,
}

/// Which way the schema must move to reach a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direction {
    None,
    Upgrade,
    /// Downgrade to this revision (`None`: below the first one, i.e. `base`).
    Downgrade,
    /// Neither revision descends from the other: ctops will not guess.
    Diverged,
}

impl Graph {
    /// Parses `git grep -E '^(revision|down_revision)' REF -- DIR` output
    /// (`REF:path:revision = "0003"`), one script per path.
    pub fn parse_grep(output: &str) -> Graph {
        let mut revision: BTreeMap<&str, String> = BTreeMap::new();
        let mut downs: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for line in output.lines() {
            let Some((path, assignment)) = split_location(line) else {
                continue;
            };
            let Some((name, value)) = assignment.split_once('=') else {
                continue;
            };
            let name = name.split(':').next().unwrap_or("").trim();
            let values = quoted_values(value);
            match name {
                "revision" => {
                    if let Some(v) = values.into_iter().next() {
                        revision.insert(path, v);
                    }
                }
                "down_revision" => {
                    downs.insert(path, values);
                }
                _ => {}
            }
        }
        let down = revision
            .into_iter()
            .map(|(path, rev)| (rev, downs.remove(path).unwrap_or_default()))
            .collect();
        Graph { down }
    }

    pub fn is_empty(&self) -> bool {
        self.down.is_empty()
    }

    /// Revisions nothing comes after.
    pub fn heads(&self) -> Vec<String> {
        let referenced: BTreeSet<&String> = self.down.values().flatten().collect();
        self.down
            .keys()
            .filter(|r| !referenced.contains(r))
            .cloned()
            .collect()
    }

    /// The single head, or `None` when there are no migrations; an error with several.
    pub fn head(&self) -> Result<Option<String>, String> {
        match self.heads().as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            many => Err(format!("several migration heads: {}", many.join(", "))),
        }
    }

    /// Every revision `rev` comes after, `rev` included.
    pub fn lineage(&self, rev: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![rev.to_string()];
        while let Some(r) = todo.pop() {
            if seen.insert(r.clone()) {
                todo.extend(self.down.get(&r).cloned().unwrap_or_default());
            }
        }
        seen
    }
}

/// Which way to move from `current` (the database) to `target` (a release's head), judged
/// with the graph that knows both (the newer code's).
pub fn direction(graph: &Graph, current: Option<&str>, target: Option<&str>) -> Direction {
    match (current, target) {
        (a, b) if a == b => Direction::None,
        (None, Some(_)) => Direction::Upgrade,
        (Some(_), None) => Direction::Downgrade,
        (Some(cur), Some(tgt)) if graph.lineage(tgt).contains(cur) => Direction::Upgrade,
        (Some(cur), Some(tgt)) if graph.lineage(cur).contains(tgt) => Direction::Downgrade,
        _ => Direction::Diverged,
    }
}

fn split_location(line: &str) -> Option<(&str, &str)> {
    // REF:path:text; REF itself has no colon (a commit id).
    let (_, rest) = line.split_once(':')?;
    rest.split_once(':')
}

fn quoted_values(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' {
            let s: String = chars.by_ref().take_while(|&x| x != c).collect();
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREP: &str = "abc:migrations/versions/0001_a.py:revision = \"0001\"
abc:migrations/versions/0001_a.py:down_revision = None
abc:migrations/versions/0002_b.py:revision: str = '0002'
abc:migrations/versions/0002_b.py:down_revision: Union[str, None] = '0001'
abc:migrations/versions/0003_c.py:revision = \"0003\"
abc:migrations/versions/0003_c.py:down_revision = \"0002\"
";

    #[test]
    fn heads_and_lineage_come_from_the_scripts() {
        let g = Graph::parse_grep(GREP);
        assert_eq!(g.head().unwrap().as_deref(), Some("0003"));
        assert!(g.lineage("0003").contains("0001"));
        assert_eq!(Graph::default().head().unwrap(), None);
    }

    #[test]
    fn direction_is_judged_before_anything_runs() {
        let g = Graph::parse_grep(GREP);
        assert_eq!(
            direction(&g, Some("0002"), Some("0003")),
            Direction::Upgrade
        );
        assert_eq!(
            direction(&g, Some("0003"), Some("0001")),
            Direction::Downgrade
        );
        assert_eq!(direction(&g, Some("0003"), Some("0003")), Direction::None);
        assert_eq!(direction(&g, None, Some("0001")), Direction::Upgrade);
        assert_eq!(
            direction(&g, Some("0003"), Some("9999")),
            Direction::Diverged
        );
    }

    #[test]
    fn merge_revisions_have_several_parents() {
        let g = Graph::parse_grep("c:p/m.py:revision = 'm'\nc:p/m.py:down_revision = ('a', 'b')\nc:p/a.py:revision = 'a'\nc:p/b.py:revision = 'b'\n");
        assert_eq!(g.head().unwrap().as_deref(), Some("m"));
        assert_eq!(g.lineage("m").len(), 3);
    }

    #[test]
    fn two_heads_are_an_error() {
        let g = Graph::parse_grep("c:p/a.py:revision = 'a'\nc:p/b.py:revision = 'b'\n");
        assert!(g.head().unwrap_err().contains("a, b"));
    }
}
