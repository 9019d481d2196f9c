//! Runbook 6.4, `stats`: `docker stats --no-stream`, `df -h` and `free -h` as one report.

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use super::Envelope;
use crate::compose::Stack;
use crate::context::Ctx;
use crate::error::Exit;
use crate::remote::RemoteCommand;

#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    envelope: Envelope<'a>,
    containers: Vec<Value>,
    disk: Vec<Vec<String>>,
    memory: Vec<Vec<String>>,
}

pub async fn run(ctx: &Ctx) -> Result<Exit> {
    let remote = ctx.remote().await?;
    let stack = Stack::load(remote, &ctx.target).await?;
    let running: Vec<String> = stack
        .containers
        .iter()
        .filter(|c| c.running())
        .map(|c| c.id.clone())
        .collect();
    let mut stats = vec![
        "docker".to_string(),
        "stats".into(),
        "--no-stream".into(),
        "--format".into(),
        "{{json .}}".into(),
    ];
    stats.extend(running.iter().cloned());
    let stats = RemoteCommand::new(stats).read_only();
    let df = RemoteCommand::new(["df", "-hP"]).read_only();
    let free = RemoteCommand::new(["free", "-h"]).read_only();
    let containers = async {
        if running.is_empty() {
            return Ok(String::new());
        }
        remote.run_ok(&stats).await.map(|o| o.stdout_text())
    };
    let (containers, df, free) = tokio::join!(containers, remote.run_ok(&df), remote.run_ok(&free));
    let containers: Vec<Value> = containers?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let (df, free) = (df?.stdout_text(), free?.stdout_text());
    if ctx.out.json {
        let envelope = Envelope::new("stats", ctx, true);
        ctx.out.json_doc(&Report {
            envelope,
            containers,
            disk: columns(&df, 6),
            memory: columns(&free, 7),
        })?;
        return Ok(Exit::Ok);
    }
    ctx.out.status(format!("stats of {}", ctx.target_label()));
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    let rows = containers
        .iter()
        .map(|c| {
            [
                "Name", "CPUPerc", "MemUsage", "MemPerc", "NetIO", "BlockIO", "PIDs",
            ]
            .iter()
            .map(|k| field(c, k))
            .collect()
        })
        .collect();
    let table = ctx.out.table(
        &[
            "CONTAINER",
            "CPU",
            "MEMORY",
            "MEM %",
            "NET I/O",
            "BLOCK I/O",
            "PIDS",
        ],
        rows,
    );
    ctx.out.print(&format!(
        "{table}\n\n{}\n{}",
        df.trim_end(),
        free.trim_end()
    ))?;
    Ok(Exit::Ok)
}

/// Splits a whitespace-aligned table into rows of at most `n` cells (the last keeps spaces).
fn columns(text: &str, n: usize) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut cells: Vec<String> = Vec::new();
            let mut rest = line.trim();
            while cells.len() + 1 < n {
                match rest.split_once(char::is_whitespace) {
                    Some((cell, tail)) => {
                        cells.push(cell.to_string());
                        rest = tail.trim_start();
                    }
                    None => break,
                }
            }
            if !rest.is_empty() {
                cells.push(rest.to_string());
            }
            cells
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_output_splits_into_cells() {
        let rows = columns(
            "Filesystem Size Used Avail Use% Mounted on\n/dev/vda 252G 11G 80G 13% /srv/a b\n",
            6,
        );
        assert_eq!(
            rows[0],
            ["Filesystem", "Size", "Used", "Avail", "Use%", "Mounted on"]
        );
        assert_eq!(rows[1][5], "/srv/a b");
    }
}
