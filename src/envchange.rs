//! The `.env` change transaction that `env`, `rotate` and `restore env` share: the current
//! file read with its checksum, and a new one put in place by a detached runner (copy,
//! checked replace, recreate, health gate; the previous file back on failure).

use anyhow::Result;
use serde::Serialize;

use crate::compose::Stack;
use crate::context::Ctx;
use crate::envfile::EnvFile;
use crate::error::{Error, Exit};
use crate::gate::{execute, failure_summary, gate_vars};
use crate::lock::HostLock;
use crate::remote::RemoteCommand;
use crate::report::Envelope;
use crate::runner::{self, Plan, Step};

pub fn env_path(ctx: &Ctx) -> String {
    let t = &ctx.target;
    format!("{}/{}", t.dir.trim_end_matches('/'), t.env_file)
}

/// The current `.env`, read over the connection (never echoed, never logged).
pub async fn read(ctx: &Ctx) -> Result<EnvFile, Error> {
    Ok(read_for_change(ctx).await?.file)
}

/// `.env` as read for a change, with the checksum the change is applied against.
pub struct Read {
    pub file: EnvFile,
    /// The sha256 of the bytes read: under the lock, right before the replace, the file must
    /// still have it, or the change would undo whatever was written since (exit 4).
    pub sha256: String,
}

/// The current `.env` and its checksum.
pub async fn read_for_change(ctx: &Ctx) -> Result<Read, Error> {
    let remote = ctx.remote().await?;
    let path = env_path(ctx);
    let out = remote
        .run_ok(&RemoteCommand::new(["cat", path.as_str()]).read_only())
        .await?;
    Ok(Read {
        file: EnvFile::parse(&out.stdout_text()),
        sha256: sha256_hex(&out.stdout),
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}

pub enum Source {
    /// A file already on the host (a backup copy).
    OnHost(String),
    /// New contents, sent over stdin to a private file in the state dir.
    Upload(Vec<u8>),
}

pub struct Change {
    pub command: &'static str,
    /// What the journal, the audit log and the messages call it (keys, never values).
    pub what: String,
    pub source: Source,
    /// Services to recreate (`up -d --no-deps`); empty: `up -d`, which recreates exactly
    /// the services whose configuration (`.env` included) changed.
    pub services: Vec<String>,
    /// Steps before `.env` is replaced (a role's new password), and their undo (run after the
    /// old file is back, before the services are recreated again).
    pub before_replace: Vec<Step>,
    pub undo_before_replace: Vec<Step>,
    /// Keep the new file even when the gate fails (a secret the old value of which is
    /// already revoked): no undo, and the message says so.
    pub keep_on_failure: bool,
    /// The sha256 of `.env` as the change was built from it: checked under the lock before
    /// anything is changed and again right before the replace (exit 4 if it differs).
    pub expect_sha256: Option<String>,
    /// Private files (path, contents) the steps read, written 0600 over stdin under the lock
    /// before the runner starts, removed with the temporary copies: what must not be in the
    /// runner's script (a password verifier).
    pub private_files: Vec<(String, Vec<u8>)>,
    /// `rotate` of a database password: whether the new password can be proven over the
    /// application's own path (`false`: PostgreSQL trusts that address, so any password logs
    /// in there). Reported as `proven` in the JSON.
    pub proven: Option<bool>,
}

impl Change {
    pub fn new(command: &'static str, what: String, source: Source, services: Vec<String>) -> Self {
        Change {
            command,
            what,
            source,
            services,
            before_replace: Vec::new(),
            undo_before_replace: Vec::new(),
            keep_on_failure: false,
            expect_sha256: None,
            private_files: Vec::new(),
            proven: None,
        }
    }
}

const CHECK_ENV: &str = include_str!("scripts/env-check.sh");
const REPLACE_ENV: &str = include_str!("scripts/env-replace.sh");
const PUT_BACK_ENV: &str = include_str!("scripts/env-put-back.sh");
const UPLOAD: &str = include_str!("scripts/env-upload.sh");
const TIDY: &str = include_str!("scripts/env-tidy.sh");

/// What a step's failure says when `.env` changed since it was read (env-check.sh).
const CHANGED_SINCE_READ: &str = ".env changed since it was read";

#[derive(Serialize)]
struct ChangeDoc<'a> {
    #[serde(flatten)]
    envelope: Envelope<'a>,
    op: String,
    outcome: String,
    change: &'a str,
    recreated: Vec<String>,
    steps: Vec<runner::Event>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
    /// On failure: how the runner ended, which says what state `.env` is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proven: Option<bool>,
}

/// Puts a new `.env` in place as a detached runner on the host: copy, replace, recreate,
/// gate; on failure the previous file back, recreate, gate.
pub async fn apply(ctx: &Ctx, change: Change) -> Result<Exit> {
    let t = &ctx.target;
    let remote = ctx.remote().await?;
    let env = env_path(ctx);
    let stack = Stack::load(remote, t).await?;
    let project = stack.project.clone().unwrap_or_else(|| "default".into());
    let compose = stack.compose(t);
    let op_id = runner::op_id(stack.host_time, "env");
    let state = t.state_dir.trim_end_matches('/');
    let before = format!("{state}/env-before-{op_id}");
    let source = match &change.source {
        Source::OnHost(path) => path.clone(),
        Source::Upload(_) => format!("{state}/env-new-{op_id}"),
    };
    let no_deps = !change.services.is_empty();
    let recreate = compose.up(&change.services, no_deps, false);
    let recreate_title = if no_deps {
        format!("recreate {}", change.services.join(", "))
    } else {
        "recreate the services whose configuration changed".to_string()
    };
    let mut temporary = vec![before.clone()];
    if matches!(change.source, Source::Upload(_)) {
        temporary.push(source.clone());
    }
    temporary.extend(change.private_files.iter().map(|(path, _)| path.clone()));
    let tidy = RemoteCommand::sh(TIDY, temporary.clone());
    let expect = change.expect_sha256.clone().unwrap_or_default();
    // Checked first, before any step changes anything (a role's password), and again by the
    // replace itself.
    let check = change.expect_sha256.as_ref().map(|sha| {
        let args = [env.clone(), sha.clone()].into_iter().chain(temporary);
        Step::new(
            "check_env",
            "check .env is as it was read",
            &[RemoteCommand::sh(CHECK_ENV, args)],
        )
    });
    let audit = runner::audit_fields(&t.name, &change.what, &op_id);
    let plan = Plan {
        op: "env",
        op_id: op_id.clone(),
        describe: change.what.clone(),
        vars: gate_vars(t, &project),
        forward: check
            .into_iter()
            .chain([Step::new(
                "backup_env",
                "copy the current .env",
                &[crate::catalog::env_backup_command(t)],
            )])
            .chain(change.before_replace.iter().cloned())
            .chain([
                // CHANGED may be set before the body runs: the undo is safe either way, as it
                // only moves `before` back, which exists only as a complete copy.
                Step::new(
                    "replace",
                    "put the new .env in place (atomic rename)",
                    &[RemoteCommand::sh(
                        REPLACE_ENV,
                        [
                            source.as_str(),
                            env.as_str(),
                            before.as_str(),
                            expect.as_str(),
                        ],
                    )],
                )
                .marks("CHANGED"),
                Step::new("recreate", recreate_title, std::slice::from_ref(&recreate)),
                Step::shell("gate", "health gate", "gate ''"),
                Step::new(
                    "tidy",
                    "drop the temporary copies",
                    std::slice::from_ref(&tidy),
                ),
            ])
            .collect(),
        back: if change.keep_on_failure {
            vec![Step::new(
                "tidy_back",
                "drop the temporary copies",
                std::slice::from_ref(&tidy),
            )]
        } else {
            [Step::new(
                "put_back",
                "put the previous .env back",
                &[RemoteCommand::sh(
                    PUT_BACK_ENV,
                    [before.as_str(), env.as_str()],
                )],
            )
            .when("CHANGED")]
            .into_iter()
            .chain(change.undo_before_replace.iter().cloned())
            .chain([
                Step::new(
                    "recreate_back",
                    "recreate the services again",
                    std::slice::from_ref(&recreate),
                )
                .when("CHANGED"),
                Step::shell("gate_back", "health gate", "gate ''").when("CHANGED"),
                Step::new(
                    "tidy_back",
                    "drop the temporary copies",
                    std::slice::from_ref(&tidy),
                ),
            ])
            .collect()
        },
        success: "changed",
        release_fields: None,
        audit_fields: runner::json_fields(&audit),
        seed_release: None,
    };
    if ctx.dry_run {
        return crate::report::print_dry_run(ctx, &plan);
    }
    let lock = HostLock::acquire(remote, &t.state_dir, &change.what).await?;
    let mut uploads: Vec<(&str, &[u8])> = Vec::new();
    if let Source::Upload(bytes) = &change.source {
        uploads.push((source.as_str(), bytes.as_slice()));
    }
    uploads.extend(
        change
            .private_files
            .iter()
            .map(|(path, bytes)| (path.as_str(), bytes.as_slice())),
    );
    for (path, bytes) in uploads {
        if let Err(e) = upload(remote, path, bytes).await {
            let _ = remote.run(&tidy).await;
            let _ = lock.release(remote).await;
            return Err(e.into());
        }
    }
    ctx.out
        .status(format!("{} on {}", change.what, ctx.target_label()));
    let (outcome, steps, interrupted) = execute(ctx, remote, &plan, &lock).await?;
    let changed_since_read = steps
        .iter()
        .any(|e| e.kind == "fail" && e.detail.contains(CHANGED_SINCE_READ));
    let (exit, message) = match outcome.as_str() {
        "changed" => (Exit::Ok, None),
        "failed" | "rolled-back" if changed_since_read => (Exit::Refused, Some(format!("{CHANGED_SINCE_READ}; run again ({} on {} was written by someone else after ctops read it; writing over it would have undone that change, so nothing was changed)", t.env_file, remote.host()))),
        "failed" => (Exit::Failed, Some(format!("{} failed before .env was changed; {}", change.command, failure_summary(&steps)))),
        "rolled-back" if interrupted => (Exit::Interrupted, Some("interrupted: the previous .env is back".to_string())),
        "rolled-back" if change.keep_on_failure => (Exit::Failed, Some(format!("{} failed; the new value stays (the old one is revoked): check the services' logs (ctops logs) and the value itself; {}", change.command, failure_summary(&steps)))),
        "rolled-back" => (Exit::Failed, Some(format!("{} failed: the previous .env is back; {}", change.command, failure_summary(&steps)))),
        _ => (Exit::Stranded, Some(format!("{op_id} did not end cleanly ({outcome}): see `ctops status`; the previous .env is kept as {before}"))),
    };
    if ctx.out.json {
        ctx.out.json_doc(&ChangeDoc {
            envelope: Envelope::new(change.command, ctx, exit == Exit::Ok),
            op: op_id.clone(),
            outcome: outcome.clone(),
            change: &change.what,
            recreated: change.services.clone(),
            steps,
            error: crate::report::error_object(exit, message.as_ref()),
            state: (exit != Exit::Ok).then(|| outcome.clone()),
            proven: change.proven,
        })?;
    }
    match message {
        None => ctx.out.status(format!(
            "{}: done; {} recreated, health gate passed",
            change.what,
            if no_deps {
                change.services.join(", ")
            } else {
                "the services whose configuration changed".to_string()
            }
        )),
        Some(m) => crate::say!("error: {m}"),
    }
    Ok(exit)
}

/// Writes `bytes` to a new private file `path` on the host, over stdin.
async fn upload(remote: &crate::remote::Remote, path: &str, bytes: &[u8]) -> Result<(), Error> {
    let out = remote
        .run_with_input(&RemoteCommand::sh(UPLOAD, [path]), Some(bytes))
        .await?;
    if out.status == 0 {
        return Ok(());
    }
    Err(Error::failed(format!(
        "cannot write {path} on {}: {}",
        remote.host(),
        out.stderr_text().trim()
    ))
    .with_help("check the state_dir's disk space and permissions, then run again"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs env-replace.sh with a real shell on files in a temporary dir: (exit code, the
    /// `.env` after, whether `before` exists).
    fn replace(current: &str, new: &str, sha: &str) -> (i32, String, bool) {
        let dir = tempfile::tempdir().unwrap();
        let (src, env, before) = (
            dir.path().join("new"),
            dir.path().join(".env"),
            dir.path().join("before"),
        );
        std::fs::write(&src, new).unwrap();
        std::fs::write(&env, current).unwrap();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(REPLACE_ENV)
            .arg("ctops")
            .args([&src, &env, &before])
            .arg(sha)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        (
            status.code().unwrap_or(-1),
            std::fs::read_to_string(&env).unwrap(),
            before.exists(),
        )
    }

    #[test]
    fn the_replace_refuses_a_file_changed_since_it_was_read() {
        let read = "A=1\n";
        let sha = sha256_hex(read.as_bytes());
        assert_eq!(replace(read, "A=2\n", &sha), (0, "A=2\n".into(), true));
        assert_eq!(
            replace("A=rotated\n", "A=2\n", &sha),
            (75, "A=rotated\n".into(), false),
            "nothing written, no copy for the undo to put back"
        );
        assert_eq!(replace("A=1\n", "A=2\n", ""), (0, "A=2\n".into(), true));
    }
}
