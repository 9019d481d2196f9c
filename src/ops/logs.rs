//! Runbook 6.3, `logs`: the last lines of one or more services, streamed live with `-f`.
//! Ctrl-C or a closed pipe ends it; the host-side `compose logs` is stopped with it.

use anyhow::Result;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};

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
    let single = (args.services.len() == 1).then(|| args.services[0].as_str());
    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    let stream = async {
        let status = remote.stream(&cmd, &mut writer, timeout).await;
        drop(writer);
        status
    };
    let (status, printed) = tokio::join!(stream, print_lines(ctx, reader, single));
    printed?;
    let status = status?;
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

/// Prints each line as it arrives: as is, or as a JSON document with `--json`.
async fn print_lines(
    ctx: &Ctx,
    reader: impl AsyncRead + Unpin,
    single: Option<&str>,
) -> Result<()> {
    let mut reader = BufReader::new(reader);
    let mut stdout = tokio::io::stdout();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw).await? == 0 {
            return Ok(());
        }
        let line = strip_line_clear(&raw);
        if !ctx.out.json {
            stdout.write_all(line).await?;
            stdout.flush().await?;
            continue;
        }
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\n', '\r']);
        let (service, text) = match single {
            Some(s) => (Some(s), text),
            None => split_prefix(text),
        };
        ctx.out.json_doc(&LogLine {
            envelope: Envelope::new("logs", ctx, true),
            service,
            line: text,
        })?;
    }
}

/// Compose 2.26 starts every log line with an "erase line" escape (`ESC [ 2 K`) even with
/// `--no-color` and no TTY; the lines ctops prints are the service's own, byte for byte.
fn strip_line_clear(line: &[u8]) -> &[u8] {
    line.strip_prefix(b"\x1b[2K").unwrap_or(line)
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
    fn compose_line_clears_are_stripped() {
        assert_eq!(strip_line_clear(b"\x1b[2Kbot tick 1\n"), b"bot tick 1\n");
        assert_eq!(strip_line_clear(b"plain\n"), b"plain\n");
    }

    #[test]
    fn prefixes_are_split_into_services() {
        assert_eq!(split_prefix("bot-1  | tick 3"), (Some("bot"), "tick 3"));
        assert_eq!(split_prefix("no prefix"), (None, "no prefix"));
    }
}
