//! What deploy and rollback share (runbook 2.2, 3.1-3.3): read the running release, resolve
//! the target, plan the switch as typed steps, run it detached on the host, report.
//!
//! Where the runbook is wrong, this is right: migrations are downgraded with the image that
//! has the scripts (the current one) *before* the old code is checked out, and upgraded with
//! the new image in a one-off container before the running containers are replaced.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::compose::{exec_in_service, Compose, Stack};
use crate::context::Ctx;
use crate::error::{Error, Exit};
use crate::lock::HostLock;
use crate::migrations::{direction, Direction, Graph};
use crate::remote::{quote, Remote, RemoteCommand};
use crate::runner::{self, Event, Plan, Step};

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

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
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
        let (compose_name, built) = parse_config(&config.stdout)?;
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
                .unwrap_or_else(|| describe(one("target_tag"), &target_commit)),
            commit: target_commit.clone(),
            version: one("target_version"),
            migration: head(&target_graph, "target")?,
        };
        let tag = format!("ctops-{}", short(&target_commit));
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
        let stopped = stack
            .services()
            .into_iter()
            .filter(|s| !stack.service(s).any(|c| c.running()))
            .collect();
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

/// Parses `compose config --format json`: the project name, and the services compose builds
/// with the image names it gives them.
fn parse_config(json: &[u8]) -> Result<(String, Vec<(String, String)>), Error> {
    let v: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| Error::failed(format!("cannot read `compose config` output: {e}")))?;
    let name = v["name"].as_str().unwrap_or_default().to_string();
    let mut built = Vec::new();
    if let Some(services) = v["services"].as_object() {
        for (service, def) in services {
            if def.get("build").is_some() {
                let image = def["image"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{name}-{service}"));
                built.push((service.clone(), image));
            }
        }
    }
    Ok((name, built))
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

/// The kinds of switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Deploy,
    Rollback,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Deploy => "deploy",
            Kind::Rollback => "rollback",
        }
    }
}

/// Builds the plan: the steps to switch from the current release to the target, and the
/// steps that undo them.
pub fn plan(
    ctx: &Ctx,
    probe: &Probe,
    kind: Kind,
    force: bool,
    op_id: &str,
    command_line: &str,
    notify: Option<&Notify>,
) -> Result<Plan, Error> {
    let t = &ctx.target;
    let compose = Compose::new(t, Some(probe.project.clone()));
    let migrate = t.deploy.migrate.clone().unwrap_or_default();
    let service = migrate.service.clone().unwrap_or_else(|| "api".into());
    // lock_timeout: a migration waiting behind a long query fails fast instead of queueing
    // every API request behind it.
    let alembic = |args: &[String]| {
        let mut argv = vec!["env".to_string(), "PGOPTIONS=-c lock_timeout=10s".into()];
        argv.extend(args.iter().cloned());
        with_timeout(
            compose.run_rm(&service, &argv),
            t.timeouts.migrate.map(|d| d.0),
        )
    };
    let upgrade_to = |rev: Option<&str>| {
        let mut words = migrate.upgrade.clone().unwrap_or_default();
        if let (Some(rev), Some(last)) = (rev, words.last_mut()) {
            *last = rev.to_string();
        }
        words
    };
    let downgrade_to = |rev: Option<&str>| {
        let mut words = migrate.downgrade.clone().unwrap_or_default();
        words.push(rev.unwrap_or("base").to_string());
        words
    };
    let cur12 = format!("ctops-{}", short(&probe.current.commit));
    let tgt12 = format!("ctops-{}", short(&probe.target.commit));
    let checkout = |commit: &str| {
        RemoteCommand::new(["git", "checkout", "-q", "-B", t.branch.as_str(), commit])
            .in_dir(&t.dir)
    };
    let retag = |tag: &str| -> Vec<RemoteCommand> {
        probe
            .built
            .iter()
            .map(|(_, image)| {
                RemoteCommand::new([
                    "docker",
                    "tag",
                    &format!("{image}:{tag}"),
                    &format!("{image}:latest"),
                ])
            })
            .collect()
    };
    let tag_new: Vec<RemoteCommand> = probe
        .built
        .iter()
        .map(|(_, image)| {
            RemoteCommand::new([
                "docker",
                "tag",
                &format!("{image}:latest"),
                &format!("{image}:{tgt12}"),
            ])
        })
        .collect();
    let keep = probe
        .built
        .iter()
        .map(|(svc, image)| {
            format!(
                "keep_image {} {} {}",
                quote(svc),
                quote(image),
                quote(&cur12)
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let gate = |version: &str| format!("gate {}", quote(version));
    let build = with_timeout(compose.build(&[]), t.timeouts.build.map(|d| d.0));
    let up = compose.up(&[], false, false);

    let direction = probe.direction();
    if direction == Direction::Diverged {
        return Err(Error::refused(format!(
            "the database is at revision {:?}, which is not on the path to {:?} in either release's migrations",
            probe.db_revision, probe.target.migration
        ))
        .with_help("bring the schema to a known revision first (ctops exec api -- alembic ...)"));
    }
    let converge =
        probe.same_commit() && !force && !probe.needs_build && direction == Direction::None;
    let mut forward = Vec::new();
    let mut back = Vec::new();
    if converge {
        forward.push(
            Step::new(
                "up",
                "start what is stopped (same commit: no rebuild)",
                std::slice::from_ref(&up),
            )
            .marks("STARTED"),
        );
        // Nothing was started: one health check suffices; the stability window is for
        // services that (re)started, where a crash loop shows.
        let (title, body) = if probe.stopped.is_empty() {
            (
                "health check (nothing was stopped)".to_string(),
                format!("STABLE_FOR=0; {}", gate(&probe.target.version)),
            )
        } else {
            (
                format!(
                    "health gate for {} ({} started)",
                    probe.target.version,
                    probe.stopped.join(", ")
                ),
                gate(&probe.target.version),
            )
        };
        forward.push(Step::shell("gate", title, body));
    } else {
        forward.push(
            Step::shell("keep", format!("keep the running images as {cur12}"), keep)
                .marks("STARTED"),
        );
        if direction == Direction::Downgrade {
            // The current image has the scripts of the newer revisions: downgrade with it,
            // before the old code (which no longer knows them) is checked out.
            forward.push(
                Step::new(
                    "downgrade",
                    format!(
                        "alembic downgrade to {} with the current image",
                        probe.target.migration.as_deref().unwrap_or("base")
                    ),
                    &[alembic(&downgrade_to(probe.target.migration.as_deref()))],
                )
                .marks("DOWNGRADED"),
            );
        }
        forward.push(
            Step::new(
                "checkout",
                format!(
                    "check out {} ({})",
                    probe.target.reference,
                    short(&probe.target.commit)
                ),
                &[checkout(&probe.target.commit)],
            )
            .marks("CHANGED"),
        );
        if probe.target_images_kept && !force {
            forward.push(Step::new(
                "images",
                format!("reuse the kept images {tgt12}"),
                &retag(&tgt12),
            ));
        } else {
            forward.push(Step::new("build", "compose build", &[build]));
            forward.push(Step::new(
                "tag",
                format!("tag the new images {tgt12}"),
                &tag_new,
            ));
        }
        if direction == Direction::Upgrade {
            // The same backup as `ctops backup db`, with its manifest.
            let backup =
                super::backup::db_backup_command(t, crate::cli::BackupFormat::Custom, "pre-deploy");
            forward.push(Step::new("backup", "backup db before migrating", &[backup]));
            forward.push(
                Step::new(
                    "migrate",
                    "alembic upgrade head in a one-off container of the new image",
                    &[alembic(&upgrade_to(None))],
                )
                .marks("MIGRATING"),
            );
        }
        forward.push(Step::new("up", "compose up -d", std::slice::from_ref(&up)));
        forward.push(Step::shell(
            "gate",
            format!("health gate for {}", probe.target.version),
            gate(&probe.target.version),
        ));
        if let Some(notify) = notify {
            forward.push(Step::shell(
                "notify",
                format!("announce {}", probe.target.version),
                notify.body(&compose, &service),
            ));
        }

        let back_to = probe
            .db_revision
            .clone()
            .or(probe.current.migration.clone());
        back.push(
            Step::new(
                "undo_migrate",
                format!(
                    "alembic downgrade to {} with the new image",
                    back_to.as_deref().unwrap_or("base")
                ),
                &[alembic(&downgrade_to(back_to.as_deref()))],
            )
            .when("MIGRATING"),
        );
        back.push(
            Step::new(
                "undo_checkout",
                format!("check out {} again", short(&probe.current.commit)),
                &[checkout(&probe.current.commit)],
            )
            .when("CHANGED"),
        );
        back.push(
            Step::new(
                "undo_images",
                format!("restore the images {cur12}"),
                &retag(&cur12),
            )
            .when("STARTED"),
        );
        back.push(
            Step::new(
                "undo_downgrade",
                format!(
                    "alembic upgrade to {} with the restored image",
                    back_to.as_deref().unwrap_or("head")
                ),
                &[alembic(&upgrade_to(back_to.as_deref()))],
            )
            .when("DOWNGRADED"),
        );
        back.push(
            Step::new("undo_up", "compose up -d with the previous release", &[up]).when("STARTED"),
        );
        back.push(
            Step::shell(
                "undo_gate",
                format!("health gate for {}", probe.current.version),
                gate(&probe.current.version),
            )
            .when("STARTED"),
        );
    }
    let (user, host) = crate::lock::operator();
    let release = serde_json::json!({
        "ref": probe.target.reference, "commit": probe.target.commit, "version": probe.target.version,
        "migration": probe.target.migration, "by": format!("{user}@{host}"), "kind": kind.name(),
        "from": probe.current.commit,
    });
    let audit = serde_json::json!({
        "user": user, "host": host, "command": command_line, "target": t.name, "op": op_id,
        "from": probe.current.commit, "to": probe.target.commit,
    });
    let fields = |v: serde_json::Value| {
        v.to_string()
            .trim_start_matches('{')
            .trim_end_matches('}')
            .to_string()
    };
    Ok(Plan {
        op: kind.name(),
        op_id: op_id.to_string(),
        describe: format!(
            "{} {} ({}) over {} ({})",
            kind.name(),
            probe.target.reference,
            short(&probe.target.commit),
            probe.current.reference,
            short(&probe.current.commit)
        ),
        vars: gate_vars(t, &probe.project),
        forward,
        back,
        success: "deployed",
        release_fields: Some(fields(release)),
        audit_fields: fields(audit),
        seed_release: Some(fields(serde_json::json!({
            "ref": probe.current.reference, "commit": probe.current.commit, "version": probe.current.version,
            "migration": probe.db_revision.clone().or(probe.current.migration.clone()), "by": "ctops (running before the first deploy)",
        }))),
    })
}

fn with_timeout(cmd: RemoteCommand, limit: Option<std::time::Duration>) -> RemoteCommand {
    match limit {
        Some(d) => cmd.wrapped(&["timeout".to_string(), d.as_secs().to_string()]),
        None => cmd,
    }
}

/// The announcement of a new version (runbook 2.1 "Notify"): a POST of `{version, commit,
/// notes}` to `notify_url` and/or `notify_command` run in the migrate service with the
/// notes on stdin. Once per version: never for a redeploy, a rollback or a dry run. It runs
/// in the runner after the gate; a failure is a warning, never a failed deploy.
#[derive(Debug, Clone)]
pub struct Notify {
    url: Option<String>,
    command: Vec<String>,
    payload: String,
    notes: String,
    version: String,
    commit: String,
}

impl Notify {
    async fn for_new_version(
        ctx: &Ctx,
        remote: &Remote,
        probe: &Probe,
    ) -> Result<Option<Notify>, Error> {
        let d = &ctx.target.deploy;
        let command = d.notify_command.clone().unwrap_or_default();
        if (d.notify_url.is_none() && command.is_empty())
            || ctx.dry_run
            || probe.target.version == probe.current.version
        {
            return Ok(None);
        }
        let history = super::releases::read_history(remote, &ctx.target.state_dir).await?;
        if history.iter().any(|r| {
            r.version == probe.target.version && (r.result == "deployed" || r.result == "found")
        }) {
            return Ok(None);
        }
        let show = format!("{}:CHANGELOG.md", probe.target.commit);
        let changelog = remote
            .run(
                &RemoteCommand::new(["git", "show", show.as_str()])
                    .in_dir(&ctx.target.dir)
                    .read_only(),
            )
            .await?
            .stdout_text();
        let notes = changelog_section(&changelog, &probe.target.version);
        let payload = serde_json::json!({"version": probe.target.version, "commit": probe.target.commit, "notes": notes}).to_string();
        Ok(Some(Notify {
            url: d.notify_url.clone(),
            command,
            payload,
            notes,
            version: probe.target.version.clone(),
            commit: probe.target.commit.clone(),
        }))
    }

    fn body(&self, compose: &Compose, service: &str) -> String {
        let mut body = Vec::new();
        if let Some(url) = &self.url {
            let post = RemoteCommand::new([
                "curl",
                "-fsS",
                "-m",
                "10",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &self.payload,
                url,
            ]);
            body.push(format!(
                "{} >/dev/null || journal note \"notification failed: POST {} did not succeed\"",
                post.render(),
                quote(url).replace('"', "")
            ));
        }
        if !self.command.is_empty() {
            let mut argv = vec![
                "env".to_string(),
                format!("CTOPS_VERSION={}", self.version),
                format!("CTOPS_COMMIT={}", self.commit),
            ];
            argv.extend(self.command.iter().cloned());
            let run = compose.exec(service, &argv);
            body.push(format!(
                "printf '%s' {} | {} || journal note \"notification failed: notify_command exited $?\"",
                quote(&self.notes),
                run.render()
            ));
        }
        body.push("true".into());
        body.join("\n")
    }
}

/// The CHANGELOG section of `version`: its lines up to the next `## ` heading.
pub fn changelog_section(changelog: &str, version: &str) -> String {
    let mut lines = changelog
        .lines()
        .skip_while(|l| !(l.starts_with("## ") && l.contains(version)));
    let Some(_heading) = lines.next() else {
        return String::new();
    };
    lines
        .take_while(|l| !l.starts_with("## "))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

/// How a switch ended, for humans and `--json`.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub command: &'a str,
    pub target: &'a str,
    pub host: &'a str,
    pub ok: bool,
    pub op: String,
    pub outcome: String,
    pub from: Release,
    pub to: Release,
    pub rolled_back: bool,
    pub steps: Vec<Event>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// Locks, probes, plans, runs and reports one switch.
/// One switch, as the user asked for it.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: Kind,
    pub reference: Option<String>,
    pub force: bool,
    /// What the lock and the audit log record.
    pub command_line: String,
    /// Run preflight (runbook 2.3) on this local checkout before anything changes.
    pub preflight: Option<std::path::PathBuf>,
}

pub async fn run(ctx: &Ctx, request: &Request) -> Result<Exit> {
    if let Some(r) = &request.reference {
        validate_ref(r)?;
    }
    let remote = ctx.remote().await?;
    let t = &ctx.target;
    let acquire = async {
        match ctx.dry_run {
            true => Ok(None),
            false => HostLock::acquire(remote, &t.state_dir, &request.command_line)
                .await
                .map(Some),
        }
    };
    // Reading the host needs no lock, so it overlaps with taking it: one round trip less.
    let reference = request.reference.as_deref();
    let ((), lock, probe) = tokio::join!(
        warn_about_last_operation(ctx, remote),
        acquire,
        Probe::read(ctx, remote, reference)
    );
    let lock = lock?;
    let probe = match lock.as_ref().and_then(|l| l.took_over.as_ref()) {
        Some(stale) => {
            ctx.out
                .warn(format!("took over a stale host lock: {}", stale.describe()));
            // Its holder may have changed the host while it was read: read it again.
            Probe::read(ctx, remote, reference).await
        }
        None => probe,
    };
    let result = match probe {
        Ok(probe) => plan_and_run(ctx, remote, request, lock.as_ref(), probe).await,
        Err(e) => Err(e.into()),
    };
    if let (Err(_), Some(lock)) = (&result, &lock) {
        // The runner never started (or never got the lock's lease): free it here.
        let _ = lock.release(remote).await;
    }
    result
}

async fn plan_and_run(
    ctx: &Ctx,
    remote: &Remote,
    request: &Request,
    lock: Option<&HostLock>,
    probe: Probe,
) -> Result<Exit> {
    let t = &ctx.target;
    let kind = request.kind;
    if !probe.dirty.is_empty() {
        return Err(Error::refused(format!("the checkout {} on {} has local changes: {}", t.dir, remote.host(), probe.dirty.join(", ")))
            .with_help("commit or discard them on the host (ctops never runs `git clean`, which would delete .env)")
            .into());
    }
    let host_time = chrono_now(remote).await?;
    let op_id = runner::op_id(host_time, kind.name());
    if let Some(repo) = &request.preflight {
        ctx.out.status("preflight (runbook 2.3):");
        super::preflight::report(ctx, &super::preflight::run_checks(ctx, repo, &probe), false)?;
    }
    let notify = match kind {
        Kind::Deploy => Notify::for_new_version(ctx, remote, &probe).await?,
        Kind::Rollback => None,
    };
    let plan = plan(
        ctx,
        &probe,
        kind,
        request.force,
        &op_id,
        &request.command_line,
        notify.as_ref(),
    )?;
    ctx.out.status(format!(
        "{} {} on {}: {} ({}) -> {} ({})",
        kind.name(),
        probe.target.reference,
        ctx.target_label(),
        probe.current.version,
        short(&probe.current.commit),
        probe.target.version,
        short(&probe.target.commit)
    ));
    let Some(lock) = lock else {
        ctx.out
            .status("dry run: the plan below would run on the host, detached; nothing was changed");
        ctx.out.print(&plan.render(&t.state_dir, "DRY-RUN"))?;
        return Ok(Exit::Ok);
    };
    let script = plan.render(&t.state_dir, &lock.token);
    let pid = runner::start(remote, &t.state_dir, &op_id, &script).await?;
    let outcome = follow_with_interrupts(ctx, remote, &op_id, pid).await;
    if matches!(outcome, Followed::Ended { .. }) {
        let _ = runner::mark_seen(remote, &t.state_dir, &op_id).await;
    }
    report(ctx, &probe, kind, &op_id, outcome)
}

/// The variables the runner's `gate` and `container_of` read.
pub fn gate_vars(t: &crate::config::Target, project: &str) -> Vec<(&'static str, String)> {
    let secs = |d: Option<crate::config::HumanDuration>, default: u64| {
        d.map(|d| d.0.as_secs()).unwrap_or(default).to_string()
    };
    let interval = t
        .deploy
        .health_interval
        .map(|d| d.0.as_secs_f64())
        .unwrap_or(1.0);
    vec![
        ("P", quote(project).into_owned()),
        ("HEALTH_URL", quote(&t.health_url).into_owned()),
        ("HEALTH_TIMEOUT", secs(t.deploy.health_timeout, 60)),
        ("HEALTH_INTERVAL", format!("{interval}")),
        ("STABLE_FOR", secs(t.deploy.stable_for, 10)),
    ]
}

pub async fn chrono_now(remote: &Remote) -> Result<i64, Error> {
    let out = remote
        .run_ok(&RemoteCommand::new(["date", "-u", "+%s"]).read_only())
        .await?;
    Ok(out.stdout_text().trim().parse().unwrap_or(0))
}

/// What following the runner came to.
pub enum Followed {
    Ended {
        outcome: String,
        steps: Vec<Event>,
        interrupted: bool,
    },
    RunnerDied(Vec<Event>),
    Lost(Error, Vec<Event>),
    Abandoned(Vec<Event>),
}

/// Streams the journal, printing each step with its elapsed time. The first Ctrl-C (or
/// SIGTERM/SIGHUP) asks the runner to stop after the current step and roll back; a second
/// stops watching at once.
pub async fn follow_with_interrupts(ctx: &Ctx, remote: &Remote, op_id: &str, pid: u32) -> Followed {
    let t = &ctx.target;
    let mut steps: Vec<Event> = Vec::new();
    let mut started: BTreeMap<String, u64> = BTreeMap::new();
    let wall = Instant::now();
    let fault = std::env::var("CTOPS_FAULT").ok();
    let (fault_tx, mut fault_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let print = |e: &Event| {
        match e.kind.as_str() {
            "start" => {
                started.insert(e.step.clone(), e.millis);
                ctx.out.status(format!("  … {}", e.detail));
                if fault.as_deref() == Some(&format!("disconnect-at:{}", e.step)) {
                    let _ = fault_tx.send(());
                }
            }
            "ok" | "fail" => {
                let took = started
                    .get(&e.step)
                    .map(|s| e.millis.saturating_sub(*s))
                    .unwrap_or(0);
                let detail = if e.kind == "fail" {
                    format!(": {}", e.detail)
                } else {
                    String::new()
                };
                ctx.out.status(format!(
                    "  {} {} ({:.1}s){detail}",
                    ctx.out.mark(e.kind == "ok"),
                    e.step,
                    took as f64 / 1000.0
                ));
            }
            "note" if e.step.starts_with("notification failed") => ctx.out.warn(&e.step),
            "note" => ctx.out.status(format!("  note: {}", e.step)),
            _ => {}
        }
        steps.push(e.clone());
    };
    let mut interrupted = false;
    let mut abandoned = false;
    let result = {
        let follow = runner::follow(remote, &t.state_dir, op_id, pid, ctx.out.verbose > 0, print);
        tokio::pin!(follow);
        loop {
            tokio::select! {
                result = &mut follow => break result,
                _ = crate::signals::interrupted() => {
                    if interrupted {
                        abandoned = true;
                        break Ok(None);
                    }
                    interrupted = true;
                    ctx.out.status("interrupt: the current step finishes, then the host is rolled back (Ctrl-C again to stop watching)");
                    if let Err(e) = runner::request_abort(remote, &t.state_dir, op_id).await {
                        ctx.out.warn(format!("could not ask the runner to stop: {e}"));
                    }
                }
                Some(()) = fault_rx.recv() => {
                    ctx.out.warn("fault injection: dropping the SSH connection");
                    remote.kill_master();
                }
            }
        }
    };
    tracing::debug!(elapsed = ?wall.elapsed(), "followed the runner");
    match result {
        _ if abandoned => Followed::Abandoned(steps),
        Ok(Some(outcome)) => Followed::Ended {
            outcome,
            steps,
            interrupted,
        },
        Ok(None) => Followed::RunnerDied(steps),
        Err(e) => Followed::Lost(e, steps),
    }
}

fn report(ctx: &Ctx, probe: &Probe, kind: Kind, op_id: &str, followed: Followed) -> Result<Exit> {
    let t = &ctx.target;
    let (outcome, exit, message, steps) = match followed {
        Followed::Ended { outcome, steps, interrupted } => {
            let exit = match outcome.as_str() {
                "deployed" => Exit::Ok,
                "rolled-back" | "failed" if interrupted => Exit::Interrupted,
                "rolled-back" | "failed" => Exit::Failed,
                _ => Exit::Stranded,
            };
            let message = match outcome.as_str() {
                "deployed" => None,
                "rolled-back" => Some(format!("{} of {} failed; {} ({}) runs again", kind.name(), probe.target.reference, probe.current.version, short(&probe.current.commit))),
                "failed" => Some(format!("{} of {} failed before anything changed", kind.name(), probe.target.reference)),
                _ => Some(format!("{} of {} failed and so did the automatic rollback: the host needs attention", kind.name(), probe.target.reference)),
            };
            (outcome, exit, message, steps)
        }
        Followed::RunnerDied(steps) => ("interrupted".into(), Exit::Stranded, Some(format!("the runner of {op_id} stopped without finishing: see `ctops status`")), steps),
        Followed::Lost(e, steps) => (
            "unknown".into(),
            Exit::Stranded,
            Some(format!("{e}; the operation {op_id} goes on on the host by itself: `ctops status` reports how it ended")),
            steps,
        ),
        Followed::Abandoned(steps) => (
            "unknown".into(),
            Exit::Stranded,
            Some(format!("stopped watching; the operation {op_id} is rolling back on the host: `ctops status` reports how it ended")),
            steps,
        ),
    };
    let ok = exit == Exit::Ok;
    let doc = Report {
        command: kind.name(),
        target: &t.name,
        host: &t.ssh,
        ok,
        op: op_id.to_string(),
        outcome: outcome.clone(),
        from: probe.current.clone(),
        to: probe.target.clone(),
        rolled_back: outcome == "rolled-back",
        steps,
        error: message
            .as_ref()
            .map(|m| serde_json::json!({"kind": exit.kind(), "message": m})),
        state: (!ok).then(|| outcome.clone()),
    };
    if ctx.out.json {
        ctx.out.json_doc(&doc)?;
    }
    match message {
        None => {
            ctx.out.status(format!(
                "{} {} ({}) is live on {}",
                kind.name(),
                probe.target.version,
                short(&probe.target.commit),
                ctx.target_label()
            ));
            Ok(Exit::Ok)
        }
        Some(m) if ctx.out.json => {
            eprintln!("error: {m}");
            Ok(exit)
        }
        Some(m) => {
            eprintln!("error: {m}");
            eprintln!(
                "help: the step logs are in {}/ops/{op_id}/ on the host",
                t.state_dir
            );
            Ok(exit)
        }
    }
}

/// The next command after an operation that ended while nobody watched, or that was cut
/// off, says so.
pub async fn warn_about_last_operation(ctx: &Ctx, remote: &Remote) {
    if let Ok(Some(last)) = runner::last_operation(remote, &ctx.target.state_dir).await {
        match last.state.as_str() {
            "running" => ctx.out.warn(format!(
                "operation {} ({}) is still running on the host",
                last.id, last.describe
            )),
            "interrupted" => ctx.out.warn(format!(
                "operation {} ({}) was interrupted mid-way: check `ctops status`",
                last.id, last.describe
            )),
            outcome if !last.watched => {
                ctx.out.warn(format!(
                    "operation {} ({}) finished while nobody watched: {outcome} at {}",
                    last.id,
                    last.describe,
                    last.ended.as_deref().unwrap_or("?")
                ));
                let _ = runner::mark_seen(remote, &ctx.target.state_dir, &last.id).await;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_changelog_section_of_a_version_is_its_notes() {
        let text = "# Changelog\n\n## [1.27.1] - 2026-01-13\n### Fixed\n- calmer bot\n\n## [1.27.0]\n- older\n";
        assert_eq!(changelog_section(text, "1.27.1"), "### Fixed\n- calmer bot");
        assert_eq!(changelog_section(text, "9.9.9"), "");
    }

    #[test]
    fn refs_are_validated() {
        for ok in ["v1.26.0", "main", "feature/x", "abc123"] {
            validate_ref(ok).unwrap();
        }
        for bad in ["--upload-pack=x", "a..b", "$(id)", "a b", ""] {
            assert!(validate_ref(bad).is_err(), "{bad}");
        }
    }
}
