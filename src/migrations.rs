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

    /// The single head, or `None` when there are no migrations; an error with several, and
    /// with none among scripts that exist (a cycle: no answer is never "no migrations").
    pub fn head(&self) -> Result<Option<String>, String> {
        match self.heads().as_slice() {
            [] if !self.is_empty() => Err(format!(
                "the migration scripts form a cycle (no revision is a head): {}",
                self.down.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            many => Err(format!("several migration heads: {}", many.join(", "))),
        }
    }

    /// Whether a script of this graph has revision `rev`.
    pub fn knows(&self, rev: &str) -> bool {
        self.down.contains_key(rev)
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
        // Down to base only from a revision these scripts know: an empty or wrong folder
        // must never read as "downgrade everything".
        (Some(cur), None) if graph.knows(cur) => Direction::Downgrade,
        (Some(_), None) => Direction::Diverged,
        (Some(cur), Some(tgt)) if graph.lineage(tgt).contains(cur) => Direction::Upgrade,
        (Some(cur), Some(tgt)) if graph.lineage(cur).contains(tgt) => Direction::Downgrade,
        _ => Direction::Diverged,
    }
}

/// What a release says about its migration head, read from its repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// The scripts' single head; `None` when the versions folder exists at the ref and
    /// holds no revision (the schema's `base`).
    Known(Option<String>),
    /// The release has no alembic configuration at all (no `alembic.ini`, no override).
    Absent,
    /// Nobody can tell: why, and the config key that would settle it.
    Unknown(String),
}

impl Head {
    /// The revision for records and messages (`None` for base, absent or unknown).
    pub fn revision(&self) -> Option<String> {
        match self {
            Head::Known(r) => r.clone(),
            _ => None,
        }
    }
}

/// The folders (repository paths) that hold a release's revision scripts, read from its
/// `alembic.ini` at `ini_path`: `version_locations` when set, else `script_location`'s
/// `versions/`. Relative paths are taken from the ini's folder, where `alembic` runs
/// (`compose run SERVICE alembic ...` runs in the image's working dir, which holds the
/// ini); `%(here)s` is that folder too. Anything ctops cannot map to a repository path (a
/// package resource `pkg:dir`, an absolute path inside the image) is an error.
pub fn versions_dirs(ini_path: &str, ini: &str) -> Result<Vec<String>, String> {
    let here = ini_path.rsplit_once('/').map_or("", |(dir, _)| dir);
    let values = alembic_section(ini);
    let get = |key: &str| {
        values
            .iter()
            .find(|(k, _)| k == key)
            // Paths are joined to the ini's folder below, so `%(here)s` is `.` here.
            .map(|(_, v)| v.replace("%(here)s", "."))
            .filter(|v| !v.trim().is_empty())
    };
    let paths: Vec<String> = match (get("version_locations"), get("script_location")) {
        (Some(list), _) => {
            let separator = get("version_path_separator").unwrap_or_default();
            split_locations(&list, separator.trim())
        }
        (None, Some(script)) => vec![format!("{}/versions", script.trim().trim_end_matches('/'))],
        (None, None) => {
            return Err(format!(
                "{ini_path} has neither script_location nor version_locations in [alembic]"
            ))
        }
    };
    paths
        .iter()
        .map(|p| {
            repository_path(here, p)
                .ok_or_else(|| format!("{ini_path}: `{p}` is not a folder of the repository"))
        })
        .collect()
}

/// `key = value` pairs of the `[alembic]` section (continuation lines joined).
fn alembic_section(ini: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut inside = false;
    for line in ini.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            inside = trimmed == "[alembic]";
            continue;
        }
        if !inside || trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(trimmed);
            }
            continue;
        }
        if let Some((k, v)) = trimmed.split_once(['=', ':']) {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// Alembic's `version_path_separator`: `os` (`:` here), `space`, `comma`, a literal, or
/// unset (legacy: spaces and commas).
fn split_locations(list: &str, separator: &str) -> Vec<String> {
    let parts: Vec<&str> = match separator {
        "os" | ":" => list.split(':').collect(),
        "space" | " " => list.split(' ').collect(),
        "comma" | "," => list.split(',').collect(),
        ";" => list.split(';').collect(),
        "newline" => list.split(['\n', ' ']).collect(),
        _ => list.split([' ', ',']).collect(),
    };
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// `base/rel` with `.` and `..` resolved; `None` for an absolute path, a package resource
/// (`pkg:dir`), or a path that leaves the repository.
fn repository_path(base: &str, rel: &str) -> Option<String> {
    if rel.starts_with('/') || rel.contains(':') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in base.split('/').chain(rel.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
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

    /// Found by `properties::a_graph_with_scripts_never_reads_as_no_migrations`.
    #[test]
    fn scripts_that_form_a_cycle_have_no_head_and_say_so() {
        let g = Graph::parse_grep(
            "c:p/a.py:revision = 'a'\nc:p/a.py:down_revision = 'b'\nc:p/b.py:revision = 'b'\nc:p/b.py:down_revision = 'a'\n",
        );
        assert!(g.head().unwrap_err().contains("cycle"));
    }

    #[test]
    fn two_heads_are_an_error() {
        let g = Graph::parse_grep("c:p/a.py:revision = 'a'\nc:p/b.py:revision = 'b'\n");
        assert!(g.head().unwrap_err().contains("a, b"));
    }
    #[test]
    fn the_versions_folder_comes_from_alembic_ini() {
        let ini = "[alembic]\nscript_location = migrations\n[loggers]\nkeys = root\n";
        assert_eq!(
            versions_dirs("alembic.ini", ini).unwrap(),
            ["migrations/versions"]
        );
        let sub = "[alembic]\nscript_location = %(here)s/db/migrations\n";
        assert_eq!(
            versions_dirs("backend/alembic.ini", sub).unwrap(),
            ["backend/db/migrations/versions"]
        );
        let rel = "[alembic]\nscript_location = ./db/../migrations/\n";
        assert_eq!(
            versions_dirs("backend/alembic.ini", rel).unwrap(),
            ["backend/migrations/versions"]
        );
        let locations =
            "[alembic]\nscript_location = m\nversion_locations = %(here)s/a %(here)s/b\n";
        assert_eq!(
            versions_dirs("x/alembic.ini", locations).unwrap(),
            ["x/a", "x/b"]
        );
        let os = "[alembic]\nscript_location = m\nversion_path_separator = os\nversion_locations = a:b\n";
        assert_eq!(versions_dirs("alembic.ini", os).unwrap(), ["a", "b"]);
    }
    #[test]
    fn an_ini_ctops_cannot_map_to_the_repository_is_an_error() {
        for ini in [
            "[alembic]\nscript_location = myapp:migrations\n",
            "[alembic]\nscript_location = /srv/app/migrations\n",
            "[alembic]\nscript_location = ../../elsewhere\n",
            "[alembic]\nsqlalchemy.url = x\n",
            "[other]\nscript_location = m\n",
        ] {
            assert!(versions_dirs("a/alembic.ini", ini).is_err(), "{ini}");
        }
    }
}

/// Property tests on random DAGs written as `git grep` prints revision scripts.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Revision `i`'s parents, each an earlier revision (so the graph is a DAG).
    fn dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
        (1usize..12).prop_flat_map(|n| {
            (0..n)
                .map(|i| {
                    if i == 0 {
                        Just(Vec::new()).boxed()
                    } else {
                        proptest::collection::btree_set(0..i, 0..=2)
                            .prop_map(|s| s.into_iter().collect())
                            .boxed()
                    }
                })
                .collect::<Vec<_>>()
        })
    }

    /// Revision ids as alembic writes them, and hostile ones (quotes of the other kind,
    /// colons, spaces, `=`).
    fn ids(n: usize) -> impl Strategy<Value = Vec<String>> {
        proptest::collection::btree_set("[0-9a-f]{4,12}|[a-z0-9 :=\"_-]{1,10}", n)
            .prop_map(|s| s.into_iter().collect())
    }

    /// The `git grep` lines for the graph, in one of the ways scripts spell it.
    fn grep(ids: &[String], parents: &[Vec<usize>], style: usize) -> String {
        let q = |id: &str| {
            if id.contains('\'') {
                format!("\"{id}\"")
            } else {
                format!("'{id}'")
            }
        };
        let mut out = String::new();
        for (i, ps) in parents.iter().enumerate() {
            let path = format!("migrations/versions/{i:04}_x.py");
            let (rev, down) = match style % 2 {
                0 => ("revision = ", "down_revision = "),
                _ => (
                    "revision: str = ",
                    "down_revision: Union[str, Sequence[str], None] = ",
                ),
            };
            out.push_str(&format!("abc123:{path}:{rev}{}\n", q(&ids[i])));
            let value = match ps.as_slice() {
                [] => "None".to_string(),
                [one] => q(&ids[*one]),
                many => format!(
                    "({})",
                    many.iter()
                        .map(|p| q(&ids[*p]))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            out.push_str(&format!("abc123:{path}:{down}{value}\n"));
        }
        out
    }

    /// Revision `i` and everything it comes after, by brute force.
    fn ancestors(parents: &[Vec<usize>], i: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::from([i]);
        let mut todo = vec![i];
        while let Some(r) = todo.pop() {
            for p in &parents[r] {
                if seen.insert(*p) {
                    todo.push(*p);
                }
            }
        }
        seen
    }

    proptest! {
        #[test]
        fn heads_knows_and_lineage_match_the_dag(
            (parents, ids, style) in dag().prop_flat_map(|p| { let n = p.len(); (Just(p), ids(n), 0usize..2) })
        ) {
            let g = Graph::parse_grep(&grep(&ids, &parents, style));
            for id in &ids {
                prop_assert!(g.knows(id), "{id:?}");
            }
            let referenced: BTreeSet<usize> = parents.iter().flatten().copied().collect();
            let heads: BTreeSet<String> = (0..ids.len()).filter(|i| !referenced.contains(i)).map(|i| ids[i].clone()).collect();
            prop_assert_eq!(g.heads().into_iter().collect::<BTreeSet<_>>(), heads.clone());
            match heads.len() {
                1 => prop_assert_eq!(g.head(), Ok(heads.into_iter().next())),
                _ => prop_assert!(g.head().is_err()),
            }
            for i in 0..ids.len() {
                let want: BTreeSet<String> = ancestors(&parents, i).into_iter().map(|a| ids[a].clone()).collect();
                prop_assert_eq!(g.lineage(&ids[i]), want);
            }
        }

        #[test]
        fn the_path_between_two_revisions_is_judged_from_the_dag(
            (parents, ids, a, b) in dag().prop_flat_map(|p| { let n = p.len(); (Just(p), ids(n), 0..n, 0..n) })
        ) {
            let g = Graph::parse_grep(&grep(&ids, &parents, 0));
            let want = if a == b {
                Direction::None
            } else if ancestors(&parents, b).contains(&a) {
                Direction::Upgrade
            } else if ancestors(&parents, a).contains(&b) {
                Direction::Downgrade
            } else {
                Direction::Diverged
            };
            prop_assert_eq!(direction(&g, Some(&ids[a]), Some(&ids[b])), want);
            prop_assert_eq!(direction(&g, None, Some(&ids[b])), Direction::Upgrade);
            prop_assert_eq!(direction(&g, Some(&ids[a]), None), Direction::Downgrade);
            prop_assert_eq!(direction(&g, Some("not-a-revision"), None), Direction::Diverged);
        }

        /// Scripts exist, so the answer is a head or an error, never "no migrations" (extra
        /// edges may close cycles).
        #[test]
        fn a_graph_with_scripts_never_reads_as_no_migrations(
            (parents, ids, extra) in dag().prop_flat_map(|p| {
                let n = p.len();
                (Just(p), ids(n), proptest::collection::vec((0..n, 0..n), 0..4))
            })
        ) {
            let mut parents = parents;
            for (from, to) in extra {
                parents[from].push(to);
            }
            let g = Graph::parse_grep(&grep(&ids, &parents, 0));
            prop_assert_ne!(g.head(), Ok(None));
        }

        #[test]
        fn any_text_parses_without_panicking(text in any::<String>()) {
            let g = Graph::parse_grep(&text);
            let _ = g.head();
            for h in g.heads() {
                let _ = g.lineage(&h);
            }
            let _ = versions_dirs("a/alembic.ini", &text);
        }
    }
}
