//! Reading what the host runs and what it would run, before anything changes.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::compose::{exec_in_service, Compose, Stack};
use crate::context::Ctx;
use crate::error::Error;
use crate::migrations::{direction, Direction, Graph};
use crate::remote::{Remote, RemoteCommand};

/// A release as the JSON documents and the release history describe it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Release {
    #[serde(rename = "ref")]
    pub reference: String,
    pub commit: String,
    pub version: String,
    pub migration: Option<String>,
}

/// What the host runs now and what it would run, read before anything changes.
#[derive(Debug, Clone)]
pub struct Probe {
    pub project: String,
    pub current: Release,
    /// The database's revision now (may differ from the current code's head).
    pub db_revision: Option<String>,
    pub target: Release,
    pub dirty: Vec<String>,
    /// Built services and their image names.
    pub built: Vec<(String, String)>,
    current_graph: Graph,
    target_graph: Graph,
    /// Every built image already kept under the target commit's tag.
    pub target_images_kept: bool,
    /// A built service runs an image tagged for another commit, or is not running.
    pub needs_build: bool,
    pub stopped: Vec<String>,
    /// The host's clock when the stack was read (UTC seconds).
    pub host_time: i64,
}

const GIT_PROBE: &str = r#"cd "$1" || exit 1
export GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND="ssh -o BatchMode=yes"
git status --porcelain --untracked-files=no | sed 's/^/dirty	/'
out=$(timeout 120 git fetch -q --tags --force origin 2>&1) || printf 'fetch-error\t%s\n' "$out" | tr '\n' ' '
echo
cur=$(git rev-parse HEAD); printf 'current\t%s\n' "$cur"
t=""
if [ -n "$3" ]; then
    for c in "refs/tags/$3" "refs/remotes/origin/$3" "$3"; do t=$(git rev-parse -q --verify "$c^{commit}") && break; t=""; done
else
    t=$(git rev-parse -q --verify "refs/remotes/origin/$4^{commit}")
fi
printf 'target\t%s\n' "$t"
printf 'current_version\t%s\n' "$(git show "$cur:VERSION" 2>/dev/null | head -n 1)"
printf 'current_tag\t%s\n' "$(git describe --tags --exact-match "$cur" 2>/dev/null)"
git grep -E '^(revision|down_revision)' "$cur" -- "$2" | sed 's/^/cur_mig	/'
[ -n "$t" ] || exit 0
printf 'target_version\t%s\n' "$(git show "$t:VERSION" 2>/dev/null | head -n 1)"
printf 'target_tag\t%s\n' "$(git describe --tags --exact-match "$t" 2>/dev/null)"
git grep -E '^(revision|down_revision)' "$t" -- "$2" | sed 's/^/tgt_mig	/'"#;

/// A git ref must look like one (and never like an option).
pub fn validate_ref(reference: &str) -> Result<(), Error> {
    let ok = !reference.is_empty()
        && !reference.starts_with(['-', '/', '.'])
        && !reference.contains("..")
        && reference
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!("invalid ref {reference:?}"))
            .with_help("give a tag (v1.26.0), a branch or a commit id"))
    }
}

pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// What the tag of a release's kept images starts with (`prune` keeps those of the last
/// releases for rollback).
pub const RELEASE_TAG_PREFIX: &str = "ctops-";

/// The tag deploy gives the images of the release at `commit`.
pub fn release_tag(commit: &str) -> String {
    format!("{RELEASE_TAG_PREFIX}{}", short(commit))
}

impl Probe {
    /// Reads everything the plan depends on, concurrently over the one connection.
    pub async fn read(ctx: &Ctx, remote: &Remote, reference: Option<&str>) -> Result<Probe, Error> {
        let t = &ctx.target;
        let migrate = t.deploy.migrate.clone().unwrap_or_default();
        let versions = migrate.versions.clone().unwrap_or_default();
        let git = RemoteCommand::sh(
            GIT_PROBE,
            [
                t.dir.as_str(),
                versions.as_str(),
                reference.unwrap_or(""),
                t.branch.as_str(),
            ],
        )
        .read_only()
        .timeout(t.timeouts.command());
        let db_user = t.backup.db.user.clone().unwrap_or_default();
        let db_name = t.backup.db.database.clone().unwrap_or_default();
        let db_service = t.backup.db.service.clone().unwrap_or_default();
        let revision_sql = "SELECT version_num FROM alembic_version".to_string();
        let db = exec_in_service(
            t,
            &db_service,
            &[
                "psql".into(),
                "-U".into(),
                db_user,
                "-d".into(),
                db_name,
                "-tAc".into(),
                revision_sql,
            ],
        )
        .read_only();
        let config = Compose::new(t, t.compose_project.clone()).config_json();
        // Every image kept under a commit tag, read with the rest in one round trip.
        let kept_images = RemoteCommand::new([
            "docker",
            "images",
            "--no-trunc",
            "--format",
            "{{.Repository}}:{{.Tag}}\t{{.ID}}",
        ])
        .read_only();
        let (git, db, config, stack, kept_images) = tokio::join!(
            remote.run_ok(&git),
            remote.run(&db),
            remote.run_ok(&config),
            Stack::load(remote, t),
            remote.run_ok(&kept_images),
        );
        let (git, db, config, stack) = (git?.stdout_text(), db?, config?, stack?);
        let kept_images = kept_images?.stdout_text();

        let fields = tab_fields(&git);
        let one = |k: &str| {
            fields
                .get(k)
                .and_then(|v| v.first())
                .cloned()
                .unwrap_or_default()
        };
        if let Some(err) = fields
            .get("fetch-error")
            .and_then(|v| v.first())
            .filter(|e| !e.trim().is_empty())
        {
            return Err(Error::failed(format!(
                "`git fetch` failed in {} on {}: {}",
                t.dir,
                remote.host(),
                err.trim()
            ))
            .with_help("check that the host can reach the git origin without a prompt"));
        }
        let target_commit = one("target");
        if target_commit.is_empty() {
            let wanted = reference
                .map(str::to_string)
                .unwrap_or_else(|| format!("origin/{}", t.branch));
            return Err(Error::usage(format!("unknown ref `{wanted}` in {} on {}", t.dir, remote.host()))
                .with_help("give a tag, a branch on origin or a commit id; `ctops releases` lists what was deployed"));
        }
        let graph =
            |k: &str| Graph::parse_grep(&fields.get(k).map(|v| v.join("\n")).unwrap_or_default());
        let (current_graph, target_graph) = (graph("cur_mig"), graph("tgt_mig"));
        let db_revision = (db.status == 0)
            .then(|| db.stdout_text().trim().to_string())
            .filter(|r| !r.is_empty());
        let head = |g: &Graph, which: &str| {
            g.head().map_err(|e| {
                Error::refused(format!("the {which} code has {e}"))
                    .with_help("merge the heads (alembic merge) before deploying")
            })
        };
        let (compose_name, built, services) = parse_config(&config.stdout)?;
        let project = stack.project.clone().unwrap_or(compose_name);
        let current_commit = one("current");
        let describe = |tag: String, commit: &str| {
            if tag.is_empty() {
                short(commit).to_string()
            } else {
                tag
            }
        };
        let current = Release {
            reference: describe(one("current_tag"), &current_commit),
            commit: current_commit.clone(),
            version: one("current_version"),
            migration: head(&current_graph, "running")?,
        };
        let target = Release {
            // A commit id (what rollback passes) reads better as its tag, when it has one.
            reference: reference
                .filter(|r| r.len() < 40)
                .map(str::to_string)
                .unwrap_or_else(|| match (reference, one("target_tag")) {
                    // The branch head, unless it is a tagged release.
                    (None, tag) if tag.is_empty() => t.branch.clone(),
                    (_, tag) => describe(tag, &target_commit),
                }),
            commit: target_commit.clone(),
            version: one("target_version"),
            migration: head(&target_graph, "target")?,
        };
        let tag = release_tag(&target_commit);
        let mut target_images_kept = true;
        let mut needs_build = false;
        for (service, image) in &built {
            let wanted = format!("{image}:{tag}");
            let kept = kept_images
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .find(|(name, _)| *name == wanted)
                .map(|(_, id)| id);
            let used = stack.service(service).next().map(|c| c.image_id.as_str());
            target_images_kept &= kept.is_some();
            // The commit's kept image is its label: a container on another image needs the
            // right one. Without a kept image (never deployed by ctops) the running one is
            // trusted, so that a deploy of the running commit only converges.
            needs_build |= used.is_none() || (kept.is_some() && kept != used);
        }
        // What compose would start: every service of the project (a removed container
        // counts too) that has no running container.
        let mut stopped: Vec<String> = services
            .into_iter()
            .chain(stack.services())
            .filter(|s| !stack.service(s).any(|c| c.running()))
            .collect();
        stopped.sort();
        stopped.dedup();
        Ok(Probe {
            project,
            current,
            db_revision,
            target,
            dirty: fields.get("dirty").cloned().unwrap_or_default(),
            built,
            current_graph,
            target_graph,
            target_images_kept,
            needs_build,
            stopped,
            host_time: stack.host_time,
        })
    }

    /// Which way the schema moves, judged with the graph of whichever code is newer.
    pub fn direction(&self) -> Direction {
        let current = self
            .db_revision
            .as_deref()
            .or(self.current.migration.as_deref());
        let target = self.target.migration.as_deref();
        match direction(&self.target_graph, current, target) {
            Direction::Diverged => direction(&self.current_graph, current, target),
            d => d,
        }
    }

    pub fn same_commit(&self) -> bool {
        self.current.commit == self.target.commit
    }
}

/// What `compose config --format json` says: the project name, the services compose builds
/// with the image names it gives them, and every service's name.
type Config = (String, Vec<(String, String)>, Vec<String>);

fn parse_config(json: &[u8]) -> Result<Config, Error> {
    let v: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| Error::failed(format!("cannot read `compose config` output: {e}")))?;
    let name = v["name"].as_str().unwrap_or_default().to_string();
    let mut built = Vec::new();
    let mut all = Vec::new();
    if let Some(services) = v["services"].as_object() {
        for (service, def) in services {
            all.push(service.clone());
            if def.get("build").is_some() {
                let image = def["image"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{name}-{service}"));
                built.push((service.clone(), image));
            }
        }
    }
    Ok((name, built, all))
}

fn tab_fields(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('\t') {
            map.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    map
}
