//! Where things are printed: data (or the `--json` document) to stdout, status, warnings and
//! `-v` echoes to stderr. Colour only on a TTY, never with `NO_COLOR` or `--no-color`.

use std::io::{IsTerminal, Write};

use comfy_table::{presets, Cell, ContentArrangement, Table};
use owo_colors::OwoColorize;
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
    color: bool,
}

impl Output {
    pub fn new(json: bool, quiet: bool, verbose: u8, no_color: bool) -> Self {
        let color = !no_color
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::io::stdout().is_terminal();
        Output {
            json,
            quiet,
            verbose,
            color,
        }
    }

    /// A status line on stderr (suppressed by `-q`).
    pub fn status(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }

    pub fn warn(&self, msg: impl AsRef<str>) {
        let label = if self.color {
            "warning:".yellow().bold().to_string()
        } else {
            "warning:".into()
        };
        eprintln!("{label} {}", msg.as_ref());
    }

    /// `-v`: a remote command exactly as sent.
    pub fn echo_remote(&self, host: &str, rendered: &str) {
        if self.verbose > 0 {
            let prompt = format!("[{host}]$");
            let prompt = if self.color {
                prompt.dimmed().to_string()
            } else {
                prompt
            };
            eprintln!("{prompt} {rendered}");
        }
    }

    /// `-v`: a local action worth showing (an HTTP request, a port forward).
    pub fn echo_local(&self, what: &str) {
        if self.verbose > 0 {
            let prompt = if self.color {
                "[local]".dimmed().to_string()
            } else {
                "[local]".into()
            };
            eprintln!("{prompt} {what}");
        }
    }

    /// One JSON document on stdout.
    pub fn json_doc<T: Serialize>(&self, doc: &T) -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer(&mut stdout, doc)?;
        stdout.write_all(b"\n")?;
        stdout.flush()
    }

    /// Text on stdout.
    pub fn print(&self, text: &str) -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            stdout.write_all(b"\n")?;
        }
        stdout.flush()
    }

    /// A mark for a good or bad row.
    pub fn mark(&self, ok: bool) -> String {
        match (ok, self.color) {
            (true, true) => "✓".green().to_string(),
            (false, true) => "✗".red().bold().to_string(),
            (true, false) => "ok".into(),
            (false, false) => "FAIL".into(),
        }
    }

    pub fn bold(&self, text: &str) -> String {
        if self.color {
            text.bold().to_string()
        } else {
            text.to_string()
        }
    }

    /// A borderless table with a header row.
    pub fn table(&self, header: &[&str], rows: Vec<Vec<String>>) -> String {
        let mut table = Table::new();
        table
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled);
        table.set_header(header.iter().map(|h| Cell::new(self.bold(h))));
        for row in rows {
            table.add_row(row);
        }
        // comfy-table pads the first column with a leading space; trim it for a flush left edge.
        table
            .lines()
            .map(|l| l.strip_prefix(' ').unwrap_or(&l).trim_end().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}
