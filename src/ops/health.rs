//! Runbook 6.1-6.2, `health`: the API's `/health` fetched from the operator's machine, the
//! `[checks]` run on the host (HTTP ones fetched by ctops through the SSH connection), and
//! every service's live state, all at once. Exit 0 all up, 1 API down, 5 degraded.

mod watch;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::future::join_all;
use reqwest::Url;
use serde::Serialize;

use super::Envelope;
use crate::catalog::{host_db_backups, Manifest};
pub use crate::checks::{verdict, Row};
use crate::cli::HealthArgs;
use crate::compose::{epoch_of, exec_in_service, uptime, Stack};
use crate::config::Check;
use crate::context::Ctx;
use crate::error::{Error, Exit};
use crate::probes::{parse_endpoint, probe, published_address, Endpoint, Kind, PgIdentity};
use crate::remote::Remote;

#[derive(Debug, Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    envelope: Envelope<'a>,
    status: &'static str,
    checks: Vec<Row>,
}

pub async fn run(ctx: &Ctx, args: &HealthArgs) -> Result<Exit> {
    let Some(interval) = args.watch else {
        let rows = round(ctx).await?;
        return show(ctx, &rows);
    };
    if !ctx.out.json && std::io::stdout().is_terminal() {
        let title = format!("health of {}", ctx.target_label());
        return watch::run(title, interval.0, || round(ctx)).await;
    }
    loop {
        let rows = round(ctx).await?;
        show(ctx, &rows)?;
        tokio::time::sleep(interval.0).await;
    }
}

/// Where a native check connects, as the host sees it.
#[derive(Debug, Clone)]
struct Native {
    kind: Kind,
    host: String,
    port: u16,
}

/// Every `postgres`/`redis` check's address; a check that names a compose service reads its
/// published port from `compose config` (read once per invocation), and one that cannot be
/// told is refused (exit 2).
async fn resolve_natives(ctx: &Ctx) -> Result<BTreeMap<String, Native>, Error> {
    let mut natives = BTreeMap::new();
    for (name, check) in &ctx.target.checks {
        let Some((kind, at)) = check.native() else {
            continue;
        };
        let (host, port) = match parse_endpoint(at) {
            Endpoint::Address { host, port } => (host, port),
            Endpoint::Service(service) => {
                let config = ctx.compose_config().await?;
                published_address(config, &service, kind).map_err(|why| {
                    Error::usage(format!(
                        "health check `{name}`: cannot tell where {} listens: {why}",
                        kind.name()
                    ))
                    .with_help(format!(
                        "name the address as the host sees it: {name} = {{ {} = \"127.0.0.1:PORT\" }}",
                        kind.name()
                    ))
                })?
            }
        };
        natives.insert(name.clone(), Native { kind, host, port });
    }
    Ok(natives)
}

fn show(ctx: &Ctx, rows: &[Row]) -> Result<Exit> {
    let exit = verdict(rows);
    let status = match exit {
        Exit::Ok => "up",
        Exit::Failed => "api down",
        _ => "degraded",
    };
    if ctx.out.json {
        let envelope = Envelope::new("health", ctx, exit == Exit::Ok);
        ctx.out.json_doc(&Report {
            envelope,
            status,
            checks: rows.to_vec(),
        })?;
    } else {
        ctx.out
            .status(format!("health of {}: {status}", ctx.target_label()));
        let table: Vec<Vec<crate::output::Styled>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.name.as_str().into(),
                    ctx.out.mark_cell(r.ok),
                    format!("{} ms", r.latency_ms).into(),
                    r.detail.as_str().into(),
                ]
            })
            .collect();
        ctx.out.print(
            &ctx.out
                .table(&["CHECK", "STATUS", "LATENCY", "DETAIL"], table),
        )?;
    }
    Ok(exit)
}

/// One pass over every check, all concurrent over the one connection.
async fn round(ctx: &Ctx) -> Result<Vec<Row>> {
    let timeout = ctx.target.timeouts.check();
    let api = timed("api", async {
        let url =
            Url::parse(&ctx.target.health_url).map_err(|e| format!("invalid health_url: {e}"))?;
        ctx.out.echo_local(&format!("GET {url}"));
        let answer = fetch(&url, None, timeout).await?;
        describe_api(&answer)
    });
    let host = async {
        let remote = ctx.remote().await?;
        let state = async {
            let started = Instant::now();
            Stack::load(remote, &ctx.target)
                .await
                .map(|s| (s, started.elapsed()))
        };
        let commands = ctx
            .target
            .checks
            .iter()
            .filter(|(_, check)| check.native().is_none())
            .map(|(name, check)| host_check(ctx, remote, name, check, timeout));
        // Native checks wait only for their addresses: a SERVICE form's `compose config`
        // (read once per invocation) runs beside the stack's state, not before the round.
        let natives = async {
            let natives = resolve_natives(ctx).await?;
            let probes = natives
                .iter()
                .map(|(name, native)| timed(name, native_check(ctx, remote, native, timeout)));
            Ok::<_, Error>(join_all(probes).await)
        };
        let (state, mut rows, natives, backup) =
            tokio::join!(state, join_all(commands), natives, backup_row(ctx, remote));
        rows.extend(natives?);
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        let (stack, ps_latency) = state?;
        explain_stopped_services(&mut rows, &stack, &ctx.target.checks);
        rows.extend(service_rows(&stack, ps_latency));
        rows.extend(backup);
        Ok::<_, Error>(rows)
    };
    // The host side first: its connection takes longest, so it starts before the API
    // request's client is built.
    let (host_rows, api_row) = tokio::join!(host, api);
    let mut rows = vec![api_row];
    rows.extend(host_rows?);
    Ok(rows)
}

async fn host_check(
    ctx: &Ctx,
    remote: &Remote,
    name: &str,
    check: &Check,
    timeout: Duration,
) -> Row {
    timed(name, async {
        match (&check.http, &check.service, &check.command) {
            (Some(url), _, _) => http_check(remote, url, check.expect_status, timeout).await,
            (None, Some(service), Some(argv)) => {
                command_check(ctx, remote, service, argv, check, timeout).await
            }
            _ => Err("neither http nor service/command".to_string()),
        }
    })
    .await
}

/// Runs the check's command in a running container of the service (`docker exec` on the
/// container id: cheaper than `compose exec`, which parses the whole project first).
async fn command_check(
    ctx: &Ctx,
    remote: &Remote,
    service: &str,
    argv: &[String],
    check: &Check,
    timeout: Duration,
) -> Result<String, String> {
    // No watcher here: a check is short, and every process the watcher adds is felt when
    // all checks start at once; the host's `timeout` ends it if ctops goes away.
    let limit = vec!["timeout".to_string(), timeout.as_secs().max(1).to_string()];
    let cmd = exec_in_service(&ctx.target, service, argv)
        .wrapped(&limit)
        .read_only()
        .timeout(timeout);
    let out = remote.run(&cmd).await.map_err(|e| e.message)?;
    let said = first_line(&out.stdout_text())
        .or_else(|| first_line(&out.stderr_text()))
        .unwrap_or_default();
    if out.status != 0 {
        return Err(format!(
            "`{}` exited {}: {said}",
            argv.join(" "),
            out.status
        ));
    }
    match &check.expect {
        Some(expected) if !out.stdout_text().contains(expected.as_str()) => {
            Err(format!("expected {expected:?}, got {said:?}"))
        }
        _ => Ok(said),
    }
}

/// Asks PostgreSQL or Redis itself through a forward of the one connection (no exec).
async fn native_check(
    ctx: &Ctx,
    remote: &Remote,
    native: &Native,
    timeout: Duration,
) -> Result<String, String> {
    let local = remote
        .forward(&native.host, native.port)
        .await
        .map_err(|e| e.message)?;
    let db = &ctx.target.backup.db;
    let user = db.user.clone().unwrap_or_else(|| "postgres".to_string());
    let who = PgIdentity {
        database: db.database.clone().unwrap_or_else(|| user.clone()),
        user,
    };
    let shown = if native.host.contains(':') {
        format!("[{}]:{}", native.host, native.port)
    } else {
        format!("{}:{}", native.host, native.port)
    };
    probe(native.kind, local, &shown, &who, timeout).await
}

async fn http_check(
    remote: &Remote,
    url: &str,
    expect_status: Option<u16>,
    timeout: Duration,
) -> Result<String, String> {
    let url = Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
    let host = url.host_str().ok_or("URL has no host")?.to_string();
    let port = url.port_or_known_default().ok_or("URL has no port")?;
    let local = remote.forward(&host, port).await.map_err(|e| e.message)?;
    let answer = fetch(&url, Some(local), timeout).await?;
    let good = match expect_status {
        Some(code) => answer.status.as_u16() == code,
        None => answer.status.is_success(),
    };
    let detail = format!("HTTP {}", answer.status);
    if good {
        Ok(detail)
    } else {
        Err(detail)
    }
}

struct Answer {
    status: reqwest::StatusCode,
    body: Option<serde_json::Value>,
}

/// GET `url`, optionally through a local port forward (the URL, Host header and TLS name
/// stay those of the original).
async fn fetch(url: &Url, via: Option<SocketAddr>, timeout: Duration) -> Result<Answer, String> {
    let mut client = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    let mut request_url = url.clone();
    let mut host_header = None;
    if let Some(local) = via {
        match url.domain() {
            Some(domain) => client = client.resolve(domain, local),
            None => {
                host_header = Some(url.authority().to_string());
                let _ = request_url.set_ip_host(local.ip());
                let _ = request_url.set_port(Some(local.port()));
            }
        }
    }
    let client = client.build().map_err(|e| e.to_string())?;
    let mut request = client.get(request_url);
    if let Some(host) = host_header {
        request = request.header(reqwest::header::HOST, host);
    }
    let response = request
        .send()
        .await
        .map_err(|e| describe_reqwest_error(&e, timeout))?;
    let status = response.status();
    let body = response.json::<serde_json::Value>().await.ok();
    Ok(Answer { status, body })
}

fn describe_api(answer: &Answer) -> Result<String, String> {
    let mut detail = format!("HTTP {}", answer.status);
    if let Some(body) = &answer.body {
        for key in ["version", "status"] {
            if let Some(value) = body.get(key).and_then(|v| v.as_str()) {
                detail.push_str(&format!(", {key} {value}"));
            }
        }
        if body.get("database") == Some(&serde_json::Value::Bool(false)) {
            detail.push_str(", database unreachable");
        }
    }
    if answer.status.is_success() {
        Ok(detail)
    } else {
        Err(detail)
    }
}

fn describe_reqwest_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!(
            "no answer within {} (timeouts.check)",
            humantime::format_duration(timeout)
        )
    } else if e.is_connect() {
        "connection refused or unreachable".to_string()
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            text = format!("{text}: {cause}");
            source = cause.source();
        }
        text
    }
}

/// The age of the newest database backup against `backup.db.max_age` (`0s`: not checked).
async fn backup_row(ctx: &Ctx, remote: &Remote) -> Option<Row> {
    let max_age = ctx.target.backup.db.max_age?.0;
    if max_age.is_zero() {
        return None;
    }
    let dir = ctx.target.backup_dir.as_str();
    let row = timed("backup db", async {
        let (now, manifests) = host_db_backups(remote, dir).await.map_err(|e| e.message)?;
        judge_backup_age(now, &manifests, max_age, dir)
    });
    Some(row.await)
}

/// "newest db-…, 3h 12m old", or why that is not good enough.
fn judge_backup_age(
    now: i64,
    manifests: &[Manifest],
    max_age: Duration,
    dir: &str,
) -> Result<String, String> {
    let newest = manifests
        .iter()
        .filter_map(|m| epoch_of(&m.created).map(|at| (at, m)))
        .max_by_key(|(at, _)| *at);
    let Some((at, manifest)) = newest else {
        return Err(format!("no database backup in {dir} (ctops backup db)"));
    };
    let detail = format!(
        "newest {}, {} old",
        manifest.name,
        uptime(&manifest.created, now).unwrap_or_default()
    );
    if (now - at).max(0) as u64 > max_age.as_secs() {
        Err(format!(
            "{detail}: older than backup.db.max_age {}",
            humantime::format_duration(max_age)
        ))
    } else {
        Ok(detail)
    }
}

/// A row per service from the live container state (not Docker's cached healthcheck).
fn service_rows(stack: &Stack, latency: Duration) -> Vec<Row> {
    stack
        .services()
        .into_iter()
        .map(|service| {
            let containers: Vec<_> = stack.service(&service).collect();
            let ok = containers.iter().all(|c| c.running());
            let detail = containers
                .iter()
                .map(|c| {
                    let mut d = c.state.clone();
                    if !c.running() {
                        d.push_str(&format!(" (exit {})", c.exit_code));
                    }
                    d.push_str(&format!(", {} restarts", c.restarts));
                    if c.oom_killed {
                        d.push_str(", OOM-killed");
                    }
                    d
                })
                .collect::<Vec<_>>()
                .join("; ");
            Row {
                name: format!("service {service}"),
                ok,
                latency_ms: latency.as_millis() as u64,
                detail,
            }
        })
        .collect()
}

/// A command check of a service that is not running failed for that reason: say so, with the
/// container's state, rather than what `docker` said.
fn explain_stopped_services(rows: &mut [Row], stack: &Stack, checks: &BTreeMap<String, Check>) {
    for row in rows.iter_mut().filter(|r| !r.ok) {
        let service = checks.get(&row.name).and_then(|c| match c.native() {
            Some((_, at)) => match parse_endpoint(at) {
                Endpoint::Service(_) => Some(at),
                Endpoint::Address { .. } => None,
            },
            None => c.service.as_deref(),
        });
        if let Some(service) = service {
            if !stack.service(service).any(|c| c.running()) {
                row.detail = not_running(stack, service);
            }
        }
    }
}

fn not_running(stack: &Stack, service: &str) -> String {
    match stack.service(service).next() {
        Some(c) => format!(
            "service `{service}` is not running ({}, exit {})",
            c.state, c.exit_code
        ),
        None => format!("service `{service}` has no container"),
    }
}

fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

async fn timed<F>(name: &str, check: F) -> Row
where
    F: std::future::Future<Output = Result<String, String>>,
{
    let started = Instant::now();
    let result = check.await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let (ok, detail) = match result {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    Row {
        name: name.to_string(),
        ok,
        latency_ms,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, ok: bool) -> Row {
        Row {
            name: name.into(),
            ok,
            latency_ms: 1,
            detail: String::new(),
        }
    }

    fn manifest(name: &str, created: &str) -> Manifest {
        Manifest {
            kind: "db".into(),
            name: name.into(),
            format: "custom".into(),
            sha256: "00".into(),
            size: 1,
            created: created.into(),
            database: "d".into(),
            revision: None,
            label: String::new(),
            tables: BTreeMap::new(),
        }
    }

    #[test]
    fn the_newest_backup_is_judged_by_its_age() {
        let now = epoch_of("2026-11-27T12:00:00Z").unwrap();
        let backups = [
            manifest("db-old", "2026-11-25T12:00:00Z"),
            manifest("db-new", "2026-11-27T09:00:00Z"),
            manifest("db-undated", "garbage"),
        ];
        let day = Duration::from_secs(26 * 3600);
        assert_eq!(
            judge_backup_age(now, &backups, day, "/b").unwrap(),
            "newest db-new, 3h old"
        );
        let two_hours = Duration::from_secs(2 * 3600);
        let stale = judge_backup_age(now, &backups, two_hours, "/b").unwrap_err();
        assert!(
            stale.contains("db-new, 3h old") && stale.contains("max_age 2h"),
            "{stale}"
        );
        let none = judge_backup_age(now, &[], day, "/b").unwrap_err();
        assert!(none.contains("no database backup in /b"), "{none}");
    }

    #[test]
    fn the_api_row_decides_between_failed_and_degraded() {
        assert_eq!(verdict(&[row("api", true), row("redis", true)]), Exit::Ok);
        assert_eq!(
            verdict(&[row("api", true), row("redis", false)]),
            Exit::Degraded
        );
        assert_eq!(
            verdict(&[row("api", false), row("redis", false)]),
            Exit::Failed
        );
    }
}
