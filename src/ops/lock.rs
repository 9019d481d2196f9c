//! `lock status` and `lock release`: the host lock's holder, and releasing a stale one.

use anyhow::Result;
use serde::Serialize;

use super::Envelope;
use crate::context::Ctx;
use crate::error::Exit;
use crate::lock::{self, Holder};

#[derive(Serialize)]
struct Doc<'a> {
    #[serde(flatten)]
    envelope: Envelope<'a>,
    held: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    holder: Option<Holder>,
}

pub async fn status(ctx: &Ctx) -> Result<Exit> {
    let remote = ctx.remote().await?;
    let holder = lock::show(remote, &ctx.target.state_dir).await?;
    if ctx.out.json {
        let held = holder.as_ref().is_some_and(|h| !h.stale);
        ctx.out.json_doc(&Doc {
            envelope: Envelope::new("lock status", ctx, true),
            held,
            holder,
        })?;
        return Ok(Exit::Ok);
    }
    let text = match holder {
        None => format!("the host lock on {} is free", ctx.target_label()),
        Some(h) if h.stale => format!(
            "the host lock on {} is stale (lease lapsed): {}",
            ctx.target_label(),
            h.describe()
        ),
        Some(h) => format!(
            "the host lock on {} is held by {}",
            ctx.target_label(),
            h.describe()
        ),
    };
    ctx.out.print(&text)?;
    Ok(Exit::Ok)
}

pub async fn release(ctx: &Ctx) -> Result<Exit> {
    let remote = ctx.remote().await?;
    let Some(holder) = lock::show(remote, &ctx.target.state_dir).await? else {
        ctx.out.status(format!(
            "the host lock on {} is free: nothing to release",
            ctx.target_label()
        ));
        return Ok(Exit::Ok);
    };
    if ctx.dry_run {
        ctx.out.status(format!(
            "dry run: would release the lock of {}",
            holder.describe()
        ));
        return Ok(Exit::Ok);
    }
    ctx.confirm(&format!(
        "release the host lock on {} held by {}",
        ctx.target_label(),
        holder.describe()
    ))?;
    lock::break_stale(remote, &ctx.target.state_dir).await?;
    ctx.out
        .status(format!("released the stale lock of {}", holder.describe()));
    Ok(Exit::Ok)
}
