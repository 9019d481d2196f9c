//! `ctops` on a real terminal: a tmux pane on a private tmux server (its own socket, so tests
//! neither see nor disturb anybody's tmux), with the same scrubbed environment as
//! `util::ctops` except that `NO_COLOR` is unset and `TERM` is tmux's. What the tests read is
//! what the pane shows (`capture-pane -p`) or the same with its escape codes (`-e`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::sandbox_config;

pub const WIDTH: u16 = 140;
pub const HEIGHT: u16 = 50;

/// A tmux server with one pane running one command; killed (with its command) on drop.
pub struct Pane {
    dir: tempfile::TempDir,
    socket: PathBuf,
    status: PathBuf,
    command: String,
}

/// Single-quotes `word` for `sh`.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

impl Pane {
    /// `ctops --config <sandbox config> ARGS...` in a 140×50 pane.
    pub fn sandbox_ctops(args: &[&str]) -> Pane {
        Pane::sandbox_ctops_with(args, &[])
    }

    /// Same, with extra environment variables for ctops.
    pub fn sandbox_ctops_with(args: &[&str], env: &[(&str, &str)]) -> Pane {
        let mut env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
        env.push((
            "CTOPS_CONFIG",
            sandbox_config().to_string_lossy().into_owned(),
        ));
        let mut argv = vec![env!("CARGO_BIN_EXE_ctops")];
        argv.extend_from_slice(args);
        Pane::run(&argv, &env)
    }

    /// `argv` in a fresh pane. When it exits its status is written to a file and the pane
    /// stays open (a `sleep`), so its last screen can still be captured.
    pub fn run(argv: &[&str], env: &[(&str, String)]) -> Pane {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let status = dir.path().join("status");
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let command = argv
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ");
        let script = format!(
            "{command}; echo $? > {}; exec sleep 3600",
            shell_quote(&status.to_string_lossy())
        );
        let mut tmux = Command::new("tmux");
        tmux.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("TERM", "xterm-256color")
            .current_dir(&home)
            .arg("-S")
            .arg(&socket)
            .arg("-f")
            .arg("/dev/null")
            .args(["new-session", "-d", "-x"])
            .arg(WIDTH.to_string())
            .arg("-y")
            .arg(HEIGHT.to_string());
        for (key, value) in env {
            tmux.arg("-e").arg(format!("{key}={value}"));
        }
        tmux.arg(script);
        let out = tmux.output().expect("tmux (tests/run.sh installs it)");
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Pane {
            dir,
            socket,
            status,
            command,
        }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the pane shows, wrapped lines joined, trailing blank lines dropped.
    pub fn screen(&self) -> String {
        trim_screen(&self.tmux(&["capture-pane", "-p", "-J"]))
    }

    /// The same with the escape codes that style it (`capture-pane -e`).
    pub fn raw_screen(&self) -> String {
        trim_screen(&self.tmux(&["capture-pane", "-p", "-J", "-e"]))
    }

    /// Types keys as tmux names them (`"yes"`, `"Enter"`, `"C-c"`, `"q"`).
    pub fn send_keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// Types text literally, then Enter.
    pub fn type_line(&self, text: &str) {
        self.tmux(&["send-keys", "-l", text]);
        self.tmux(&["send-keys", "Enter"]);
    }

    /// Waits until the screen satisfies `probe`; panics with the screen after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, probe: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if probe(&screen) {
                return screen;
            }
            assert!(
                started.elapsed() < limit,
                "timed out after {limit:?} waiting for {what} from `{}`; the screen:\n{screen}",
                self.command
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The exit status once the command has ended, if it has.
    pub fn exit_code(&self) -> Option<i32> {
        std::fs::read_to_string(&self.status)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Waits for the command to end; its exit status.
    pub fn wait_exit(&self, limit: Duration) -> i32 {
        let started = Instant::now();
        loop {
            if let Some(code) = self.exit_code() {
                return code;
            }
            assert!(
                started.elapsed() < limit,
                "`{}` still running after {limit:?}; the screen:\n{}",
                self.command,
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The pane's process (the shell running ctops), for signals.
    pub fn pane_pid(&self) -> u32 {
        self.tmux(&["display-message", "-p", "#{pane_pid}"])
            .trim()
            .parse()
            .unwrap()
    }

    /// A scratch folder that lives as long as the pane.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

fn trim_screen(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let end = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    lines[..end].join("\n")
}

/// Drops the SGR sequences (`ESC [ ... m`) from a raw capture: what the terminal shows.
pub fn visible(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a raw capture styles anything (an SGR sequence with a colour or attribute).
pub fn has_colour_codes(raw: &str) -> bool {
    raw.match_indices("\u{1b}[").any(|(i, _)| {
        let rest = &raw[i + 2..];
        let end = rest.find('m').unwrap_or(0);
        end > 0
            && rest[..end].chars().all(|c| c.is_ascii_digit() || c == ';')
            && &rest[..end] != "0"
    })
}
