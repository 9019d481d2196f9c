//! Where things are printed: data (or the `--json` document) to stdout, status, warnings and
//! `-v` echoes to stderr. Colour only on a TTY, never with `NO_COLOR` or `--no-color`.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use comfy_table::{presets, Attribute, Cell, Color, ContentArrangement, Table};
use owo_colors::OwoColorize;
use serde::Serialize;

use crate::remote::Script;

#[derive(Debug, Clone)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
    color: bool,
    /// The sha256 of every script (and script part) `-v` has shown in this invocation.
    shown: Arc<Mutex<HashSet<String>>>,
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
            shown: Arc::default(),
        }
    }

    /// A status line on stderr (suppressed by `-q`).
    pub fn status(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            crate::say!("{}", msg.as_ref());
        }
    }

    pub fn warn(&self, msg: impl AsRef<str>) {
        let label = if self.color {
            "warning:".yellow().bold().to_string()
        } else {
            "warning:".into()
        };
        crate::say!("{label} {}", msg.as_ref());
    }

    /// `-v`: a remote command as sent, on one line: each script body in it is named by its
    /// sha256 (`<script SHORT>`), introduced once per invocation by [`Output::echo_script`].
    pub fn echo_remote(&self, host: &str, line: &str, scripts: &[Script]) {
        if self.verbose == 0 {
            return;
        }
        for script in scripts {
            self.echo_script(host, script, None);
        }
        crate::say!("{} {line}", self.dim(&format!("[{host}]$")));
    }

    /// `-v`: a script the first time this invocation sends it: its name (the host scripts it
    /// is made of), size and sha256; `-vv` adds the text, each host script in it printed only
    /// the first time (the lock functions are in the lock script, the keeper and the runner).
    /// `how` says how it travels when not as a `sh -c` body ("on stdin").
    pub fn echo_script(&self, host: &str, script: &Script, how: Option<&str>) {
        // Scripts and their parts are remembered apart: a script that is one host script
        // has that script's hash, and its text must still be printed the first time.
        if self.verbose == 0 || !self.first_time(&format!("script {}", script.sha256)) {
            return;
        }
        let how = how.map(|h| format!(", {h}")).unwrap_or_default();
        crate::say!(
            "{} script {} = {}: {} bytes, sha256 {}{how}",
            self.dim(&format!("[{host}]")),
            script.short(),
            script.name(),
            script.body.len(),
            script.sha256
        );
        if self.verbose < 2 {
            return;
        }
        for part in &script.parts {
            let name = part.name.unwrap_or("inline text");
            if self.first_time(&format!("part {}", part.sha256)) {
                crate::say!(
                    "{}",
                    self.dim(&format!(
                        "---- {name} ({} bytes, sha256 {})",
                        part.text.len(),
                        part.sha256
                    ))
                );
                crate::say!("{}", part.text.trim_end_matches('\n'));
            } else {
                crate::say!(
                    "{}",
                    self.dim(&format!(
                        "---- {name}: shown above (sha256 {})",
                        part.sha256
                    ))
                );
            }
        }
        crate::say!(
            "{}",
            self.dim(&format!("---- end of script {}", script.short()))
        );
    }

    /// Whether `sha256` is shown for the first time (and from now on, not).
    fn first_time(&self, sha256: &str) -> bool {
        self.shown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sha256.to_string())
    }

    fn dim(&self, text: &str) -> String {
        if self.color {
            text.dimmed().to_string()
        } else {
            text.to_string()
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
            crate::say!("{prompt} {what}");
        }
    }

    /// A spinner with the elapsed time under a long step, on stderr: only when stderr is a
    /// terminal, and not with `-q` or `-v` (whose streamed step output would tear it).
    pub fn spinner(&self, msg: impl Into<String>) -> Spinner {
        if !self.shows_progress() {
            return Spinner(None);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = indicatif::ProgressStyle::with_template("  {spinner} {msg} {elapsed}") {
            bar.set_style(style);
        }
        bar.set_message(msg.into());
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        Spinner(Some(bar))
    }

    /// A byte counter for a dump or a transfer, on stderr under the same rule as
    /// [`Output::spinner`]: with a `total`, a bar with the bytes, the throughput and the time
    /// left; without one (a dump whose size is known only at its end), a spinner with the
    /// bytes so far, the throughput and the elapsed time.
    pub fn byte_bar(&self, msg: impl Into<String>, total: Option<u64>) -> Spinner {
        if !self.shows_progress() {
            return Spinner(None);
        }
        let (bar, template) = match total {
            Some(total) => (
                indicatif::ProgressBar::new(total),
                "  {msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} at {binary_bytes_per_sec}, {eta} left",
            ),
            None => (
                indicatif::ProgressBar::new_spinner(),
                "  {spinner} {msg} {binary_bytes} at {binary_bytes_per_sec} {elapsed}",
            ),
        };
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(msg.into());
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        Spinner(Some(bar))
    }

    /// Whether spinners and bars are drawn: stderr is a terminal, and neither `-q` nor `-v`
    /// (whose lines would tear them) is given.
    pub fn shows_progress(&self) -> bool {
        !self.quiet && self.verbose == 0 && std::io::stderr().is_terminal()
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

    /// A mark for a good or bad row, as a table cell.
    pub fn mark_cell(&self, ok: bool) -> Styled {
        match (ok, self.color) {
            (true, true) => Styled::good("✓"),
            (false, true) => Styled::bad("✗"),
            (true, false) => Styled::good("ok"),
            (false, false) => Styled::bad("FAIL"),
        }
    }

    /// A borderless table with a header row. Cells are plain text with a [`Tone`]: comfy-table
    /// lays the columns out from the text and styles it afterwards, so the widths are the
    /// visible widths (escape codes inside a cell would count as columns and skew them).
    pub fn table<C: Into<Styled>>(&self, header: &[&str], rows: Vec<Vec<C>>) -> String {
        let mut table = Table::new();
        table
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled);
        // Styling follows this Output's choice (TTY, NO_COLOR, --no-color), not comfy-table's
        // own look at stdout; only the text is styled, so the padding stays plain and
        // trimmable.
        if self.color {
            table.enforce_styling();
        } else {
            table.force_no_tty();
        }
        table.style_text_only();
        table.set_header(
            header
                .iter()
                .map(|h| Cell::new(h).add_attribute(Attribute::Bold)),
        );
        for row in rows {
            table.add_row(row.into_iter().map(|c| c.into().cell()));
        }
        // comfy-table pads the first column with a leading space; trim it for a flush left edge.
        table
            .lines()
            .map(|l| l.strip_prefix(' ').unwrap_or(&l).trim_end().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A running spinner (see [`Output::spinner`]); cleared when finished or dropped.
#[derive(Debug, Default)]
pub struct Spinner(Option<indicatif::ProgressBar>);

impl Spinner {
    /// Runs `f` (which prints a line) with the spinner hidden, then draws it again below.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.0 {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Whether anything is drawn (not off a terminal, `-q` or `-v`).
    pub fn is_shown(&self) -> bool {
        self.0.is_some()
    }

    /// The bytes done so far (the throughput is worked out from how they grow).
    pub fn set_position(&self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(bytes);
        }
    }

    pub fn inc(&self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(bytes);
        }
    }

    /// A line of a streamed command's output, above the spinner (or straight to stderr when
    /// none is drawn).
    pub fn println(&self, line: &str) {
        match &self.0 {
            Some(bar) => bar.println(line),
            None => crate::say!("{line}"),
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.finish();
    }
}

/// This process's stderr for streamed remote output (compose's progress, a runner's log): a
/// write that fails (stderr closed, as in `ctops restart bot 2>&1 | head -1`) is dropped,
/// not an error, so the command runs to its end whatever happened to the reader.
pub struct LocalStderr(tokio::io::Stderr);

pub fn local_stderr() -> LocalStderr {
    LocalStderr(tokio::io::stderr())
}

impl tokio::io::AsyncWrite for LocalStderr {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.0).poll_write(cx, buf) {
            std::task::Poll::Ready(Err(_)) => std::task::Poll::Ready(Ok(buf.len())),
            other => other,
        }
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0)
            .poll_flush(cx)
            .map(|_| Ok(()))
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0)
            .poll_shutdown(cx)
            .map(|_| Ok(()))
    }
}

/// How a table cell reads at a glance; shown as a colour only where colour is on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tone {
    #[default]
    Plain,
    Good,
    Warn,
    Bad,
}

/// A table cell: plain text and its tone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Styled {
    pub text: String,
    pub tone: Tone,
}

impl Styled {
    pub fn new(text: impl Into<String>, tone: Tone) -> Self {
        let text = text.into();
        debug_assert!(
            !text.contains('\u{1b}'),
            "a table cell is plain text, styled by the table: {text:?}"
        );
        Styled { text, tone }
    }

    pub fn good(text: impl Into<String>) -> Self {
        Styled::new(text, Tone::Good)
    }

    pub fn warn(text: impl Into<String>) -> Self {
        Styled::new(text, Tone::Warn)
    }

    pub fn bad(text: impl Into<String>) -> Self {
        Styled::new(text, Tone::Bad)
    }

    fn cell(self) -> Cell {
        let cell = Cell::new(self.text);
        match self.tone {
            Tone::Plain => cell,
            Tone::Good => cell.fg(Color::Green),
            Tone::Warn => cell.fg(Color::Yellow),
            Tone::Bad => cell.fg(Color::Red).add_attribute(Attribute::Bold),
        }
    }
}

impl From<String> for Styled {
    fn from(text: String) -> Self {
        Styled::new(text, Tone::Plain)
    }
}

impl From<&str> for Styled {
    fn from(text: &str) -> Self {
        Styled::new(text, Tone::Plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Off a terminal (as under `cargo test`), no spinner or bar is drawn, and feeding one
    /// is harmless.
    #[test]
    fn no_progress_off_a_terminal() {
        let out = Output::new(false, false, 0, false);
        assert!(!out.shows_progress());
        let mut bar = out.byte_bar("dump", None);
        assert!(!bar.is_shown());
        bar.set_position(2048);
        bar.inc(1);
        bar.finish();
        assert!(!out.byte_bar("download", Some(10)).is_shown());
        assert!(!out.spinner("up").is_shown());
    }

    fn coloured() -> Output {
        let mut out = Output::new(false, false, 0, true);
        out.color = true;
        out
    }

    /// Drops SGR sequences (`ESC [ ... m`), leaving what a terminal shows.
    fn visible(line: &str) -> String {
        let mut out = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Where each column starts: the char offset of every cell after a run of 2+ spaces.
    fn starts(line: &str) -> Vec<usize> {
        let chars: Vec<char> = line.chars().collect();
        let mut starts = vec![0];
        for i in 2..chars.len() {
            if chars[i] != ' ' && chars[i - 1] == ' ' && chars[i - 2] == ' ' {
                starts.push(i);
            }
        }
        starts
    }

    /// The misalignment seen on a terminal: bold headers and coloured cells laid out with
    /// their escape codes counted.
    #[test]
    fn coloured_table_columns_line_up_on_the_visible_text() {
        let out = coloured();
        let text = out.table(
            &["SERVICE", "STATE", "HEALTH", "RESTARTS"],
            vec![
                vec![
                    Styled::from("api"),
                    Styled::good("running"),
                    Styled::good("healthy"),
                    "0".into(),
                ],
                vec![
                    Styled::from("worker"),
                    Styled::bad("exited"),
                    "-".into(),
                    "12".into(),
                ],
                vec![
                    Styled::from("db"),
                    out.mark_cell(false),
                    Styled::warn("starting"),
                    "3".into(),
                ],
            ],
        );
        assert!(text.contains("\u{1b}["), "styled: {text:?}");
        let lines: Vec<String> = text.lines().map(visible).collect();
        let header = starts(&lines[0]);
        assert_eq!(header.len(), 4, "{lines:#?}");
        for line in &lines[1..] {
            assert_eq!(starts(line), header, "{lines:#?}");
        }
    }

    #[test]
    fn plain_table_has_no_escape_codes() {
        let out = Output::new(false, false, 0, true);
        let text = out.table(&["A", "B"], vec![vec![Styled::bad("x"), "y".into()]]);
        assert_eq!(text, "A  B\nx  y");
    }
}
