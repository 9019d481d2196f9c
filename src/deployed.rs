//! What the host runs and what it would run, read before anything changes, and the history
//! of what it ran (`releases.jsonl` in the state dir).

use serde::{Deserialize, Serialize};

use crate::compose::Stack;
use crate::context::Ctx;
use crate::discover::{self, tab_fields};
use crate::error::Error;
use crate::migrations::{direction, Direction, Graph, Head};
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
    /// The database's revision now (may differ from the current code's head); `Err`
    /// (unknown, with the reason) when it could not be read.
    pub db_revision: Result<Option<String>, String>,
    /// The stack has no database service ctops could find (and none is configured).
    pub no_database: bool,
    pub target: Release,
    pub dirty: Vec<String>,
    /// Built services and their image names.
    pub built: Vec<(String, String)>,
    pub current_head: Head,
    pub target_head: Head,
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
        let git = discover::git_probe(t, reference);
        // Every image kept under a commit tag, read with the rest in one round trip.
        let kept_images = RemoteCommand::new([
            "docker",
            "images",
            "--no-trunc",
            "--format",
            "{{.Repository}}:{{.Tag}}\t{{.ID}}",
        ])
        .read_only();
        let (git, db_revision, config, stack, kept_images) = tokio::join!(
            remote.run_ok(&git),
            discover::db_revision(remote, t),
            ctx.compose_config(),
            Stack::load(remote, t),
            remote.run_ok(&kept_images),
        );
        let (git, config, stack) = (git?.stdout_text(), config?, stack?);
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
        // The migration scripts of both commits, read at their refs (round two: where they
        // live comes from each commit's alembic.ini, read in round one).
        let versions = t.deploy.migrate.as_ref().and_then(|m| m.versions.clone());
        let current_commit = one("current");
        let (current_side, target_side) = tokio::join!(
            discover::head_at(
                remote,
                t,
                &current_commit,
                discover::locate(versions.as_deref(), &fields, "cur")
            ),
            discover::head_at(
                remote,
                t,
                &target_commit,
                discover::locate(versions.as_deref(), &fields, "tgt")
            ),
        );
        let ((current_head, current_graph), (target_head, target_graph)) =
            (current_side?, target_side?);
        let (compose_name, built, services) = parse_config(config)?;
        let project = stack.project.clone().unwrap_or(compose_name);
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
            migration: current_head.revision(),
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
            migration: target_head.revision(),
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
            no_database: t.unknown.contains_key("backup.db.service"),
            target,
            dirty: fields.get("dirty").cloned().unwrap_or_default(),
            built,
            current_head,
            target_head,
            current_graph,
            target_graph,
            target_images_kept,
            needs_build,
            stopped,
            host_time: stack.host_time,
        })
    }

    /// Which way the schema moves, judged with the graph of whichever code is newer; a
    /// refusal (nothing changed yet) when a fact it needs is unknown.
    pub fn direction(&self) -> Result<Direction, Error> {
        let unknown = |why: String| {
            Err(Error::refused(format!("{why}; nothing was changed"))
                .with_help("ctops moves a schema only when it knows both ends: see `ctops config check` and the README's \"How ctops finds the facts\""))
        };
        let db = match &self.db_revision {
            Ok(revision) => revision.clone(),
            // A stack without a database and without migrations has no schema to move.
            Err(_)
                if self.no_database
                    && self.current_head == Head::Absent
                    && self.target_head == Head::Absent =>
            {
                return Ok(Direction::None)
            }
            Err(why) => {
                return unknown(format!(
                    "cannot tell the database's migration revision: {why}"
                ))
            }
        };
        let target = match &self.target_head {
            Head::Known(revision) => revision.clone(),
            Head::Absent if db.is_none() => return Ok(Direction::None),
            Head::Absent => {
                return unknown(format!(
                    "the database is at revision {}, but {} has no alembic.ini to say where its schema belongs (set `deploy.migrate.versions`)",
                    db.unwrap_or_default(),
                    self.target.reference
                ))
            }
            Head::Unknown(why) => return unknown(format!("the migration head of {} is unknown: {why}", self.target.reference)),
        };
        let judged = match direction(&self.target_graph, db.as_deref(), target.as_deref()) {
            Direction::Diverged => direction(&self.current_graph, db.as_deref(), target.as_deref()),
            d => d,
        };
        match judged {
            Direction::Diverged => match &self.current_head {
                Head::Unknown(why) => unknown(format!("the running code's migration head is unknown: {why}")),
                _ => Err(Error::refused(format!(
                    "the database is at revision {}, which is not on the path to {} in either release's migrations; nothing was changed",
                    db.as_deref().unwrap_or("base"),
                    target.as_deref().unwrap_or("base")
                ))
                .with_help("bring the schema to a known revision first (`ctops exec SERVICE -- alembic ...`), or check `deploy.migrate.versions`")),
            },
            d => Ok(d),
        }
    }

    /// The database's revision before the switch, when it could be read.
    pub fn db_revision_now(&self) -> Option<String> {
        self.db_revision.clone().ok().flatten()
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

/// One line of the release history kept on the host (`releases.jsonl` in the state dir).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Record {
    #[serde(rename = "ref")]
    pub reference: String,
    pub commit: String,
    pub version: String,
    pub migration: Option<String>,
    pub by: String,
    pub at: String,
    pub result: String,
    /// `deploy` or `rollback` (absent in records of the running release found before the
    /// first deploy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The commit this release replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A rollback replaced this release (computed from the newer records, not stored).
    pub rolled_back_from: bool,
}

/// Marks every record whose release a rollback replaced (history newest first): the record
/// just newer than it is a rollback from its commit.
pub fn mark_rolled_back_from(history: &mut [Record]) {
    for i in 1..history.len() {
        let (newer, older) = (&history[i - 1], &history[i]);
        history[i].rolled_back_from = newer.kind.as_deref() == Some("rollback")
            && newer.from.as_deref() == Some(older.commit.as_str());
    }
}

/// The commits a rollback left and that no deploy has brought back since: `rollback`
/// without `--to` goes past them (a second rollback goes one release further back, never
/// to the release the first one left).
pub fn abandoned_commits(history: &[Record]) -> std::collections::HashSet<String> {
    let mut abandoned = std::collections::HashSet::new();
    for record in history.iter().rev() {
        abandoned.remove(&record.commit);
        if record.kind.as_deref() == Some("rollback") {
            if let Some(from) = &record.from {
                abandoned.insert(from.clone());
            }
        }
    }
    abandoned
}

/// The history, newest first; lines that do not parse are skipped.
pub async fn read_history(remote: &Remote, state_dir: &str) -> Result<Vec<Record>, Error> {
    let cmd = RemoteCommand::sh(
        r#"cat "$1/releases.jsonl" 2>/dev/null || true"#,
        [state_dir],
    )
    .read_only();
    let text = remote.run_ok(&cmd).await?.stdout_text();
    let mut records: Vec<Record> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    records.reverse();
    mark_rolled_back_from(&mut records);
    Ok(records)
}
