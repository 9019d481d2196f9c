//! Runbook 6.3, `logs`: the last lines of one or more services, streamed live with `-f`.
//! Ctrl-C or a closed pipe ends it; the host-side `compose logs` is stopped with it.

use anyhow::Result;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::Envelope;
use crate::cli::LogsArgs;
use crate::compose::{validate_service_name, LogsOptions, Stack};
use crate::context::Ctx;
use crate::error::{Error, Exit};

#[derive(Serialize)]
struct LogLine<'a> {
    #[serde(flatten)]
    envelope: Envelope<'a>,
    service: Option<&'a str>,
    line: &'a str,
}

pub async fn run(ctx: &Ctx, args: &LogsArgs) -> Result<Exit> {
    for service in &args.services {
        validate_service_name(service)?;
    }
    let since = args.since.as_deref().map(compose_since).transpose()?;
    let remote = ctx.remote().await?;
    let stack = Stack::load(remote, &ctx.target).await?;
    let opts = LogsOptions {
        follow: args.follow,
        tail: Some(args.tail),
        since,
        prefix: args.services.len() != 1,
    };
    let cmd = stack.compose(&ctx.target).logs(&args.services, &opts);
    let timeout = (!args.follow).then(|| ctx.target.timeouts.command());
    let status = if ctx.out.json {
        let single = (args.services.len() == 1).then(|| args.services[0].as_str());
        let (mut writer, reader) = tokio::io::duplex(64 * 1024);
        let stream = async {
            let status = remote.stream(&cmd, &mut writer, timeout).await;
            drop(writer);
            status
        };
        let (status, printed) = tokio::join!(stream, print_json_lines(ctx, reader, single));
        printed?;
        status?
    } else {
        remote
            .stream(&cmd, &mut tokio::io::stdout(), timeout)
            .await?
    };
    if status != 0 {
        return Err(Error::failed(format!(
            "`compose logs` exited {status} on {}",
            remote.host()
        ))
        .with_help("see the message above; `ctops status` lists the services")
        .into());
    }
    Ok(Exit::Ok)
}

async fn print_json_lines(
    ctx: &Ctx,
    reader: impl tokio::io::AsyncRead + Unpin,
    single: Option<&str>,
) -> Result<()> {
    let mut lines = BufReader::new(reader).lines();
    while let Some(line) = lines.next_line().await? {
        let (service, text) = match single {
            Some(s) => (Some(s), line.as_str()),
            None => split_prefix(&line),
        };
        ctx.out.json_doc(&LogLine {
            envelope: Envelope::new("logs", ctx, true),
            service,
            line: text,
        })?;
    }
    Ok(())
}

/// `bot-1  | text` → (`bot`, `text`).
fn split_prefix(line: &str) -> (Option<&str>, &str) {
    match line.split_once(" | ") {
        Some((prefix, text)) => {
            let container = prefix.trim();
            let service = container
                .rsplit_once(['-', '_'])
                .map_or(container, |(s, _)| s);
            (Some(service), text)
        }
        None => (None, line),
    }
}

/// `--since` as compose takes it: a duration in seconds, or an RFC 3339 time as given.
fn compose_since(value: &str) -> Result<String, Error> {
    if let Ok(duration) = humantime::parse_duration(value) {
        return Ok(format!("{}s", duration.as_secs()));
    }
    if humantime::parse_rfc3339_weak(value).is_ok() {
        return Ok(value.to_string());
    }
    Err(Error::usage(format!("invalid --since {value:?}"))
        .with_help("use a duration such as `10m` or `2h`, or an RFC 3339 time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_durations_and_times_only() {
        assert_eq!(compose_since("10m").unwrap(), "600s");
        assert_eq!(
            compose_since("2026-11-26T10:00:00Z").unwrap(),
            "2026-11-26T10:00:00Z"
        );
        assert!(compose_since("$(id)").is_err());
    }

    #[test]
    fn prefixes_are_split_into_services() {
        assert_eq!(split_prefix("bot-1  | tick 3"), (Some("bot"), "tick 3"));
        assert_eq!(split_prefix("no prefix"), (None, "no prefix"));
    }
}
