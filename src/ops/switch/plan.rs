//! The switch as typed steps: what to run, in which order, and what undoes each.

use crate::compose::Compose;
use crate::context::Ctx;
use crate::deployed::{release_tag, short, Probe};
use crate::error::Error;
use crate::gate::gate_vars;
use crate::migrations::Direction;
use crate::remote::{quote, Remote, RemoteCommand};
use crate::runner::{Plan, Step};

/// The kinds of switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Deploy,
    Rollback,
}

impl Kind {
    pub fn name(self) -> &'static str {
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
    // Needed only when the schema moves (or a notification runs in it): a deploy of a stack
    // whose migrate service cannot be told still converges.
    let service = migrate.service.clone().unwrap_or_default();
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
    // `alembic heads` in a one-off container of the image that is about to migrate must say
    // what the repository said: the scripts ctops read are the ones that will run.
    let heads_agree = |id: &'static str, which: &str, head: &str| {
        let heads = migrate.heads.clone().unwrap_or_default();
        let run = alembic(&heads).without_watcher().render();
        Step::shell(
            id,
            format!("alembic heads in the {which} image says {head}, as the repository does"),
            format!(
                "{}\nout=$({run} 2>&1) || {{ printf '%s\\n' \"$out\"; exit 1; }}\nprintf '%s\\n' \"$out\"\n\
                 printf '%s\\n' \"$out\" | grep -Eq \"^$WANT( |\\$)\" || {{ echo \"the {which} image's scripts end at: $out; the repository's at $WANT: set deploy.migrate.versions to the folder the image uses\"; exit 1; }}",
                crate::remote::assign("WANT", head)
            ),
        )
    };
    let cur12 = release_tag(&probe.current.commit);
    let tgt12 = release_tag(&probe.target.commit);
    let checkout =
        |commit: &str| RemoteCommand::sh(GIT_CHECKOUT, [t.branch.as_str(), commit]).in_dir(&t.dir);
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
    let keep: Vec<String> = probe
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
        .collect();
    let gate = |version: &str| format!("gate {}", quote(version));
    let build = with_timeout(compose.build(&[]), t.timeouts.build.map(|d| d.0));
    let up = compose.up(&[], false, false);

    let direction = probe.direction()?;
    let converge =
        probe.same_commit() && !force && !probe.needs_build && direction == Direction::None;
    let mut forward = Vec::new();
    let mut back = Vec::new();
    if converge {
        // Nothing stopped: nothing to start, one health check suffices (the stability
        // window is for services that (re)started, where a crash loop shows). `--force`
        // recreates everything.
        let (title, body) = if probe.stopped.is_empty() {
            (
                "health check (nothing was stopped)".to_string(),
                format!("STABLE_FOR=0; {}", gate(&probe.target.version)),
            )
        } else {
            forward.push(
                Step::new(
                    "up",
                    format!(
                        "start what is stopped: {} (same commit: no rebuild)",
                        probe.stopped.join(", ")
                    ),
                    std::slice::from_ref(&up),
                )
                .marks("STARTED"),
            );
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
        if direction != Direction::None {
            t.fact("deploy.migrate.service", &migrate.service)?;
        }
        if let (Direction::Downgrade, Some(head)) = (&direction, &probe.current.migration) {
            forward.push(heads_agree("heads", "current", head));
        }
        if direction == Direction::Downgrade {
            // A downgrade drops what newer revisions added: a verified backup first, at the
            // revision the database has now. If it fails, nothing has changed yet.
            let backup = crate::catalog::db_backup_command(
                t,
                crate::cli::BackupFormat::Custom,
                "pre-rollback",
                true,
            )?;
            forward.push(Step::new(
                "backup",
                "backup db before the downgrade",
                &[backup],
            ));
        }
        // Done, not started: the undo retags the kept images, which exist only once
        // `keep` succeeded; a failed `keep` changed nothing that runs.
        forward.push(
            Step::lines("keep", format!("keep the running images as {cur12}"), keep)
                .marks_when_done("STARTED"),
        );
        if direction == Direction::Downgrade {
            // The current image has the scripts of the newer revisions: downgrade with it,
            // before the old code (which no longer knows them) is checked out. Marked when it
            // starts: a downgrade can fail half-applied, and the upgrade back must run then.
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
        // Marked when it starts: a failed checkout may have changed part of the tree, and
        // checking out the current commit again is harmless when it changed nothing.
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
        if let (Direction::Upgrade, Some(head)) = (&direction, &probe.target.migration) {
            forward.push(heads_agree("heads", "new", head));
        }
        if direction == Direction::Upgrade {
            // The same backup as `ctops backup db`, with its manifest.
            let backup = crate::catalog::db_backup_command(
                t,
                crate::cli::BackupFormat::Custom,
                "pre-deploy",
                true,
            )?;
            forward.push(Step::new("backup", "backup db before migrating", &[backup]));
            // Marked when it starts: a migration can fail half-applied (several revisions,
            // or DDL outside a transaction), and the downgrade must run then.
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

        let back_to = probe.db_revision_now();
        back.push(
            Step::new(
                "undo_migrate",
                format!(
                    "alembic downgrade to {} with the new image (the pre-deploy backup covers it)",
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
    let mut audit = crate::runner::audit_fields(&t.name, command_line, op_id);
    audit["from"] = serde_json::json!(probe.current.commit);
    audit["to"] = serde_json::json!(probe.target.commit);
    let fields = |v: serde_json::Value| crate::runner::json_fields(&v);
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
            "migration": probe.db_revision_now(), "by": "ctops (running before the first deploy)",
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
    pub async fn for_new_version(
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
        let history = crate::deployed::read_history(remote, &ctx.target.state_dir).await?;
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

    /// The step body: notify.sh below its values. The URL (often with a bot token in it)
    /// is in no argv on the host (curl reads it from a config on stdin) and the journal
    /// names its host only.
    fn body(&self, compose: &Compose, service: &str) -> String {
        use crate::remote::assign;
        let (config, host) = match &self.url {
            Some(url) => (curl_url_config(url), url_host(url)),
            None => (String::new(), String::new()),
        };
        let mut lines = vec![
            assign("NOTIFY_CURL", &config),
            assign("NOTIFY_HOST", &host),
            assign("NOTIFY_PAYLOAD", &self.payload),
            assign("NOTIFY_NOTES", &self.notes),
            assign("NOTIFY_RUN", if self.command.is_empty() { "" } else { "1" }),
        ];
        if !self.command.is_empty() {
            let mut argv = vec![
                "env".to_string(),
                format!("CTOPS_VERSION={}", self.version),
                format!("CTOPS_COMMIT={}", self.commit),
            ];
            argv.extend(self.command.iter().cloned());
            // A function, as the runner's steps are: the command is quoted words (with a `cd`).
            lines.push(format!(
                "notify_command() {{\n    {}\n}}",
                compose.exec(service, &argv).render()
            ));
        }
        lines.push(NOTIFY.to_string());
        lines.join("\n")
    }
}

const NOTIFY: &str = include_str!("../../scripts/notify.sh");
const GIT_CHECKOUT: &str = include_str!("../../scripts/git-checkout.sh");

/// `url = "..."`, a curl config line (`curl -K -`): inside double quotes, `\\` and `\"` are
/// the escapes curl reads; a line break or tab is written as its escape too.
fn curl_url_config(url: &str) -> String {
    let escaped = url
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace('\t', "\\t");
    format!("url = \"{escaped}\"")
}

/// The URL's host, all a journal note may say of it (its path or query often holds a token).
fn url_host(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "notify_url (not a URL)".to_string())
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

#[cfg(test)]
mod notify_tests {
    use super::*;

    #[test]
    fn the_notify_url_is_a_curl_config_line_and_the_journal_names_its_host() {
        let url = r#"https://api.example.org/bot12:AB"C\D/send?x=$(id)"#;
        assert_eq!(
            curl_url_config(url),
            r#"url = "https://api.example.org/bot12:AB\"C\\D/send?x=$(id)""#
        );
        assert_eq!(url_host(url), "api.example.org");
        assert_eq!(url_host("not a url"), "notify_url (not a URL)");
    }

    /// The step body with both a URL and a command: valid sh, and the URL only inside the
    /// curl config assignment (which the runner's script holds, never an argv).
    #[test]
    fn the_notify_body_is_valid_sh_with_the_url_in_no_command() {
        let target = crate::config::parse(
            "[targets.t]\nssh = \"h\"\ndir = \"/srv/a b\"\n",
            "c.toml".as_ref(),
            ".".as_ref(),
            None,
        )
        .unwrap()
        .target;
        let notify = Notify {
            url: Some("https://h.example/bot1:TOKEN/x?a=$(id)".into()),
            command: vec!["./announce".into(), "--to".into(), "ops's room".into()],
            payload: r#"{"version":"1.2.3"}"#.into(),
            notes: "- it's \"fixed\"".into(),
            version: "1.2.3".into(),
            commit: "abc".into(),
        };
        let body = notify.body(&Compose::new(&target, None), "api");
        let check = std::process::Command::new("sh")
            .args(["-n", "-c", &body])
            .output()
            .unwrap();
        assert!(check.status.success(), "{body}");
        let with_token: Vec<&str> = body.lines().filter(|l| l.contains("TOKEN")).collect();
        assert_eq!(
            with_token,
            [r#"NOTIFY_CURL='url = "https://h.example/bot1:TOKEN/x?a=$(id)"'"#]
        );
        assert!(body.contains("NOTIFY_HOST=h.example"), "{body}");
    }
}
