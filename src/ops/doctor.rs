//! `doctor`: every fact the changing commands rely on, checked against the host read-only
//! (`crate::hostfacts` reads them) and shown as one table. Exit 0 all good, 5 with a
//! warning, 2 when the config contradicts the host.

use anyhow::Result;
use serde::Serialize;

use super::Envelope;
use crate::context::Ctx;
use crate::error::Exit;
use crate::hostfacts::{self, Fact, Level};

#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    envelope: Envelope<'a>,
    status: &'static str,
    checks: &'a [Fact],
}

pub async fn run(ctx: &Ctx) -> Result<Exit> {
    let facts = hostfacts::gather(ctx).await?;
    let exit = hostfacts::verdict(&facts);
    let status = match exit {
        Exit::Ok => "ok",
        Exit::Degraded => "warnings",
        _ => "contradictions",
    };
    if ctx.out.json {
        ctx.out.json_doc(&Report {
            envelope: Envelope::new("doctor", ctx, exit == Exit::Ok),
            status,
            checks: &facts,
        })?;
        return Ok(exit);
    }
    let count = |level| facts.iter().filter(|f| f.level == level).count();
    ctx.out.status(format!(
        "doctor of {}: {} ok, {} warnings, {} contradictions, {} not checked",
        ctx.target_label(),
        count(Level::Ok),
        count(Level::Warn),
        count(Level::Fail),
        count(Level::Skipped)
    ));
    let rows = facts
        .iter()
        .map(|f| vec![f.name.to_string(), mark(ctx, f.level), f.detail.clone()])
        .collect();
    let mut text = ctx.out.table(&["FACT", "STATUS", "DETAIL"], rows);
    for fact in facts.iter().filter(|f| f.fix.is_some()) {
        text.push_str(&format!(
            "\nfix {}: {}",
            fact.name,
            fact.fix.as_deref().unwrap_or_default()
        ));
    }
    ctx.out.print(&text)?;
    Ok(exit)
}

fn mark(ctx: &Ctx, level: Level) -> String {
    match level {
        Level::Ok => ctx.out.mark(true),
        Level::Fail => ctx.out.mark(false),
        Level::Warn => "warn".into(),
        Level::Skipped => "skipped".into(),
    }
}
