//! The command line: clap derive definitions only. Validation that needs the config or the
//! host happens in the operations.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::HumanDuration;

const EXIT_CODES: &str = "\
Exit codes:
  0    success (health: everything up)
  1    the operation failed and the host is as it was (health: health_url not 2xx)
  2    usage or configuration error, found before anything changed
  3    connection failure (unreachable, timeout, auth refused, host key mismatch)
  4    refused by a precondition (lock held, confirmation declined, ...)
  5    degraded (health: the API answers but another check failed)
  6    failed and the host is NOT as it was: it needs attention
  130  interrupted by Ctrl-C after the host was brought back to a consistent state";

/// The CalmTrader runbook as safe, fast, scriptable commands, run over one SSH connection.
#[derive(Debug, Parser)]
#[command(name = "ctops", version, after_long_help = EXIT_CODES, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file [default: ./ctops.toml, ./config/ctops.toml, $XDG_CONFIG_HOME/ctops/config.toml]
    #[arg(long, global = true, env = "CTOPS_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Target from the config [default: the config's default_target]
    #[arg(long, global = true, env = "CTOPS_TARGET", value_name = "NAME")]
    pub target: Option<String>,
    /// Print the plan and change nothing on the host
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// One JSON document on stdout (NDJSON for streams)
    #[arg(long, global = true)]
    pub json: bool,
    /// Print every remote command exactly as sent (-vv: debug logs)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Print only errors and the data asked for
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Answer yes to confirmations (required without a TTY)
    #[arg(long, global = true)]
    pub yes: bool,
    /// No colour (also: NO_COLOR)
    #[arg(long, global = true)]
    pub no_color: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runbook 6.1-6.2: the API's /health, the [checks] on the host and every service, at once
    Health(HealthArgs),
    /// Runbook 6.2: each service's state, health, restarts, uptime and image; the checkout
    Status,
    /// Runbook 6.3: service logs, streamed live
    Logs(LogsArgs),
    /// Runbook 6.4: docker stats, disk and memory as one report
    Stats,
    /// Runbook 2.1-2.2: deploy a ref (default: the branch head), health-gated, rolled back on failure
    Deploy(DeployArgs),
    /// Runbook 3.2-3.3: return to the previously deployed release (or --to REF)
    Rollback(RollbackArgs),
    /// Runbook 2.3: the pre-deployment checklist on the local checkout (also run by deploy)
    Preflight(PreflightArgs),
    /// Runbook 5: database dumps and .env copies that count only when complete
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Runbook 5.3: restore a database dump safely (into a new database, swapped in by rename)
    #[command(subcommand)]
    Restore(RestoreCommand),
    /// Runbook 7.4: .env on the host; values masked; changes recreate the services that read them
    #[command(subcommand)]
    Env(EnvCommand),
    /// Runbook 8.1: a new value for a secret, everywhere it is used (a PostgreSQL role's too)
    Rotate(RotateArgs),
    /// Runbook 8.2: the SSH keys that may log in to the host
    #[command(subcommand)]
    Access(AccessCommand),
    /// Runbook 8.3: system packages (apt) and the stack's images, health-gated
    #[command(subcommand)]
    Update(UpdateCommand),
    /// Runbook 9.2: compose restart (keeps each container's configuration; .env changes need `env set`)
    Restart { services: Vec<String> },
    /// Appendix A: compose up -d
    Up { services: Vec<String> },
    /// Appendix A: compose down (asks first; volumes are kept)
    Down,
    /// Runbook 9.2: down, then up -d --build (asks first)
    Rebuild,
    /// Run a command in a service's container; stdin and stdout passed through
    Exec {
        service: String,
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Runbook 9.1: disk usage, Docker's own accounting and the largest container logs
    Disk,
    /// Runbook 9.1: docker system prune -af (asks first), keeping the last releases' images
    Prune,
    /// Runbook 4.2: collect what an investigation needs
    #[command(subcommand)]
    Incident(IncidentCommand),
    /// Runbook 3: the deployed release history on the host, newest first
    Releases,
    /// The host lock: who holds it, and releasing a stale one
    #[command(subcommand)]
    Lock(LockCommand),
    /// Prepare a fresh host once (through `sudo`): the shared state and backup dirs, the
    /// login's group, the checkout shared with the group; checks Docker, compose v2, git access
    Setup,
    /// Every fact the changing commands rely on, checked on the host read-only, as one table
    Doctor,
    /// Validate the config and print it resolved for the target
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    Man,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Tag, branch or commit to deploy [default: the head of the target's branch on origin]
    #[arg(long, value_name = "REF")]
    pub r#ref: Option<String>,
    /// Skip the preflight checks (needs --reason, written to the audit log)
    #[arg(long, requires = "reason")]
    pub skip_preflight: bool,
    /// Why preflight was skipped
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Rebuild even when the commit already runs
    #[arg(long)]
    pub force: bool,
    /// The local checkout preflight checks [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Runbook 5.2: pg_dump inside the postgres service, atomic, with a manifest written last
    Db {
        /// Also copy it to local_dir on this machine, checking its sha256
        #[arg(long)]
        download: bool,
        /// custom (pg_restore) or sql (plain, as the runbook's own command writes)
        #[arg(long, value_enum, default_value_t = BackupFormat::Custom)]
        format: BackupFormat,
    },
    /// Runbook 5.4: the buckets mirrored into a dated snapshot under local_dir (off the host)
    Minio,
    /// Runbook 5.1: a copy of .env (mode 0600) when it changed; kept indefinitely
    Env,
    /// Backups on the host and on this machine, newest first
    List,
    /// Checksum, a full read, and a restore into a scratch database compared with the manifest
    Verify {
        /// A backup name from `ctops backup list`, or `latest`
        #[arg(default_value = "latest")]
        name: String,
    },
    /// Remove database backups older than keep_days (never the newest); --dry-run lists them
    Prune,
    /// For cron: db, minio, env, then prune after a successful backup; silent on success
    All,
}

#[derive(Debug, Subcommand)]
pub enum RestoreCommand {
    /// Restore NAME (or the newest backup) over the database; asks for the database's name
    Db {
        /// A backup name from `ctops backup list`, or `latest`
        name: String,
        /// Upgrade the restored database to the running code's migration head
        #[arg(long)]
        migrate: bool,
        /// Restore a dump the runbook's own command made (db_YYYYMMDD.sql, no manifest): only
        /// if it ends with pg_dump's completion line and has no CRLF line endings
        #[arg(long)]
        unverified: bool,
    },
    /// The databases earlier restores kept (`<db>_before_…`, `_failed_…`, `_restore_…`),
    /// with their sizes
    ListKept,
    /// Drop one database a restore kept (asks for its name; only `_before_`, `_failed_` and
    /// `_restore_` copies of the configured database)
    DropKept {
        /// A name from `ctops restore list-kept`
        name: String,
    },
    /// Put back a copy of .env kept by `backup env` (the current one is copied first)
    Env {
        /// A name from `ctops backup list` (env-...), or `latest`
        name: String,
    },
    /// Make the buckets exactly as in a snapshot (the current state is snapshotted first)
    Minio {
        /// A date (2026-11-26: the end of that UTC day), a UTC time, or a snapshot name
        #[arg(long, value_name = "DATE")]
        as_of: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Authorized keys: type, fingerprint, comment
    List,
    /// Authorize a public key (validated; adding it twice adds it once)
    Add {
        #[arg(value_name = "PUBKEY_FILE")]
        pubkey_file: PathBuf,
    },
    /// Remove keys by fingerprint (SHA256:...) or comment; never the one in use or the last
    Remove {
        #[arg(value_name = "FINGERPRINT|COMMENT")]
        key: String,
    },
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The .env key, e.g. POSTGRES_PASSWORD
    pub secret: String,
    /// Generate the new value (alphanumeric)
    #[arg(long, conflicts_with = "from_stdin")]
    pub generate: bool,
    /// Read the new value from stdin (one line)
    #[arg(long)]
    pub from_stdin: bool,
    /// Length of a generated value
    #[arg(long, default_value_t = 32, value_name = "N", value_parser = clap::value_parser!(u16).range(16..=128))]
    pub length: u16,
}

#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// apt-get update and a non-interactive upgrade (asks first; says when a reboot is needed)
    System,
    /// Pull the services' images, rebuild the built ones on fresh bases, recreate, health gate
    Images,
}

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// Logs, state, stats, disk, memory, OOM kills, releases and the audit log, secrets masked
    Snapshot {
        /// Where the timestamped folder goes [default: the current directory]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Every key, values masked
    List,
    /// One value, printed on stdout (only when asked for by name)
    Get { key: String },
    /// Set keys; copy first, atomic write, recreate, health gate, undone on failure
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        assignments: Vec<String>,
        /// Services to recreate [default: from [secrets], else those whose config changed]
        #[arg(long, value_delimiter = ',', value_name = "SVC,...")]
        restart: Vec<String>,
    },
    /// Remove a key, then as `set`
    Unset {
        key: String,
        #[arg(long, value_delimiter = ',', value_name = "SVC,...")]
        restart: Vec<String>,
    },
    /// Keys added, removed and changed since a backup copy (values not shown)
    Diff {
        /// A name from `ctops backup list` (env-...), or `latest`
        #[arg(default_value = "latest")]
        backup: String,
    },
    /// $EDITOR on a private local copy; validated, then applied as `set`
    Edit {
        #[arg(long, value_delimiter = ',', value_name = "SVC,...")]
        restart: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackupFormat {
    Custom,
    Sql,
}

#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// The ref deploy would deploy [default: the head of the target's branch on origin]
    #[arg(long, value_name = "REF")]
    pub r#ref: Option<String>,
    /// The local checkout [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Tag or commit to return to [default: the previously deployed release]
    #[arg(long, value_name = "REF", conflicts_with = "steps")]
    pub to: Option<String>,
    /// Go this many deployed releases back
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub steps: usize,
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Who holds the host lock, since when, and whether its lease lapsed
    Status,
    /// Release a lock whose lease lapsed (asks first)
    Release,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config and print the resolved target
    Check,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Repeat every INTERVAL until Ctrl-C (NDJSON with --json)
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "5s")]
    pub watch: Option<HumanDuration>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Services to show [default: all]
    pub services: Vec<String>,
    /// Follow new lines until Ctrl-C
    #[arg(short, long)]
    pub follow: bool,
    /// Lines from the end of each service's log
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub tail: u64,
    /// Only lines newer than DUR (`10m`, `2h`) or an RFC 3339 time
    #[arg(long, value_name = "DUR")]
    pub since: Option<String>,
}

impl Command {
    /// The name used in `--json` documents.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Health(_) => "health",
            Command::Status => "status",
            Command::Logs(_) => "logs",
            Command::Stats => "stats",
            Command::Deploy(_) => "deploy",
            Command::Rollback(_) => "rollback",
            Command::Releases => "releases",
            Command::Rotate(_) => "rotate",
            Command::Access(AccessCommand::List) => "access list",
            Command::Access(AccessCommand::Add { .. }) => "access add",
            Command::Access(AccessCommand::Remove { .. }) => "access remove",
            Command::Restart { .. } => "restart",
            Command::Up { .. } => "up",
            Command::Down => "down",
            Command::Rebuild => "rebuild",
            Command::Exec { .. } => "exec",
            Command::Disk => "disk",
            Command::Prune => "prune",
            Command::Update(UpdateCommand::System) => "update system",
            Command::Update(UpdateCommand::Images) => "update images",
            Command::Incident(IncidentCommand::Snapshot { .. }) => "incident snapshot",
            Command::Preflight(_) => "preflight",
            Command::Backup(BackupCommand::Db { .. }) => "backup db",
            Command::Backup(BackupCommand::Env) => "backup env",
            Command::Backup(BackupCommand::Minio) => "backup minio",
            Command::Backup(BackupCommand::List) => "backup list",
            Command::Backup(BackupCommand::Verify { .. }) => "backup verify",
            Command::Backup(BackupCommand::Prune) => "backup prune",
            Command::Backup(BackupCommand::All) => "backup all",
            Command::Restore(RestoreCommand::Db { .. }) => "restore db",
            Command::Restore(RestoreCommand::Env { .. }) => "restore env",
            Command::Restore(RestoreCommand::Minio { .. }) => "restore minio",
            Command::Restore(RestoreCommand::ListKept) => "restore list-kept",
            Command::Restore(RestoreCommand::DropKept { .. }) => "restore drop-kept",
            Command::Env(EnvCommand::List) => "env list",
            Command::Env(EnvCommand::Get { .. }) => "env get",
            Command::Env(EnvCommand::Set { .. }) => "env set",
            Command::Env(EnvCommand::Unset { .. }) => "env unset",
            Command::Env(EnvCommand::Diff { .. }) => "env diff",
            Command::Env(EnvCommand::Edit { .. }) => "env edit",
            Command::Lock(LockCommand::Status) => "lock status",
            Command::Lock(LockCommand::Release) => "lock release",
            Command::Setup => "setup",
            Command::Config(ConfigCommand::Check) => "config check",
            Command::Doctor => "doctor",
            Command::Completions { .. } => "completions",
            Command::Man => "man",
        }
    }

    /// Commands that handle Ctrl-C themselves (finish the step, roll back, then exit 130).
    pub fn handles_interrupts(&self) -> bool {
        matches!(
            self,
            Command::Deploy(_)
                | Command::Rollback(_)
                | Command::Restore(_)
                | Command::Rotate(_)
                // These hold the host lock from here and release it on Ctrl-C themselves.
                | Command::Restart { .. }
                | Command::Up { .. }
                | Command::Down
                | Command::Rebuild
                | Command::Prune
                | Command::Update(_)
                | Command::Access(AccessCommand::Add { .. } | AccessCommand::Remove { .. })
                | Command::Env(
                    EnvCommand::Set { .. } | EnvCommand::Unset { .. } | EnvCommand::Edit { .. }
                )
        )
    }

    /// Commands that need the facts the config may leave to the stack (the database
    /// service, its user and database, the writers, the migrate service): `discover`
    /// reads them first.
    pub fn needs_stack_facts(&self) -> bool {
        matches!(
            self,
            Command::Deploy(_)
                | Command::Rollback(_)
                | Command::Preflight(_)
                | Command::Rotate(_)
                | Command::Restore(
                    RestoreCommand::Db { .. }
                        | RestoreCommand::ListKept
                        | RestoreCommand::DropKept { .. }
                )
                | Command::Backup(
                    BackupCommand::Db { .. } | BackupCommand::All | BackupCommand::Verify { .. }
                )
        )
    }

    /// Commands that check the facts they rely on (`crate::hostfacts::before_change`) before
    /// their first change.
    pub fn checks_facts_first(&self) -> bool {
        matches!(
            self,
            Command::Deploy(_)
                | Command::Rollback(_)
                | Command::Restore(
                    RestoreCommand::Db { .. }
                        | RestoreCommand::Env { .. }
                        | RestoreCommand::Minio { .. }
                        | RestoreCommand::DropKept { .. }
                )
                | Command::Rotate(_)
                | Command::Env(
                    EnvCommand::Set { .. } | EnvCommand::Unset { .. } | EnvCommand::Edit { .. }
                )
        )
    }

    /// The git ref the command names (`deploy --ref`, `rollback --to`, `preflight --ref`):
    /// checked before connecting, since it reaches git on the host.
    pub fn reference(&self) -> Option<&str> {
        match self {
            Command::Deploy(a) => a.r#ref.as_deref(),
            Command::Rollback(a) => a.to.as_deref(),
            Command::Preflight(a) => a.r#ref.as_deref(),
            _ => None,
        }
    }

    /// Commands that run until Ctrl-C, for which Ctrl-C is the normal way to end (exit 0).
    pub fn runs_until_interrupted(&self) -> bool {
        matches!(
            self,
            Command::Logs(LogsArgs { follow: true, .. })
                | Command::Health(HealthArgs { watch: Some(_) })
        )
    }
}

impl clap::builder::ValueParserFactory for HumanDuration {
    type Parser = clap::builder::ValueParser;
    fn value_parser() -> Self::Parser {
        clap::builder::ValueParser::new(|s: &str| HumanDuration::parse(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn logs_defaults_to_a_tail_of_100() {
        let cli = Cli::try_parse_from(["ctops", "logs", "api", "bot", "-f"]).unwrap();
        let Command::Logs(args) = cli.command else {
            panic!()
        };
        assert_eq!(
            (args.tail, args.follow, args.services.len()),
            (100, true, 2)
        );
    }

    #[test]
    fn health_watch_takes_an_optional_interval() {
        let cli = Cli::try_parse_from(["ctops", "health", "--watch"]).unwrap();
        let Command::Health(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.watch.unwrap().0.as_secs(), 5);
        let cli = Cli::try_parse_from(["ctops", "health", "--watch", "30s", "--json"]).unwrap();
        let Command::Health(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.watch.unwrap().0.as_secs(), 30);
        assert!(cli.global.json);
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli =
            Cli::try_parse_from(["ctops", "status", "--target", "x", "-vv", "--json"]).unwrap();
        assert_eq!(
            (cli.global.target.as_deref(), cli.global.verbose),
            (Some("x"), 2)
        );
        assert!(Cli::try_parse_from(["ctops", "status", "-q", "-v"]).is_err());
    }
}
