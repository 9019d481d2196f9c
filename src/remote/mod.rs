//! How ctops talks to the host: one multiplexed SSH connection, at most [`MAX_CHANNELS`]
//! commands at once, a timeout on each, stdout and stderr streamed, data over stdin.
//!
//! The operations modules say *what* to run (as [`RemoteCommand`]s); this layer knows *how*.

mod command;
mod connect;
pub mod dial;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openssh::{ForwardType, Session, Socket, Stdio};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, Semaphore};

pub use command::{assign, join_quoted, quote, sha256_hex, RemoteCommand, Script};
pub use connect::probe_new_login;

use crate::config::Target;
use crate::error::Error;
use crate::output::Output;

/// sshd's `MaxSessions` defaults to 10; keep a margin for the master's own needs.
pub const MAX_CHANNELS: usize = 8;

/// What a finished command left behind.
#[derive(Debug)]
pub struct Captured {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Captured {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

pub struct Remote {
    session: Session,
    /// This invocation's folder under the control root: the master's socket and log.
    control_dir: std::path::PathBuf,
    host: String,
    channels: Arc<Semaphore>,
    default_timeout: Duration,
    dry_run: bool,
    out: Output,
    /// Port forwards opened so far, reused (by `health --watch`, say).
    forwards: Mutex<HashMap<(String, u16), SocketAddr>>,
    busy: Busy,
    /// When the connection's first session channel was asked for (see [`Remote::pace`]).
    first_channel: std::sync::OnceLock<std::time::Instant>,
}

/// How long channels asked for together with the first one wait behind it.
const FIRST_CHANNEL_LEAD: Duration = Duration::from_millis(3);

/// How long at least one remote command was in flight: what ctops spends beyond that is its
/// own time (reported at `-vv`, and read by the benchmarks).
#[derive(Default)]
struct Busy(std::sync::Mutex<BusyState>);

#[derive(Default)]
struct BusyState {
    in_flight: usize,
    since: Option<std::time::Instant>,
    total: Duration,
    opened: Option<std::time::Instant>,
}

struct BusyGuard<'a>(&'a Busy);

impl Busy {
    fn enter(&self) -> BusyGuard<'_> {
        let mut s = self.0.lock().expect("busy lock");
        if s.in_flight == 0 {
            s.since = Some(std::time::Instant::now());
        }
        s.in_flight += 1;
        BusyGuard(self)
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        let mut s = self.0 .0.lock().expect("busy lock");
        s.in_flight -= 1;
        if s.in_flight == 0 {
            if let Some(since) = s.since.take() {
                s.total += since.elapsed();
            }
        }
    }
}

impl Remote {
    /// Sweeps masters left by dead ctops processes, then opens this invocation's connection.
    pub async fn connect(target: &Target, out: &Output, dry_run: bool) -> Result<Remote, Error> {
        let root = connect::control_root()?;
        connect::sweep_stale_masters(&root).await;
        let started = std::time::Instant::now();
        let (session, control_dir) = connect::open(target, &root, out).await?;
        tracing::debug!(host = %target.ssh, elapsed = ?started.elapsed(), "connected");
        Ok(Remote {
            session,
            control_dir,
            host: target.ssh.clone(),
            channels: Arc::new(Semaphore::new(MAX_CHANNELS)),
            default_timeout: target.timeouts.command(),
            dry_run,
            out: out.clone(),
            forwards: Mutex::new(HashMap::new()),
            busy: Busy(std::sync::Mutex::new(BusyState {
                opened: Some(std::time::Instant::now()),
                ..Default::default()
            })),
            first_channel: std::sync::OnceLock::new(),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// `-v`: a script that goes to the host as data (a runner over stdin), named once like
    /// the scripts sent as command bodies.
    pub fn echo_input_script(&self, body: &str, how: &str) {
        if self.out.verbose > 0 {
            self.out
                .echo_script(&self.host, &Script::new(body), Some(how));
        }
    }

    /// Runs a command and captures its output; a non-zero exit is not an error here.
    pub async fn run(&self, cmd: &RemoteCommand) -> Result<Captured, Error> {
        self.run_with_input(cmd, None).await
    }

    /// Runs a command and fails, naming it, the host and its stderr, unless it exits 0.
    pub async fn run_ok(&self, cmd: &RemoteCommand) -> Result<Captured, Error> {
        let out = self.run(cmd).await?;
        if out.status != 0 {
            return Err(self.exited(cmd, out.status, &out.stderr));
        }
        Ok(out)
    }

    /// Runs a command with `input` on its stdin (secrets travel this way, never in argv).
    pub async fn run_with_input(
        &self,
        cmd: &RemoteCommand,
        input: Option<&[u8]>,
    ) -> Result<Captured, Error> {
        let _channel = self.channel().await;
        let timeout = self.timeout_of(cmd);
        let work = async {
            let mut child = self
                .spawn(cmd, input.is_some() || cmd.stops_on_disconnect())
                .await?;
            let mut stdin = child.stdin().take();
            if let (Some(pipe), Some(data)) = (stdin.as_mut(), input) {
                pipe.write_all(data)
                    .await
                    .map_err(|e| self.io_error(cmd, e))?;
                pipe.shutdown().await.map_err(|e| self.io_error(cmd, e))?;
                stdin = None;
            }
            let mut stdout = child.stdout().take().expect("piped");
            let mut stderr = child.stderr().take().expect("piped");
            let (mut o, mut e) = (Vec::new(), Vec::new());
            let (ro, re) = tokio::join!(stdout.read_to_end(&mut o), stderr.read_to_end(&mut e));
            ro.and(re).map_err(|err| self.io_error(cmd, err))?;
            drop(stdin);
            let status = child.wait().await.map_err(|err| self.lost(cmd, err))?;
            tracing::debug!(command = %cmd.label(), status = ?status.code(), "finished");
            Ok(Captured {
                status: status.code().unwrap_or(255),
                stdout: o,
                stderr: e,
            })
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(cmd, timeout)),
        }
    }

    /// Runs a command with its stdout copied to `sink` as it arrives (stderr to ours).
    /// Returns the exit status. `timeout: None` streams until the command ends.
    pub async fn stream<W>(
        &self,
        cmd: &RemoteCommand,
        sink: &mut W,
        timeout: Option<Duration>,
    ) -> Result<i32, Error>
    where
        W: AsyncWrite + Unpin,
    {
        self.stream_with(cmd, sink, timeout, false).await
    }

    /// `work` (running `cmd`) within `timeout`, when there is one.
    async fn within<T>(
        &self,
        cmd: &RemoteCommand,
        timeout: Option<Duration>,
        work: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match timeout {
            Some(limit) => tokio::time::timeout(limit, work)
                .await
                .unwrap_or_else(|_| Err(self.timed_out(cmd, limit))),
            None => work.await,
        }
    }

    /// Runs a command and hands each line of its stdout and stderr to `line` as it comes
    /// (for output shown above a spinner). Returns the remote exit status.
    pub async fn stream_lines(
        &self,
        cmd: &RemoteCommand,
        timeout: Option<Duration>,
        mut line: impl FnMut(&str),
    ) -> Result<i32, Error> {
        use tokio::io::AsyncBufReadExt;
        let _channel = self.channel().await;
        let work = async {
            let mut child = self.spawn(cmd, true).await?;
            // Held open until the end: the host-side watcher sees EOF only when we go away.
            let _stdin = child.stdin().take();
            let stdout = child.stdout().take().expect("piped");
            let stderr = child.stderr().take().expect("piped");
            let mut out = tokio::io::BufReader::new(stdout).split(b'\n');
            let mut err = tokio::io::BufReader::new(stderr).split(b'\n');
            let (mut out_open, mut err_open) = (true, true);
            while out_open || err_open {
                let next = tokio::select! {
                    got = out.next_segment(), if out_open => got.map(|l| l.ok_or(true)),
                    got = err.next_segment(), if err_open => got.map(|l| l.ok_or(false)),
                };
                match next.map_err(|e| self.io_error(cmd, e))? {
                    Ok(bytes) => line(String::from_utf8_lossy(&bytes).trim_end_matches('\r')),
                    Err(true) => out_open = false,
                    Err(false) => err_open = false,
                }
            }
            let status = child.wait().await.map_err(|e| self.lost(cmd, e))?;
            Ok(status.code().unwrap_or(255))
        };
        self.within(cmd, timeout, work).await
    }

    /// Runs a command with stdout and stderr passed through, and this process's stdin too
    /// when `with_stdin` (then the command must not be wrapped by the watcher, which reads
    /// stdin to notice a disconnect). Returns the remote exit status.
    pub async fn pipe_through(&self, cmd: &RemoteCommand, with_stdin: bool) -> Result<i32, Error> {
        self.stream_with(cmd, &mut tokio::io::stdout(), None, with_stdin)
            .await
    }

    /// Runs a command on a terminal of its own, over this connection's master (`ssh -S
    /// <control socket> -tt`: the openssh crate has no PTY option). This process's terminal
    /// is the command's: keys, Ctrl-C and the window size go through. Returns the remote
    /// exit status (255: ssh itself failed).
    pub async fn interactive(&self, cmd: &RemoteCommand) -> Result<i32, Error> {
        let rendered = cmd.render();
        if self.out.verbose > 0 {
            let (line, scripts) = cmd.verbose_view();
            self.out.echo_remote(&self.host, &line, &scripts);
        }
        let _channel = self.channel().await;
        let status = tokio::process::Command::new("ssh")
            .arg("-S")
            .arg(self.session.control_socket())
            .args(["-tt", "ctops"])
            .arg(&rendered)
            .status()
            .await
            .map_err(|e| {
                Error::failed(format!(
                    "cannot start ssh for a terminal session on {}: {e}",
                    self.host
                ))
            })?;
        Ok(status.code().unwrap_or(255))
    }

    async fn stream_with<W>(
        &self,
        cmd: &RemoteCommand,
        sink: &mut W,
        timeout: Option<Duration>,
        with_stdin: bool,
    ) -> Result<i32, Error>
    where
        W: AsyncWrite + Unpin,
    {
        let _channel = self.channel().await;
        let work = async {
            let mut child = self.spawn(cmd, true).await?;
            let stdin = child.stdin().take();
            // Not forwarded, stdin is held open until the end, so the host-side watcher sees
            // EOF only when we go away.
            let (_held, forwarded) = if with_stdin {
                (None, stdin)
            } else {
                (stdin, None)
            };
            let stdout = child.stdout().take().expect("piped");
            let stderr = child.stderr().take().expect("piped");
            let feed = async move {
                if let Some(mut pipe) = forwarded {
                    let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut pipe).await;
                    let _ = pipe.shutdown().await;
                    drop(pipe); // the remote command's EOF
                }
                std::future::pending::<()>().await
            };
            let outputs = async {
                tokio::join!(
                    copy_flushing(stdout, sink),
                    copy_flushing(stderr, crate::output::local_stderr())
                )
            };
            // The command's end decides, not stdin's (a terminal may never end).
            let (ro, re) = tokio::select! {
                done = outputs => done,
                _ = feed => unreachable!("feeding stdin never ends on its own"),
            };
            // A closed local stdout (`| head`) is not a remote failure: hand it up as is.
            ro.map_err(|e| {
                Error::failed(format!("writing the output of `{}`", cmd.label())).with_source(e)
            })?;
            re.map_err(|e| self.io_error(cmd, e))?;
            let status = child.wait().await.map_err(|e| self.lost(cmd, e))?;
            Ok(status.code().unwrap_or(255))
        };
        self.within(cmd, timeout, work).await
    }

    /// One of the [`MAX_CHANNELS`] channels, counted as remote time while held.
    async fn channel(&self) -> (tokio::sync::SemaphorePermit<'_>, BusyGuard<'_>) {
        let permit = self
            .channels
            .acquire()
            .await
            .expect("semaphore never closed");
        (permit, self.busy.enter())
    }

    async fn spawn(
        &self,
        cmd: &RemoteCommand,
        stdin: bool,
    ) -> Result<openssh::Child<&Session>, Error> {
        if self.dry_run && !cmd.read_only {
            // Operations must not get here under --dry-run; this is the last line of defence.
            return Err(Error::failed(format!(
                "refusing to run `{}` during --dry-run",
                cmd.label()
            )));
        }
        let rendered = cmd.render();
        if self.out.verbose > 0 || tracing::enabled!(tracing::Level::DEBUG) {
            let (line, scripts) = cmd.verbose_view();
            self.out.echo_remote(&self.host, &line, &scripts);
            // The one-line view, not the text: `-vv` shows each script once, above.
            tracing::debug!(host = %self.host, command = %line, "spawn");
        }
        self.pace().await;
        self.session
            .raw_command(&rendered)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .await
            .map_err(|e| self.lost(cmd, e))
    }

    /// sshd leaves Nagle's algorithm on until its first session starts, so its answer to the
    /// first channel open sits behind an unacknowledged packet, and ssh acknowledges that
    /// only when it next sends something or when its delayed-ACK timer fires (40 ms on
    /// Linux). Channels asked for at the same moment as the first therefore go a few
    /// milliseconds after it: their open requests carry the ACK, and nobody waits the 40 ms.
    async fn pace(&self) {
        let now = std::time::Instant::now();
        let first = *self.first_channel.get_or_init(|| now);
        let go = first + FIRST_CHANNEL_LEAD;
        if first != now && go > now {
            tokio::time::sleep_until(go.into()).await;
        }
    }

    /// Forwards a loopback port here to `host:port` as seen from the remote host, so ctops can
    /// fetch HTTP checks itself (no curl needed in any image).
    pub async fn forward(&self, host: &str, port: u16) -> Result<SocketAddr, Error> {
        let mut forwards = self.forwards.lock().await;
        if let Some(local) = forwards.get(&(host.to_string(), port)) {
            return Ok(*local);
        }
        let local = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::failed(format!("cannot pick a local port for forwarding: {e}")))?;
        self.out.echo_local(&format!(
            "forward {local} -> {host}:{port} on {}",
            self.host
        ));
        let remote = Socket::TcpSocket {
            host: host.to_string().into(),
            port,
        };
        self.session
            .request_port_forward(ForwardType::Local, local, remote)
            .await
            .map_err(|e| {
                Error::failed(format!(
                    "port forward to {host}:{port} on {} failed: {e}",
                    self.host
                ))
            })?;
        forwards.insert((host.to_string(), port), local);
        Ok(local)
    }

    /// Drops the connection at once, as a cut link would (fault injection in tests).
    pub fn kill_master(&self) {
        let _ = std::process::Command::new("ssh")
            .arg("-S")
            .arg(self.session.control_socket())
            .args(["-O", "exit", "ctops"])
            .stderr(std::process::Stdio::null())
            .status();
    }

    /// Closes the connection and ends the master process.
    pub async fn close(self) {
        if let Ok(s) = self.busy.0.lock() {
            let open = s.opened.map(|o| o.elapsed()).unwrap_or_default();
            tracing::debug!(
                busy_ms = s.total.as_millis() as u64,
                open_ms = open.as_millis() as u64,
                "remote commands were in flight for busy_ms of the open_ms the connection was open"
            );
        }
        if let Err(e) = self.session.close().await {
            tracing::debug!("closing the ssh session: {e}");
        }
        let _ = std::fs::remove_dir_all(&self.control_dir);
    }

    /// The command's own timeout, else the target's `timeouts.command`.
    pub fn timeout_of(&self, cmd: &RemoteCommand) -> Duration {
        cmd.timeout.unwrap_or(self.default_timeout)
    }

    pub fn exited(&self, cmd: &RemoteCommand, status: i32, stderr: &[u8]) -> Error {
        let stderr = String::from_utf8_lossy(stderr);
        let tail: Vec<&str> = stderr
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let detail = if tail.is_empty() {
            String::new()
        } else {
            format!(": {}", tail.join(" / "))
        };
        Error::failed(format!(
            "`{}` exited {status} on {}{detail}",
            cmd.label(),
            self.host
        ))
    }

    fn timed_out(&self, cmd: &RemoteCommand, after: Duration) -> Error {
        Error::failed(format!(
            "`{}` timed out after {} on {} (timeouts.command)",
            cmd.label(),
            humantime::format_duration(after),
            self.host
        ))
        .with_help(
            "the remote command was stopped; raise the timeout in [timeouts] if it needs longer",
        )
    }

    fn lost(&self, cmd: &RemoteCommand, e: openssh::Error) -> Error {
        Error::connection(format!(
            "connection to {} lost while running `{}`: {e}",
            self.host,
            cmd.label()
        ))
        .with_help("check the link and run `ctops status` to see the state of the host")
    }

    fn io_error(&self, cmd: &RemoteCommand, e: std::io::Error) -> Error {
        Error::connection(format!(
            "i/o with `{}` on {} failed: {e}",
            cmd.label(),
            self.host
        ))
    }
}

/// Copies and flushes after every read, so a line written on the host shows up at once.
async fn copy_flushing<R, W>(mut from: R, mut to: W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.flush().await;
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
    }
}
