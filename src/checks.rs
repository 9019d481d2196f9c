//! A health check's result, as `health`, `backup verify` and `doctor` report it, and what a
//! set of them means for the exit code.

use serde::Serialize;

use crate::error::Exit;

/// One check's result: one row of a report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub ok: bool,
    pub latency_ms: u64,
    pub detail: String,
}

/// The exit code a set of rows means: the API row decides between 1 and the rest.
pub fn verdict(rows: &[Row]) -> Exit {
    match rows.iter().find(|r| r.name == "api") {
        Some(api) if !api.ok => Exit::Failed,
        _ if rows.iter().all(|r| r.ok) => Exit::Ok,
        _ => Exit::Degraded,
    }
}
