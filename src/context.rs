//! What every operation gets: the resolved target, the output, the global flags, and the one
//! SSH connection, opened on first use so that local work (an HTTP check from the operator's
//! machine) can overlap with connecting.

use tokio::sync::OnceCell;

use crate::config::Target;
use crate::error::Error;
use crate::output::Output;
use crate::remote::Remote;

pub struct Ctx {
    pub target: Target,
    pub out: Output,
    pub dry_run: bool,
    pub yes: bool,
    remote: OnceCell<Remote>,
    compose_config: OnceCell<Vec<u8>>,
}

impl Ctx {
    pub fn new(target: Target, out: Output, dry_run: bool, yes: bool) -> Self {
        Ctx {
            target,
            out,
            dry_run,
            yes,
            remote: OnceCell::new(),
            compose_config: OnceCell::new(),
        }
    }

    /// The connection to the target's host; connects on the first call only.
    pub async fn remote(&self) -> Result<&Remote, Error> {
        self.remote
            .get_or_try_init(|| Remote::connect(&self.target, &self.out, self.dry_run))
            .await
    }

    /// Fills in the facts the config leaves to the stack (`crate::discover`), over the one
    /// connection. Read-only: also under `--dry-run`.
    pub async fn discover_stack(&mut self) -> Result<(), Error> {
        let mut target = self.target.clone();
        let remote = self.remote().await?;
        let (config, stack) = tokio::join!(
            self.compose_config(),
            crate::compose::Stack::load(remote, &self.target)
        );
        crate::discover::stack_facts(remote, &mut target, config, &stack?).await?;
        self.target = target;
        Ok(())
    }

    /// `compose config --format json` of the target, read once per invocation: discovery
    /// and the deploy probe both need it.
    pub async fn compose_config(&self) -> Result<&[u8], Error> {
        let read = || async {
            let t = &self.target;
            let cmd = crate::compose::Compose::new(t, t.compose_project.clone()).config_json();
            Ok::<_, Error>(self.remote().await?.run_ok(&cmd).await?.stdout)
        };
        self.compose_config
            .get_or_try_init(read)
            .await
            .map(Vec::as_slice)
    }

    /// "sandbox (trader-psy-sandbox)": how every status line and confirmation names the target.
    pub fn target_label(&self) -> String {
        format!("{} ({})", self.target.name, self.target.ssh)
    }

    /// `--dry-run`: what would run on the host, exactly as it would be sent.
    pub fn would_run(&self, host: &str, cmd: &crate::remote::RemoteCommand) {
        self.out
            .status(format!("dry run: would run on {host}: {}", cmd.render()));
    }

    /// Asks before a destructive step (SPEC principle 5): on a protected target the answer
    /// is the target's name; without a TTY only `--yes` goes on (exit 4 otherwise).
    pub fn confirm(&self, action: &str) -> Result<(), Error> {
        let expected = if self.target.protected {
            self.target.name.as_str()
        } else {
            "yes"
        };
        self.confirm_word(action, expected)
    }

    /// Asks for `expected` to be typed (a restore asks for the database's name).
    pub fn confirm_word(&self, action: &str, expected: &str) -> Result<(), Error> {
        use std::io::{BufRead, IsTerminal, Write};
        if self.yes {
            return Ok(());
        }
        if !std::io::stdin().is_terminal() {
            return Err(
                Error::refused(format!("refusing to {action} without confirmation"))
                    .with_help("no TTY to ask on: pass --yes to confirm"),
            );
        }
        let mut stderr = std::io::stderr();
        let _ = write!(stderr, "{action}? type `{expected}` to go on: ");
        let _ = stderr.flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if answer.trim() == expected {
            Ok(())
        } else {
            Err(Error::refused(format!("not confirmed: did not {action}")))
        }
    }

    /// Closes the connection, if one was opened.
    pub async fn close(self) {
        if let Some(remote) = self.remote.into_inner() {
            remote.close().await;
        }
    }
}
