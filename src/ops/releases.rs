//! Runbook 3, `releases`: the deployed release history kept on the host (append-only JSON
//! lines in the state dir), newest first.

use anyhow::Result;
use serde::Serialize;

use super::Envelope;
use crate::context::Ctx;
use crate::deployed::{read_history, Record};
use crate::error::Exit;

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
                if r.rolled_back_from {
                    format!("{} (rolled back from)", r.result)
                } else {
                    r.result.clone()
                },
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
