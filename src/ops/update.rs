//! Runbook 8.3: `update system` (the host's packages) and `update images` (the stack's).
//!
//! `update system` runs apt as root: directly when ctops logs in as root, else through the
//! target's `sudo` prefix (`["sudo", "-n"]`, which never prompts); with neither it refuses
//! before anything runs. apt waits for the dpkg lock (another apt, unattended-upgrades)
//! instead of failing, keeps changed configuration files (`--force-confold`), and is never
//! killed part-way: if ctops is interrupted, dpkg finishes on the host.
//!
//! `update images` pulls the images of the services that use one, rebuilds the built ones on
//! freshly pulled bases, recreates what changed and runs the health gate, as a detached
//! runner like `env set`: on failure the previous images are tagged back and recreated.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::Envelope;
use crate::compose::Stack;
use crate::context::Ctx;
use crate::error::{Error, Exit};
use crate::gate::{execute, failure_summary, gate_vars};
use crate::lock::{self, HostLock};
use crate::remote::{quote, Remote, RemoteCommand};
use crate::runner::{self, Plan, Step};

/// Packages whose upgrade restarts the Docker engine, and with it every container.
const DOCKER_PACKAGES: &[&str] = &[
    "docker.io",
    "docker-ce",
    "docker-ce-cli",
    "docker-engine",
    "containerd",
    "containerd.io",
    "runc",
];

/// How apt gets root: prints `root`, `sudo`, `nosudo`, or `refused <what sudo said>`.
/// `$@` is the target's sudo prefix; `apt-get --version` asks sudo about apt-get itself.
const ROOT_PROBE: &str = include_str!("../scripts/update-root-probe.sh");

/// apt with no terminal to ask on: stdin closed, so nothing can wait for an answer.
const NO_STDIN: &str = include_str!("../scripts/update-no-stdin.sh");

const REBOOT_REQUIRED: &str = include_str!("../scripts/update-reboot-required.sh");

/// One package `apt-get -s upgrade` would upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upgrade {
    pub package: String,
    pub from: Option<String>,
    pub to: String,
}

/// The `Inst` lines of `apt-get -s upgrade`: `Inst NAME [OLD] (NEW ORIGIN [ARCH])`.
pub fn parse_simulation(text: &str) -> Vec<Upgrade> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("Inst ")?;
            let (package, rest) = rest.split_once(' ')?;
            let (from, rest) = match rest.strip_prefix('[') {
                Some(r) => {
                    let (old, r) = r.split_once(']')?;
                    (Some(old.to_string()), r.trim_start())
                }
                None => (None, rest),
            };
            let to = rest.strip_prefix('(')?.split(' ').next()?.to_string();
            Some(Upgrade {
                package: package.to_string(),
                from,
                to,
            })
        })
        .collect()
}

/// "N not upgraded" from apt's summary line: packages kept back (they need new
/// dependencies or removals, which `upgrade` never does).
pub fn kept_back(text: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let (before, _) = l.split_once(" not upgraded")?;
            before.rsplit(' ').next()?.parse().ok()
        })
        .unwrap_or(0)
}

pub fn touches_docker(upgrades: &[Upgrade]) -> Vec<&str> {
    upgrades
        .iter()
        .map(|u| u.package.as_str())
        .filter(|p| DOCKER_PACKAGES.contains(&p.split(':').next().unwrap_or(p)))
        .collect()
}

/// apt-get as root with the target's options; `DEBIAN_FRONTEND` for a root login (sudo's
/// env_reset drops it; with no terminal and stdin closed debconf takes the defaults anyway).
struct Apt {
    prefix: Vec<String>,
    config: Option<String>,
    lock_wait: Duration,
}

impl Apt {
    fn command(&self, args: &[&str]) -> RemoteCommand {
        self.waiting(self.lock_wait, args)
    }

    fn waiting(&self, lock_wait: Duration, args: &[&str]) -> RemoteCommand {
        let mut argv: Vec<String> = vec!["env".into(), "DEBIAN_FRONTEND=noninteractive".into()];
        argv.extend(self.prefix.iter().cloned());
        argv.push("apt-get".into());
        if let Some(config) = &self.config {
            argv.extend(["-c".to_string(), config.clone()]);
        }
        argv.extend([
            "-q".to_string(),
            "-o".into(),
            format!("DPkg::Lock::Timeout={}", lock_wait.as_secs()),
        ]);
        argv.extend(args.iter().map(|a| a.to_string()));
        RemoteCommand::sh(NO_STDIN, argv)
    }

    fn update(&self) -> RemoteCommand {
        self.command(&["update"])
    }

    fn simulate(&self) -> RemoteCommand {
        self.command(&["-s", "upgrade"]).read_only()
    }

    /// Tries the dpkg lock without waiting: tells whether the upgrade will have to wait.
    fn lock_probe(&self) -> RemoteCommand {
        self.waiting(Duration::ZERO, &["check"]).read_only()
    }

    fn upgrade(&self) -> RemoteCommand {
        self.command(&[
            "-y",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
            "upgrade",
        ])
    }
}

/// Finds out how apt gets root, or refuses (exit 4) saying what to configure.
async fn root_prefix(ctx: &Ctx, remote: &Remote) -> Result<Vec<String>, Error> {
    let sudo = &ctx.target.sudo;
    let out = super::run_step(
        remote,
        &RemoteCommand::sh(ROOT_PROBE, sudo.clone()).read_only(),
        "finding how apt gets root",
    )
    .await?
    .stdout_text();
    let answer = out.trim();
    let help_rule = "add a sudoers rule such as `deploy ALL=(root) NOPASSWD: /usr/bin/apt-get` (visudo -f /etc/sudoers.d/ctops)";
    match answer.split_once(' ').map_or((answer, ""), |(a, b)| (a, b)) {
        ("root", _) => Ok(Vec::new()),
        ("sudo", _) => Ok(sudo.clone()),
        ("nosudo", _) => Err(Error::refused(format!(
            "update system needs root on {}: ctops logs in as a user who is not root and the target has no `sudo` prefix",
            remote.host()
        ))
        .with_help(format!("set `sudo = [\"sudo\", \"-n\"]` for the target and {help_rule}"))),
        (_, said) => Err(Error::refused(format!(
            "update system needs root on {}: `{} apt-get` was refused: {}",
            remote.host(),
            sudo.join(" "),
            said.trim()
        ))
        .with_help(help_rule)),
    }
}

#[derive(Serialize)]
struct SystemDoc<'a> {
    #[serde(flatten)]
    envelope: Envelope<'a>,
    upgraded: &'a [Upgrade],
    kept_back: u64,
    docker_upgraded: bool,
    waited_for_lock: bool,
    reboot_required: bool,
    reboot_packages: Vec<String>,
}

pub async fn system(ctx: &Ctx) -> Result<Exit> {
    let t = &ctx.target;
    let remote = ctx.remote().await?;
    let apt = Apt {
        prefix: t.sudo.clone(),
        config: t.update.apt_config.clone(),
        lock_wait: t.timeouts.command(),
    };
    if ctx.dry_run {
        for cmd in [apt.update(), apt.simulate(), apt.upgrade()] {
            ctx.would_run(remote.host(), &cmd);
        }
        return Ok(Exit::Ok);
    }
    ctx.confirm(&format!(
        "upgrade the system packages on {} (apt-get upgrade; an upgrade of Docker restarts every container)",
        ctx.target_label()
    ))?;
    let apt = Apt {
        prefix: root_prefix(ctx, remote).await?,
        ..apt
    };
    let apt = &apt;
    let (upgrades, kept, waited) = lock::hold_with(remote, &t.state_dir, "update system", |held| {
        upgrade_packages(ctx, remote, apt, held)
    })
    .await?;
    let reboot = super::run_step(
        remote,
        &RemoteCommand::sh(REBOOT_REQUIRED, Vec::<String>::new()).read_only(),
        "checking whether a reboot is required",
    )
    .await?
    .stdout_text();
    let mut reboot_lines = reboot.lines();
    let reboot_required = reboot_lines.next() == Some("required");
    let reboot_packages: Vec<String> = reboot_lines.map(str::to_string).collect();
    let docker = touches_docker(&upgrades);
    if ctx.out.json {
        ctx.out.json_doc(&SystemDoc {
            envelope: Envelope::new("update system", ctx, true),
            upgraded: &upgrades,
            kept_back: kept,
            docker_upgraded: !docker.is_empty(),
            waited_for_lock: waited,
            reboot_required,
            reboot_packages: reboot_packages.clone(),
        })?;
    } else {
        let summary = if upgrades.is_empty() {
            "nothing to upgrade".to_string()
        } else {
            format!("{} packages upgraded", upgrades.len())
        };
        ctx.out
            .status(format!("done on {}: {summary}", remote.host()));
        if kept > 0 {
            ctx.out.warn(format!(
                "{kept} packages kept back (they need new dependencies or removals): `apt-get full-upgrade` on the host, deliberately"
            ));
        }
    }
    if !docker.is_empty() {
        ctx.out.warn(format!(
            "Docker was upgraded ({}): the engine restarted every container; `ctops health` shows whether they are all back",
            docker.join(", ")
        ));
    }
    if reboot_required {
        let which = if reboot_packages.is_empty() {
            String::new()
        } else {
            format!(" (for {})", reboot_packages.join(", "))
        };
        ctx.out.warn(format!(
            "{} needs a reboot{which}: plan it, then `ctops health` after",
            remote.host()
        ));
    }
    Ok(Exit::Ok)
}

/// `apt-get update`, what `upgrade` would do, then the upgrade itself (streamed); returns the
/// upgrades, the number kept back, and whether the dpkg lock was held by someone else.
async fn upgrade_packages(
    ctx: &Ctx,
    remote: &Remote,
    apt: &Apt,
    held: lock::Held,
) -> Result<(Vec<Upgrade>, u64, bool), Error> {
    ctx.out
        .status(format!("apt-get update on {}", remote.host()));
    super::run_streamed(ctx, remote, &held.wrap(apt.update()), "apt-get update").await?;
    // What the upgrade would do, and whether someone holds the dpkg lock now, at once.
    let (simulate, lock_probe) = (apt.simulate(), apt.lock_probe());
    let (simulated, lock_probe) = tokio::join!(
        super::run_step(remote, &simulate, "apt-get -s upgrade"),
        remote.run(&lock_probe)
    );
    let text = simulated?.stdout_text();
    let upgrades = parse_simulation(&text);
    let kept = kept_back(&text);
    if upgrades.is_empty() {
        return Ok((upgrades, kept, false));
    }
    for u in &upgrades {
        ctx.out.status(format!(
            "  {} {} -> {}",
            u.package,
            u.from.as_deref().unwrap_or("(new)"),
            u.to
        ));
    }
    let docker = touches_docker(&upgrades);
    if !docker.is_empty() {
        ctx.out.warn(format!(
            "this upgrades Docker ({}): the engine restarts, and every container with it",
            docker.join(", ")
        ));
    }
    let lock_probe = lock_probe?;
    let waited = lock_probe.status != 0 && lock_probe.stderr_text().contains("Could not get lock");
    if waited {
        let holder = lock_probe
            .stderr_text()
            .lines()
            .find_map(|l| {
                l.split_once("It is held by ")
                    .map(|(_, who)| who.to_string())
            })
            .unwrap_or_else(|| "another process".into());
        ctx.out.status(format!(
            "waiting for the dpkg lock, held by {} (up to {})",
            holder.trim_end_matches('.'),
            humantime::format_duration(apt.lock_wait)
        ));
    }
    // Detached on the host: dpkg is never killed part-way, whatever happens to ctops.
    let limit = apt.lock_wait + ctx.target.timeouts.build();
    let pid = held
        .detach(remote, "apt", "apt-get upgrade", &apt.upgrade())
        .await?;
    let followed =
        tokio::time::timeout(limit, held.follow(remote, "apt", pid, ctx.out.quiet)).await;
    let (status, said) = match followed {
        Ok(followed) => followed?,
        Err(_) => {
            return Err(Error::stranded(
                format!(
                    "apt-get upgrade is still running on {} after {}",
                    remote.host(),
                    humantime::format_duration(limit)
                ),
                format!("apt-get upgrade running on the host (pid {pid}); the host lock is held until it ends"),
            )
            .with_help("`ctops lock status` shows the lock until it ends; then `ctops update system` again"))
        }
    };
    if status != 0 {
        return Err(upgrade_failed(remote.host(), status, &said));
    }
    Ok((upgrades, kept, waited))
}

/// A failed `apt-get upgrade`: exit 1 when dpkg never started (apt could not get its lock),
/// else exit 6: packages may be half-upgraded.
fn upgrade_failed(host: &str, status: i32, said: &str) -> Error {
    let detail = said.trim().replace('\n', " / ");
    if said.contains("Could not get lock") {
        return Error::failed(format!(
            "apt-get upgrade exited {status} on {host}: it could not get the dpkg lock, so nothing was upgraded: {detail}"
        ))
        .with_help("find what holds the dpkg lock (unattended-upgrades?), then `ctops update system` again");
    }
    Error::stranded(
        format!("apt-get upgrade exited {status} on {host}: {detail}"),
        "packages may be half-upgraded (dpkg stopped part-way)",
    )
    .with_help("`sudo dpkg --configure -a` on the host, then `ctops update system` again")
}

/// One service whose container runs another image afterwards.
#[derive(Debug, Serialize)]
struct Updated {
    service: String,
    image: String,
    from: String,
    to: String,
}

#[derive(Serialize)]
struct ImagesDoc<'a> {
    #[serde(flatten)]
    envelope: Envelope<'a>,
    op: String,
    outcome: String,
    updated: Vec<Updated>,
    steps: Vec<runner::Event>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<String>,
}

/// `docker tag ID REF` for every image the stack runs now: what a failed update puts back.
fn retag_script(stack: &Stack) -> String {
    let mut pairs: Vec<(String, String)> = stack
        .containers
        .iter()
        .filter(|c| !c.image_id.is_empty() && !c.image.is_empty())
        .map(|c| (c.image_id.clone(), c.image.clone()))
        .collect();
    pairs.sort();
    pairs.dedup();
    let lines: Vec<String> = pairs
        .iter()
        .map(|(id, image)| format!("docker tag {} {}", quote(id), quote(image)))
        .collect();
    if lines.is_empty() {
        "true".into()
    } else {
        lines.join(" && ")
    }
}

pub async fn images(ctx: &Ctx) -> Result<Exit> {
    let t = &ctx.target;
    let remote = ctx.remote().await?;
    let before = Stack::load(remote, t).await?;
    let project = before.project.clone().unwrap_or_else(|| "default".into());
    let compose = before.compose(t);
    let op_id = runner::op_id(before.host_time, "update");
    let recreate = compose.up(&[], false, false);
    let describe = "update images".to_string();
    let audit = runner::audit_fields(&t.name, &describe, &op_id);
    let plan = Plan {
        op: "update",
        op_id: op_id.clone(),
        describe: describe.clone(),
        vars: gate_vars(t, &project),
        forward: vec![
            Step::new(
                "pull",
                "pull the images of the services that use one",
                &[compose.pull(true).timeout(t.timeouts.build())],
            )
            .marks("PULLED"),
            Step::new(
                "build",
                "rebuild the built services on freshly pulled bases",
                &[compose.build_pulling().timeout(t.timeouts.build())],
            ),
            Step::new(
                "recreate",
                "recreate the services whose image changed",
                std::slice::from_ref(&recreate),
            )
            .marks("CHANGED"),
            Step::shell("gate", "health gate", "gate ''"),
        ],
        back: vec![
            Step::shell(
                "retag",
                "tag the previous images back",
                retag_script(&before),
            )
            .when("PULLED"),
            Step::new(
                "recreate_back",
                "recreate the services on the previous images",
                std::slice::from_ref(&recreate),
            )
            .when("CHANGED"),
            Step::shell("gate_back", "health gate", "gate ''").when("CHANGED"),
        ],
        success: "updated",
        release_fields: None,
        audit_fields: runner::json_fields(&audit),
        seed_release: None,
    };
    if ctx.dry_run {
        return super::print_dry_run(ctx, &plan);
    }
    ctx.confirm(&format!(
        "pull and rebuild the images on {}, recreating the services whose image changed",
        ctx.target_label()
    ))?;
    let lock = HostLock::acquire(remote, &t.state_dir, &describe).await?;
    ctx.out
        .status(format!("update images on {}", ctx.target_label()));
    // Once the runner may have started, a lost link leaves the host in a state only the
    // journal knows: exit 6, not 3.
    let (outcome, steps, interrupted) = execute(ctx, remote, &plan, &lock)
        .await
        .map_err(|e| lost_mid_change(e, &op_id))?;
    let (exit, message) = match outcome.as_str() {
        "updated" => (Exit::Ok, None),
        "failed" => (
            Exit::Failed,
            Some(format!(
                "update images failed before anything changed: {}",
                failure_summary(&steps)
            )),
        ),
        "rolled-back" if interrupted => (
            Exit::Interrupted,
            Some(format!("interrupted: {}", failure_summary(&steps))),
        ),
        "rolled-back" => (
            Exit::Failed,
            Some(format!("update images failed: {}", failure_summary(&steps))),
        ),
        _ => (
            Exit::Stranded,
            Some(format!(
                "{op_id} did not end cleanly ({outcome}): see `ctops status`"
            )),
        ),
    };
    let updated = match Stack::load(remote, t).await {
        Ok(after) => changed_images(&before, &after),
        // The outcome is known from the journal; what runs now is for `ctops status`.
        Err(_) if exit != Exit::Ok => Vec::new(),
        Err(e) => return Err(lost_mid_change(e.into(), &op_id)),
    };
    if ctx.out.json {
        ctx.out.json_doc(&ImagesDoc {
            envelope: Envelope::new("update images", ctx, exit == Exit::Ok),
            op: op_id.clone(),
            outcome: outcome.clone(),
            updated,
            steps,
            error: super::error_object(exit, message.as_ref()),
            state: (exit != Exit::Ok).then(|| outcome.clone()),
        })?;
    } else if let Some(m) = &message {
        crate::say!("error: {m}");
    } else if updated.is_empty() {
        ctx.out
            .status("done: every image was up to date; nothing recreated");
    } else {
        for u in &updated {
            ctx.out.status(format!(
                "{}: {} {} -> {}",
                u.service,
                u.image,
                short_id(&u.from),
                short_id(&u.to)
            ));
        }
        ctx.out.status(format!(
            "done: {} services on new images, health gate passed",
            updated.len()
        ));
    }
    Ok(exit)
}

/// An error after `update images` may have changed the host: a connection error there is
/// exit 6 with the operation to look up, others stay as they are.
fn lost_mid_change(e: anyhow::Error, op_id: &str) -> anyhow::Error {
    let lost = e
        .chain()
        .find_map(|c| c.downcast_ref::<Error>())
        .is_some_and(|e| e.exit == Exit::Connection);
    if !lost {
        return e;
    }
    Error::stranded(
        format!("update images: {e:#}"),
        format!(
            "unknown: {op_id} may still be running on the host; `ctops status` reads its journal"
        ),
    )
    .with_help("reconnect and run `ctops status`: it shows the operation's outcome and what runs")
    .into()
}

fn changed_images(before: &Stack, after: &Stack) -> Vec<Updated> {
    after
        .services()
        .into_iter()
        .filter_map(|service| {
            let now = after.service(&service).next()?;
            let was = before.service(&service).next()?;
            (was.image_id != now.image_id).then(|| Updated {
                service: service.clone(),
                image: now.image.clone(),
                from: was.image_id.clone(),
                to: now.image_id.clone(),
            })
        })
        .collect()
}

fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMULATION: &str = "\
NOTE: This is only a simulation!
Reading package lists...
The following packages have been kept back:
  linux-image-amd64
The following packages will be upgraded:
  ctops-sandbox-dummy docker.io
2 upgraded, 0 newly installed, 0 to remove and 1 not upgraded.
Inst ctops-sandbox-dummy [1.0] (2.0 localhost [all])
Inst docker.io [20.10.24+dfsg1-1+b3] (20.10.24+dfsg1-1+deb12u1 Debian-Security:12/stable-security [amd64])
Conf ctops-sandbox-dummy (2.0 localhost [all])
";

    #[test]
    fn simulation_lists_each_upgrade_with_both_versions() {
        let upgrades = parse_simulation(SIMULATION);
        assert_eq!(
            upgrades[0],
            Upgrade {
                package: "ctops-sandbox-dummy".into(),
                from: Some("1.0".into()),
                to: "2.0".into()
            }
        );
        assert_eq!(upgrades[1].to, "20.10.24+dfsg1-1+deb12u1");
        assert_eq!(upgrades.len(), 2);
        assert_eq!(kept_back(SIMULATION), 1);
    }

    #[test]
    fn an_upgrade_of_the_engine_is_noticed() {
        let upgrades = parse_simulation(SIMULATION);
        assert_eq!(touches_docker(&upgrades), vec!["docker.io"]);
        assert!(touches_docker(&upgrades[..1]).is_empty());
    }

    #[test]
    fn nothing_to_do_parses_as_nothing() {
        let text = "Reading package lists...\n0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n";
        assert!(parse_simulation(text).is_empty());
        assert_eq!(kept_back(text), 0);
    }

    #[test]
    fn update_images_losing_the_link_is_stranded_not_a_connection_failure() {
        let lost: anyhow::Error = Error::connection("connection to trader-psy lost").into();
        let e = lost_mid_change(lost, "20261130-update-abc");
        assert_eq!(crate::error::exit_code_of(&e), Exit::Stranded);
        assert!(crate::error::state_of(&e).contains("20261130-update-abc"));
        let refused: anyhow::Error = Error::refused("lock held").into();
        assert_eq!(
            crate::error::exit_code_of(&lost_mid_change(refused, "x")),
            Exit::Refused
        );
    }

    #[test]
    fn an_upgrade_failing_mid_way_is_stranded_but_one_that_never_got_the_lock_is_not() {
        let said = "Setting up ctops-sandbox-dummy (2.0) ...\ndpkg: error processing package ctops-sandbox-dummy (--configure):\nE: Sub-process /usr/bin/dpkg returned an error code (1)";
        let e = upgrade_failed("trader-psy", 100, said);
        assert_eq!(e.exit, Exit::Stranded);
        assert!(e.state.as_deref().unwrap().contains("half-upgraded"));
        assert!(
            e.message.contains("returned an error code"),
            "{}",
            e.message
        );
        assert!(
            !e.message.contains("sh -c"),
            "no script as the command: {}",
            e.message
        );
        let e = upgrade_failed(
            "trader-psy",
            100,
            "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 7 (apt-get)",
        );
        assert_eq!(e.exit, Exit::Failed);
        assert!(e.state.is_none());
    }

    #[test]
    fn apt_runs_as_root_without_a_terminal_and_waits_for_the_lock() {
        let apt = Apt {
            prefix: vec!["sudo".into(), "-n".into()],
            config: Some("/etc/ctops/apt.conf".into()),
            lock_wait: Duration::from_secs(120),
        };
        let rendered = apt.upgrade().render();
        for part in [
            "sudo -n apt-get -c /etc/ctops/apt.conf",
            "DPkg::Lock::Timeout=120",
            "--force-confold",
            "-y",
            "</dev/null",
        ] {
            assert!(rendered.contains(part), "{part} in {rendered}");
        }
        assert!(apt.lock_probe().render().contains("DPkg::Lock::Timeout=0"));
    }
}
