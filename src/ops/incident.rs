//! Runbook 4.2, `incident snapshot`: everything the investigation steps look at, collected
//! at once over the one connection into a private local folder, with every `.env` value
//! masked wherever it appears (logs print connection strings and tokens more often than
//! anyone expects).

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::Envelope;
use crate::compose::{LogsOptions, Stack};
use crate::context::Ctx;
use crate::envfile::EnvFile;
use crate::error::{Error, Exit};
use crate::remote::RemoteCommand;

/// Lines of each service's log, and the most bytes kept of them.
const LOG_LINES: u64 = 500;
const LOG_BYTES: usize = 512 * 1024;
/// Values shorter than this are not masked: `1`, `ok` or `true` would blank out the logs.
const SHORTEST_SECRET: usize = 4;

/// Kernel OOM-killer lines; `dmesg` is often root-only, the journal may not be.
const OOM: &str = r#"{ dmesg -T 2>/dev/null || sudo -n dmesg -T 2>/dev/null || journalctl -k --no-pager -q 2>/dev/null || echo '(kernel log not readable by this user)'; } | grep -iE 'out of memory|oom-kill|killed process' | tail -n 50; true"#;

#[derive(Serialize)]
struct Doc<'a> {
    #[serde(flatten)]
    envelope: Envelope<'a>,
    folder: String,
    files: Vec<String>,
    masked_values: usize,
}

pub async fn snapshot(ctx: &Ctx, out: Option<&Path>) -> Result<Exit> {
    let t = &ctx.target;
    let remote = ctx.remote().await?;
    let stack = Stack::load(remote, t).await?;
    let compose = stack.compose(t);
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace([':', '-'], "");
    let folder = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(format!("incident-{}-{stamp}", t.name));
    if ctx.dry_run {
        ctx.out.status(format!(
            "dry run: would collect logs, state, stats, disk, memory, OOM lines, releases and the audit log into {}",
            folder.display()
        ));
        return Ok(Exit::Ok);
    }
    let state = t.state_dir.trim_end_matches('/');
    let mut jobs: Vec<(String, RemoteCommand)> = vec![
        (
            "stats.txt".into(),
            RemoteCommand::new(["docker", "stats", "--no-stream"]),
        ),
        ("df.txt".into(), RemoteCommand::new(["df", "-h"])),
        ("free.txt".into(), RemoteCommand::new(["free", "-h"])),
        (
            "oom.txt".into(),
            RemoteCommand::sh(OOM, Vec::<String>::new()),
        ),
        (
            "releases.jsonl".into(),
            RemoteCommand::sh(
                "tail -n 50 \"$1\" 2>/dev/null; true",
                [format!("{state}/releases.jsonl")],
            ),
        ),
        (
            "audit.jsonl".into(),
            RemoteCommand::sh(
                "tail -n 200 \"$1\" 2>/dev/null; true",
                [format!("{state}/audit.jsonl")],
            ),
        ),
    ];
    for service in stack.services() {
        let opts = LogsOptions {
            tail: Some(LOG_LINES),
            ..LogsOptions::default()
        };
        jobs.push((
            format!("logs/{service}.log"),
            compose.logs(std::slice::from_ref(&service), &opts),
        ));
    }
    let env = crate::envchange::read(ctx);
    let collected = futures::future::join_all(jobs.iter().map(|(name, cmd)| async move {
        let cmd = cmd.clone().read_only();
        let text = match remote.run(&cmd).await {
            Ok(out) => {
                let mut text = out.stdout_text();
                if out.status != 0 {
                    text.push_str(&format!(
                        "\n(exit {}: {})\n",
                        out.status,
                        out.stderr_text().trim()
                    ));
                }
                text
            }
            Err(e) => format!("(not collected: {e})\n"),
        };
        (name.clone(), text)
    }));
    let (env, collected) = tokio::join!(env, collected);
    let secrets = secret_values(&env?);

    let mut files = Vec::new();
    create_private_dir(&folder)?;
    create_private_dir(&folder.join("logs"))?;
    for (name, text) in collected {
        let text = if name.starts_with("logs/") {
            cap(&text.replace("\x1b[2K", ""), LOG_BYTES)
        } else {
            text
        };
        write_private(&folder.join(&name), &mask(&text, &secrets))?;
        files.push(name);
    }
    let summary = summary(ctx, &stack, remote.host());
    write_private(&folder.join("summary.txt"), &mask(&summary, &secrets))?;
    write_private(&folder.join("ps.txt"), &mask(&ps_table(&stack), &secrets))?;
    files.extend(["summary.txt".to_string(), "ps.txt".to_string()]);
    files.sort();
    if ctx.out.json {
        ctx.out.json_doc(&Doc {
            envelope: Envelope::new("incident snapshot", ctx, true),
            folder: folder.display().to_string(),
            files,
            masked_values: secrets.len(),
        })?;
    } else {
        ctx.out.print(&summary)?;
        ctx.out.status(format!(
            "incident snapshot in {} ({} files; {} .env values masked)",
            folder.display(),
            files.len(),
            secrets.len()
        ));
    }
    Ok(Exit::Ok)
}

/// Every `.env` value worth masking, with its URL-encoded form (as it appears in a
/// `DATABASE_URL`), longest first so a value inside another is masked as part of it.
fn secret_values(env: &EnvFile) -> Vec<(String, String)> {
    let mut values: Vec<(String, String)> = env
        .entries()
        .into_iter()
        .filter(|(_, v)| v.chars().count() >= SHORTEST_SECRET)
        .flat_map(|(k, v)| {
            let encoded = url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            let mut forms = vec![(v.clone(), format!("[masked:{k}]"))];
            if encoded != v {
                forms.push((encoded, format!("[masked:{k}]")));
            }
            forms
        })
        .collect();
    values.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    values.dedup_by(|a, b| a.0 == b.0);
    values
}

fn mask(text: &str, secrets: &[(String, String)]) -> String {
    secrets.iter().fold(text.to_string(), |t, (value, label)| {
        t.replace(value, label)
    })
}

/// The last `limit` bytes (the newest lines), cut at a line boundary.
fn cap(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let tail = &text[start..];
    let tail = tail.split_once('\n').map_or(tail, |(_, rest)| rest);
    format!("(first {} bytes cut)\n{tail}", text.len() - tail.len())
}

fn ps_table(stack: &Stack) -> String {
    let mut out =
        String::from("SERVICE\tSTATE\tHEALTH\tRESTARTS\tOOM_KILLED\tEXIT\tSTARTED\tIMAGE\n");
    for c in &stack.containers {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            c.service,
            c.state,
            c.health.as_deref().unwrap_or("-"),
            c.restarts,
            c.oom_killed,
            c.exit_code,
            c.started_at,
            c.image
        ));
    }
    out
}

fn summary(ctx: &Ctx, stack: &Stack, host: &str) -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let mut lines = vec![
        format!("incident snapshot of {} ({host}) at {now}", ctx.target.name),
        format!(
            "checkout {} (compose file {})",
            ctx.target.dir, ctx.target.compose_file
        ),
    ];
    for c in &stack.containers {
        let mut notes = Vec::new();
        if !c.running() {
            notes.push(format!("{} (exit {})", c.state, c.exit_code));
        }
        if c.restarts > 0 {
            notes.push(format!("{} restarts", c.restarts));
        }
        if c.oom_killed {
            notes.push("OOM-killed".to_string());
        }
        if let Some(h) = c.health.as_deref().filter(|h| *h != "healthy") {
            notes.push(h.to_string());
        }
        let state = if notes.is_empty() {
            "running".to_string()
        } else {
            notes.join(", ")
        };
        lines.push(format!("  {:<10} {state}", c.service));
    }
    lines.join("\n") + "\n"
}

/// 0700 whatever the umask, and made so if it existed already: logs hold users' data.
fn create_private_dir(dir: &Path) -> Result<(), Error> {
    crate::catalog::local::private_dir(dir)
}

fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_masked_plain_and_url_encoded_longest_first() {
        let env = EnvFile::parse(
            "PW=p@ss word!\nURL=postgres://u:p%40ss+word%21@h/db\nFLAG=1\nTOKEN=p@ss\n",
        );
        let secrets = secret_values(&env);
        let text =
            "login with p@ss word! or p%40ss+word%21; flag 1; url postgres://u:p%40ss+word%21@h/db";
        let masked = mask(text, &secrets);
        assert!(
            !masked.contains("p@ss") && !masked.contains("p%40ss"),
            "{masked}"
        );
        assert!(masked.contains("flag 1"), "short values stay: {masked}");
        assert!(masked.contains("[masked:URL]"), "{masked}");
    }

    #[test]
    fn logs_are_capped_to_their_newest_lines() {
        let text: String = (0..1000).map(|n| format!("line {n}\n")).collect();
        let capped = cap(&text, 100);
        assert!(capped.ends_with("line 999\n"));
        assert!(capped.len() < 140);
        assert!(!capped.contains("line 1\n"));
    }
}
