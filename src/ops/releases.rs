//! Runbook 3, `releases`: the deployed release history kept on the host (append-only JSON
//! lines in the state dir), newest first.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::Envelope;
use crate::context::Ctx;
use crate::error::{Error, Exit};
use crate::remote::{Remote, RemoteCommand};

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
    Ok(records)
}

#[derive(Serialize)]
struct Doc<'a> {
    #[serde(flatten)]
    envelope: Envelope<'a>,
    releases: Vec<Record>,
}

pub async fn run(ctx: &Ctx) -> Result<Exit> {
    let remote = ctx.remote().await?;
    let releases = read_history(remote, &ctx.target.state_dir).await?;
    if ctx.out.json {
        ctx.out.json_doc(&Doc {
            envelope: Envelope::new("releases", ctx, true),
            releases,
        })?;
        return Ok(Exit::Ok);
    }
    ctx.out
        .status(format!("releases on {}, newest first", ctx.target_label()));
    let rows = releases
        .iter()
        .map(|r| {
            vec![
                r.reference.clone(),
                r.commit.chars().take(12).collect(),
                r.version.clone(),
                r.migration.clone().unwrap_or_else(|| "-".into()),
                r.by.clone(),
                r.at.clone(),
                r.result.clone(),
            ]
        })
        .collect();
    ctx.out.print(&ctx.out.table(
        &[
            "REF",
            "COMMIT",
            "VERSION",
            "MIGRATION",
            "BY",
            "AT",
            "RESULT",
        ],
        rows,
    ))?;
    Ok(Exit::Ok)
}
