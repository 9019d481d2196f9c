//! A command to run on the host, kept as an argv until the moment it is sent.
//!
//! Every part is shell-quoted when rendered, so a value from the user or the config can
//! never become shell syntax. Where ctops needs shell features (a `cd`, a pipeline), the
//! shell text is a constant of ctops and the values travel as positional parameters.

use std::borrow::Cow;
use std::time::Duration;

/// Kills the command when the SSH channel goes away: sshd sends no SIGHUP without a PTY, so
/// a `logs -f` or `pg_dump` would otherwise run on after ctops is interrupted. The watcher
/// waits for EOF on the channel's stdin (kept as fd 3: a background job's own stdin is
/// /dev/null), which comes when ctops closes the channel or the link drops. `setsid` gives the
/// command a process group of its own, so its children (a compose plugin, say) stop with it.
const STOP_ON_DISCONNECT: &str = r#"exec 3<&0; setsid "$@" </dev/null 3<&- & p=$!; { cat <&3 >/dev/null; kill -TERM -"$p"; } >/dev/null 2>&1 & exec 3<&-; wait "$p""#;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCommand {
    argv: Vec<String>,
    cwd: Option<String>,
    stop_on_disconnect: bool,
    /// Overrides the target's `timeouts.command`.
    pub timeout: Option<Duration>,
    /// A command that changes nothing on the host (allowed under `--dry-run`).
    pub read_only: bool,
    /// What messages and spinners call it, when its first words would not say (a program
    /// whose options come first: `docker compose -f FILE -p NAME restart bot`).
    name: Option<String>,
}

impl RemoteCommand {
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RemoteCommand {
            argv: argv.into_iter().map(Into::into).collect(),
            cwd: None,
            stop_on_disconnect: false,
            timeout: None,
            read_only: false,
            name: None,
        }
    }

    /// `sh -c SCRIPT ctops ARGS...`: the script is ctops's own text, the values are `$1...`.
    pub fn sh<I, S>(script: &str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut argv = vec!["sh".to_string(), "-c".into(), script.into(), "ctops".into()];
        argv.extend(args.into_iter().map(Into::into));
        Self::new(argv)
    }

    pub fn in_dir(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Names the command for messages (see [`RemoteCommand::label`]); kept when wrapped.
    /// Only the first words of `words` are used, each on one line.
    pub fn named<I, S>(mut self, words: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let words: Vec<String> = words
            .into_iter()
            .take(5)
            .map(|w| one_line_word(w.as_ref()))
            .collect();
        self.name = Some(words.join(" "));
        self
    }

    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// For commands that stream or may hang: stop them when the channel closes.
    pub fn stop_on_disconnect(mut self) -> Self {
        self.stop_on_disconnect = true;
        self
    }

    /// Runs the command under `prefix` (`timeout 300 ...`), in the same folder.
    pub fn wrapped(mut self, prefix: &[String]) -> Self {
        let mut argv = prefix.to_vec();
        argv.append(&mut self.argv);
        self.argv = argv;
        self
    }

    /// The same command without the watcher (for the detached runner, which has no channel).
    pub fn without_watcher(mut self) -> Self {
        self.stop_on_disconnect = false;
        self
    }

    pub fn stops_on_disconnect(&self) -> bool {
        self.stop_on_disconnect
    }

    /// A short name for messages: its [`RemoteCommand::named`] name, else the program and its
    /// first words, unquoted. A script sent
    /// as `sh -c SCRIPT` is named by the start of its sha256 (as `-v` names it), never
    /// printed: a message shows the step and the script's stderr, not 30 lines of shell.
    pub fn label(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        // The lock's pid-registering wrapper (`sh -c SCRIPT ctops-lock-run D TOKEN CMD...`)
        // is not what runs: name the command it wraps.
        let skip = match self.argv.as_slice() {
            [sh, c, _, name, ..]
                if sh == "sh" && c == "-c" && name == crate::lock::LOCK_RUN_NAME =>
            {
                6
            }
            _ => 0,
        };
        let argv = &self.argv[skip.min(self.argv.len())..];
        let mut words: Vec<String> = Vec::new();
        let mut i = 0;
        while i < argv.len() && words.len() < 3 {
            let word = &argv[i];
            if word == "sh" && argv.get(i + 1).is_some_and(|w| w == "-c") {
                let script = argv.get(i + 2).map(String::as_str).unwrap_or_default();
                words.push(format!("sh script:{}", script_id(script)));
                // $0 and the values after the script are the script's, not more words.
                break;
            }
            if !word.starts_with('-') {
                words.push(one_line_word(word));
            }
            i += 1;
        }
        words.join(" ")
    }

    /// What `-v` prints for this command: [`RemoteCommand::render`] with each script body
    /// replaced by `<script SHORT-SHA256>`, and those scripts, so a call is one line and a
    /// script is shown once however often it runs.
    pub fn verbose_view(&self) -> (String, Vec<Script>) {
        let mut scripts = Vec::new();
        let mut words: Vec<String> = Vec::with_capacity(self.argv.len() + 4);
        if self.stop_on_disconnect {
            let watcher = Script::new(STOP_ON_DISCONNECT);
            words.extend([
                "sh".into(),
                "-c".into(),
                placeholder(&watcher),
                "ctops".into(),
            ]);
            scripts.push(watcher);
        }
        for (i, word) in self.argv.iter().enumerate() {
            if is_shell_body(&self.argv, i) && is_script_body(word) {
                let script = Script::new(word);
                words.push(placeholder(&script));
                scripts.push(script);
            } else {
                words.push(quote(word).into_owned());
            }
        }
        let command = words.join(" ");
        let line = match &self.cwd {
            Some(dir) => format!("cd {} && {command}", quote(dir)),
            None => command,
        };
        (line, scripts)
    }

    /// The exact text sent to the host's shell.
    pub fn render(&self) -> String {
        let command = join_quoted(&self.argv);
        let command = if self.stop_on_disconnect {
            format!("sh -c {} ctops {command}", quote(STOP_ON_DISCONNECT))
        } else {
            command
        };
        match &self.cwd {
            Some(dir) => format!("cd {} && {command}", quote(dir)),
            None => command,
        }
    }
}

/// The first 12 hex digits of a script's sha256: how messages and `-v` name it.
pub fn script_id(script: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(script.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// A word for a one-line message: a word with a newline (shell text) or a very long one is
/// cut, so that no message carries a script body.
fn one_line_word(word: &str) -> String {
    let first = word.lines().next().unwrap_or_default();
    if first.len() == word.len() && word.chars().count() <= 80 {
        return word.to_string();
    }
    let cut: String = first.chars().take(40).collect();
    format!("{cut}...")
}

/// Every host script under `src/scripts/`, by file name: `-v` names a script body by the ones
/// it is made of (a test keeps this list and the folder the same).
const HOST_SCRIPTS: &[(&str, &str)] = &[
    ("backup-db.sh", include_str!("../scripts/backup-db.sh")),
    ("backup-env.sh", include_str!("../scripts/backup-env.sh")),
    ("backup-list.sh", include_str!("../scripts/backup-list.sh")),
    (
        "backup-prune.sh",
        include_str!("../scripts/backup-prune.sh"),
    ),
    (
        "backup-verify.sh",
        include_str!("../scripts/backup-verify.sh"),
    ),
    ("disk.sh", include_str!("../scripts/disk.sh")),
    ("doctor-dirs.sh", include_str!("../scripts/doctor-dirs.sh")),
    (
        "doctor-facts.sh",
        include_str!("../scripts/doctor-facts.sh"),
    ),
    ("dump-size.sh", include_str!("../scripts/dump-size.sh")),
    ("env-check.sh", include_str!("../scripts/env-check.sh")),
    (
        "env-put-back.sh",
        include_str!("../scripts/env-put-back.sh"),
    ),
    ("env-replace.sh", include_str!("../scripts/env-replace.sh")),
    ("env-tidy.sh", include_str!("../scripts/env-tidy.sh")),
    ("env-upload.sh", include_str!("../scripts/env-upload.sh")),
    (
        "git-checkout.sh",
        include_str!("../scripts/git-checkout.sh"),
    ),
    ("git-probe.sh", include_str!("../scripts/git-probe.sh")),
    (
        "has-alembic-ini.sh",
        include_str!("../scripts/has-alembic-ini.sh"),
    ),
    ("lock-detach.sh", include_str!("../scripts/lock-detach.sh")),
    ("lock-follow.sh", include_str!("../scripts/lock-follow.sh")),
    (
        "lock-functions.sh",
        include_str!("../scripts/lock-functions.sh"),
    ),
    ("lock-keeper.sh", include_str!("../scripts/lock-keeper.sh")),
    ("lock-run.sh", include_str!("../scripts/lock-run.sh")),
    ("lock.sh", include_str!("../scripts/lock.sh")),
    ("migrations.sh", include_str!("../scripts/migrations.sh")),
    ("notify.sh", include_str!("../scripts/notify.sh")),
    ("prune.sh", include_str!("../scripts/prune.sh")),
    (
        "restore-drop-fresh.sh",
        include_str!("../scripts/restore-drop-fresh.sh"),
    ),
    (
        "restore-find-env.sh",
        include_str!("../scripts/restore-find-env.sh"),
    ),
    (
        "restore-inspect-runbook.sh",
        include_str!("../scripts/restore-inspect-runbook.sh"),
    ),
    (
        "restore-inspect.sh",
        include_str!("../scripts/restore-inspect.sh"),
    ),
    (
        "restore-load.sh",
        include_str!("../scripts/restore-load.sh"),
    ),
    (
        "restore-space.sh",
        include_str!("../scripts/restore-space.sh"),
    ),
    (
        "restore-swap.sh",
        include_str!("../scripts/restore-swap.sh"),
    ),
    ("revisions.sh", include_str!("../scripts/revisions.sh")),
    ("rotate-sql.sh", include_str!("../scripts/rotate-sql.sh")),
    ("runner-last.sh", include_str!("../scripts/runner-last.sh")),
    ("runner-main.sh", include_str!("../scripts/runner-main.sh")),
    (
        "runner-start.sh",
        include_str!("../scripts/runner-start.sh"),
    ),
    ("runner.sh", include_str!("../scripts/runner.sh")),
    ("setup-probe.sh", include_str!("../scripts/setup-probe.sh")),
    (
        "stack-inspect.sh",
        include_str!("../scripts/stack-inspect.sh"),
    ),
    (
        "update-no-stdin.sh",
        include_str!("../scripts/update-no-stdin.sh"),
    ),
    (
        "update-reboot-required.sh",
        include_str!("../scripts/update-reboot-required.sh"),
    ),
    (
        "update-root-probe.sh",
        include_str!("../scripts/update-root-probe.sh"),
    ),
    ("stop-on-disconnect", STOP_ON_DISCONNECT),
];

/// A body at most this long and on one line stays inline in `-v`'s line: naming it by a
/// hash would hide more than it saves.
const INLINE_BODY_MAX: usize = 80;

/// A script body sent to the host (the word after `sh -c`, or a runner on stdin), as `-v`
/// names it: its sha256 and the host scripts it is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub body: String,
    pub sha256: String,
    /// The body cut into the host scripts it contains and the text around them, in order.
    pub parts: Vec<Part>,
}

/// A piece of a [`Script`]: a whole host script (named) or ctops's glue around them
/// (variable assignments, a runner's steps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: Option<&'static str>,
    pub text: String,
    pub sha256: String,
}

impl Script {
    pub fn new(body: &str) -> Script {
        Script {
            body: body.to_string(),
            sha256: sha256_hex(body),
            parts: split_known(body),
        }
    }

    /// The first 12 hex digits of the sha256, as call lines name the script.
    pub fn short(&self) -> &str {
        &self.sha256[..12]
    }

    /// `lock-functions.sh + lock.sh`; `inline` for text that is none of the host scripts.
    pub fn name(&self) -> String {
        let names: Vec<&str> = self.parts.iter().filter_map(|p| p.name).collect();
        match (
            names.is_empty(),
            self.parts.iter().any(|p| p.name.is_none()),
        ) {
            (true, _) => "inline".to_string(),
            (false, false) => names.join(" + "),
            (false, true) => format!("{} (with inline text)", names.join(" + ")),
        }
    }
}

pub fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Cuts `body` into the host scripts it contains (leftmost first, the longest at a place) and
/// the text between them.
fn split_known(body: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = body;
    let other = |text: &str, parts: &mut Vec<Part>| {
        if !text.trim().is_empty() {
            parts.push(Part {
                name: None,
                text: text.to_string(),
                sha256: sha256_hex(text),
            });
        }
    };
    loop {
        let next = HOST_SCRIPTS
            .iter()
            .filter_map(|(name, text)| rest.find(text).map(|at| (at, *name, *text)))
            .min_by_key(|(at, _, text)| (*at, std::cmp::Reverse(text.len())));
        let Some((at, name, text)) = next else {
            other(rest, &mut parts);
            return parts;
        };
        other(&rest[..at], &mut parts);
        parts.push(Part {
            name: Some(name),
            text: text.to_string(),
            sha256: sha256_hex(text),
        });
        rest = &rest[at + text.len()..];
    }
}

/// Whether `word` is a body to name by its hash rather than print in the call's line.
fn is_script_body(word: &str) -> bool {
    word.contains('\n') || word.len() > INLINE_BODY_MAX
}

/// The word after `sh -c` (or `bash -c`): a shell's program text.
fn is_shell_body(argv: &[String], i: usize) -> bool {
    i >= 2
        && argv[i - 1] == "-c"
        && matches!(argv[i - 2].rsplit('/').next(), Some("sh" | "bash" | "dash"))
}

/// Quotes a word for a POSIX shell when it needs it (`shell-escape`'s rules).
pub fn quote(word: &str) -> Cow<'_, str> {
    shell_escape::unix::escape(Cow::Borrowed(word))
}

/// How a call line names a script body: not shell syntax, so never mistaken for what is sent.
fn placeholder(script: &Script) -> String {
    format!("<script {}>", script.short())
}

/// `NAME='value'`: the one way a value becomes a shell variable in a rendered script (the
/// host scripts under `src/scripts/` read their values from such lines or from `$1...`).
pub fn assign(name: &str, value: &str) -> String {
    debug_assert!(name
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'));
    format!("{name}={}", quote(value))
}

pub fn join_quoted(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_readable() {
        let c = RemoteCommand::new([
            "docker",
            "compose",
            "-f",
            "infrastructure/docker-compose.yml",
            "ps",
        ]);
        assert_eq!(
            c.render(),
            "docker compose -f infrastructure/docker-compose.yml ps"
        );
    }

    #[test]
    fn hostile_words_are_quoted_whole() {
        let c = RemoteCommand::new([
            "echo",
            "$(touch /tmp/x)",
            "a b",
            "it's",
            "`id`",
            "x;y",
            "",
            "a\nb",
        ])
        .in_dir("/srv/ctops sandbox/it's");
        assert_eq!(
            c.render(),
            "cd '/srv/ctops sandbox/it'\\''s' && echo '$(touch /tmp/x)' 'a b' 'it'\\''s' '`id`' 'x;y' '' 'a\nb'"
        );
    }

    #[test]
    fn quoting_round_trips_through_a_real_shell() {
        let words = [
            "$(id)", "a b", "it's", "`x`", "\\", "\"q\"", "*", "~", "a\nb", "é ü",
        ];
        let c = RemoteCommand::new(
            std::iter::once("printf")
                .chain(std::iter::once("%s\\0"))
                .chain(words),
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(c.render())
            .output()
            .unwrap();
        let got: Vec<&str> = std::str::from_utf8(&out.stdout)
            .unwrap()
            .split_terminator('\0')
            .collect();
        assert_eq!(got, words);
    }

    fn spawn_watched(script: &str) -> std::process::Child {
        let c = RemoteCommand::new(["sh", "-c", script]).stop_on_disconnect();
        std::process::Command::new("sh")
            .arg("-c")
            .arg(c.render())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    #[test]
    fn stop_on_disconnect_keeps_the_exit_status_while_the_channel_is_open() {
        let mut child = spawn_watched("sleep 0.3; exit 7");
        let _channel_stdin = child.stdin.take();
        assert_eq!(child.wait().unwrap().code(), Some(7));
    }

    #[test]
    fn stop_on_disconnect_stops_the_command_when_the_channel_closes() {
        // Durations no other test (or process) uses, so that pgrep finds only ours.
        let mut child = spawn_watched("sleep 30.7171 & sleep 31.7171; exit 0");
        std::thread::sleep(std::time::Duration::from_millis(200));
        let started = std::time::Instant::now();
        drop(child.stdin.take());
        let status = child.wait().unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(status.code(), Some(143));
        let survivors = || {
            std::process::Command::new("pgrep")
                .args(["-fx", "sleep 3[01].7171"])
                .output()
                .unwrap()
                .stdout
        };
        for _ in 0..20 {
            if survivors().is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "children of the command survived: {}",
            String::from_utf8_lossy(&survivors())
        );
    }

    #[test]
    fn a_script_sent_as_a_body_is_named_by_its_hash_never_printed() {
        let script = "set -u\nD=$1\nmkdir -p \"$D\"\n# thirty lines of shell\nexit 77";
        let c = RemoteCommand::sh(script, ["/var/lib/ctops", "acquire"]);
        let label = c.label();
        assert_eq!(label, format!("sh script:{}", script_id(script)));
        assert!(!label.contains('\n') && !label.contains("mkdir"), "{label}");
        let wrapped = c.wrapped(&["sudo".into(), "-n".into()]);
        assert_eq!(
            wrapped.label(),
            format!("sudo sh script:{}", script_id(script))
        );
        let odd = RemoteCommand::new(["printf", "a\nb\nc"]);
        assert!(!odd.label().contains('\n'), "{}", odd.label());
    }

    #[test]
    fn every_host_script_is_known_by_name() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/scripts");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sh"))
            .collect();
        files.sort();
        let mut known: Vec<String> = HOST_SCRIPTS
            .iter()
            .map(|(n, _)| n.to_string())
            .filter(|n| n.ends_with(".sh"))
            .collect();
        known.sort();
        assert_eq!(
            known, files,
            "HOST_SCRIPTS in src/remote/command.rs must list every src/scripts/*.sh (for -v's names)"
        );
    }

    #[test]
    fn verbose_view_names_each_script_by_hash_and_keeps_the_arguments() {
        let lock = format!("{}\n{}", HOST_SCRIPTS[0].1, HOST_SCRIPTS[1].1);
        let inner = RemoteCommand::sh("echo \"$1\"", ["a b"]);
        let cmd = RemoteCommand::sh(&lock, ["/srv/state dir", "acquire"])
            .in_dir("/srv")
            .stop_on_disconnect();
        let (line, scripts) = cmd.verbose_view();
        assert_eq!(scripts.len(), 2, "the watcher and the lock script");
        let (watcher, script) = (&scripts[0], &scripts[1]);
        assert_eq!(watcher.name(), "stop-on-disconnect");
        assert_eq!(
            script.name(),
            format!("{} + {}", HOST_SCRIPTS[0].0, HOST_SCRIPTS[1].0)
        );
        assert_eq!(script.sha256, sha256_hex(&lock));
        assert_eq!(
            line,
            format!(
                "cd /srv && sh -c <script {}> ctops sh -c <script {}> ctops '/srv/state dir' acquire",
                watcher.short(),
                script.short()
            )
        );
        assert!(!line.contains('\n'));
        // A one-line body stays in the line, quoted as sent.
        let (line, scripts) = inner.verbose_view();
        assert!(scripts.is_empty());
        assert_eq!(line, inner.render());
    }

    #[test]
    fn glue_around_host_scripts_is_its_own_part() {
        let body = format!("X='1'\n{}tail\n", HOST_SCRIPTS[2].1);
        let script = Script::new(&body);
        let names: Vec<Option<&str>> = script.parts.iter().map(|p| p.name).collect();
        assert_eq!(names, [None, Some(HOST_SCRIPTS[2].0), None]);
        let joined: String = script.parts.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(joined, body);
        assert_eq!(Script::new("echo hi\necho there").name(), "inline");
    }

    #[test]
    fn label_names_the_program() {
        let c = RemoteCommand::new(["docker", "compose", "-f", "x.yml", "ps"]);
        assert_eq!(c.label(), "docker compose x.yml");
    }
}
