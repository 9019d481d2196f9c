//! `config check`: the resolved config for a target, validated; no connection is made.

use anyhow::Result;
use serde_json::json;

use crate::config::Loaded;
use crate::error::Exit;
use crate::output::Output;

pub fn run(loaded: &Loaded, out: &Output) -> Result<Exit> {
    let target = &loaded.target;
    if out.json {
        out.json_doc(&json!({
            "command": "config check",
            "target": target.name,
            "ok": true,
            "path": loaded.path,
            "config": target,
        }))?;
    } else {
        out.status(format!(
            "config `{}` is valid; target {} ({})",
            loaded.path.display(),
            target.name,
            target.ssh
        ));
        out.print(&toml::to_string_pretty(target)?)?;
    }
    Ok(Exit::Ok)
}
