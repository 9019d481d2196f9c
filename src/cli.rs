//! The command line: clap derive definitions only. Validation that needs the config or the
//! host happens in the operations.
//!
//! Naming: a release is `--ref REF` (deploy, preflight) or `--to REF` (rollback); a backup is
//! `NAME|latest`. Read-only commands default to `latest`; a command that overwrites
//! (`restore db|env`) needs the name spelled out: an omitted argument never chooses what
//! gets overwritten.

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

/// The heading global flags are listed under in every command's help.
const GLOBAL: &str = "Global options";

/// The CalmTrader runbook as safe, fast, scriptable commands, run over one SSH connection.
#[derive(Debug, Parser)]
#[command(
    name = "ctops",
    version,
    after_long_help = EXIT_CODES,
    max_term_width = 100,
    after_help = "Examples:
  ctops health                      is everything up?
  ctops deploy                      the branch head, preflight first, rolled back on failure
  ctops --target staging status     another target from the config
  ctops backup list --json          machine-readable output"
)]
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
    #[arg(long, global = true, env = "CTOPS_CONFIG", value_name = "PATH", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// Target from the config [default: the config's default_target]
    #[arg(long, global = true, env = "CTOPS_TARGET", value_name = "NAME", help_heading = GLOBAL)]
    pub target: Option<String>,
    /// Print the plan and change nothing on the host
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub dry_run: bool,
    /// One JSON document on stdout (NDJSON for streams)
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    /// Print every remote command exactly as sent (-vv: debug logs)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet", help_heading = GLOBAL)]
    pub verbose: u8,
    /// Print only errors and the data asked for
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub quiet: bool,
    /// Answer yes to confirmations (required without a TTY)
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub yes: bool,
    /// No colour (also: NO_COLOR)
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub no_color: bool,
}

const HEALTH_HELP: &str = "\
Examples:
  ctops health                 one report; the exit code says how it went
  ctops health --watch         again every 5s until Ctrl-C
  ctops health --watch 30s --json | jq .ok

Exit codes:
  0  everything up
  1  health_url did not answer 2xx
  2  usage or configuration error
  3  the host could not be reached
  5  degraded: the API answers but a service or a [checks] entry failed";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runbook 6.1-6.2: the API's /health, the [checks] on the host and every service, at once
    #[command(after_help = HEALTH_HELP)]
    Health(HealthArgs),
    /// Runbook 6.2: each service's state, health, restarts, uptime and image; the checkout
    #[command(after_help = "Examples:\n  ctops status\n  ctops status --json")]
    Status,
    /// Runbook 6.3: service logs, streamed live
    #[command(
        after_help = "Examples:\n  ctops logs api -f\n  ctops logs bot --since 10m\n  ctops logs --tail 20 api bot"
    )]
    Logs(LogsArgs),
    /// Runbook 6.4: docker stats, disk and memory as one report
    #[command(after_help = "Examples:\n  ctops stats\n  ctops stats --json")]
    Stats,
    /// Runbook 2.1-2.2: deploy a ref (default: the branch head), health-gated, rolled back on failure
    ///
    /// Preflight (runbook 2.3) runs first on the local checkout (the current directory, or
    /// --repo DIR); re-deploying the running commit skips its version and changelog checks.
    #[command(
        after_help = "Examples:\n  ctops deploy                          the branch head, from the app's checkout\n  ctops deploy --ref v1.27.0 --repo ~/src/trader-psy\n  ctops deploy --force                  rebuild the running commit\n  ctops deploy --skip-preflight --reason \"hotfix, tests ran in CI\""
    )]
    Deploy(DeployArgs),
    /// Runbook 3.2-3.3: return to the previously deployed release (or --to REF)
    ///
    /// Without --to, releases a rollback already left are skipped: rolling back twice goes
    /// two releases back.
    #[command(
        after_help = "Examples:\n  ctops rollback\n  ctops rollback --steps 2\n  ctops rollback --to v1.26.0"
    )]
    Rollback(RollbackArgs),
    /// Runbook 2.3: the pre-deployment checklist on the local checkout (also run by deploy)
    #[command(
        after_help = "Examples:\n  ctops preflight                       from the app's checkout\n  ctops preflight --repo ~/src/trader-psy --ref v1.27.0"
    )]
    Preflight(PreflightArgs),
    /// Runbook 5: database dumps, MinIO snapshots and .env copies that count only when complete
    #[command(
        subcommand,
        after_help = "Examples:\n  ctops backup db\n  ctops backup list\n  ctops backup verify latest"
    )]
    Backup(BackupCommand),
    /// Runbook 5.3: put back a database dump, a .env copy or a MinIO snapshot, safely
    #[command(
        subcommand,
        after_help = "Examples:\n  ctops restore db db-20261126T031500Z.dump\n  ctops restore env latest\n  ctops restore minio --as-of 2026-11-26"
    )]
    Restore(RestoreCommand),
    /// Runbook 7.4: .env on the host; values masked; changes recreate the services that read them
    #[command(
        subcommand,
        after_help = "Examples:\n  ctops env list\n  ctops env set LOG_LEVEL=debug\n  ctops env diff"
    )]
    Env(EnvCommand),
    /// Runbook 8.1: a new value for a secret, everywhere it is used (a PostgreSQL role's too)
    #[command(
        after_help = "Examples:\n  ctops rotate POSTGRES_PASSWORD --generate\n  ctops rotate TELEGRAM_BOT_TOKEN                 asked for, without echo\n  pass show bot-token | ctops rotate TELEGRAM_BOT_TOKEN --from-stdin --yes"
    )]
    Rotate(RotateArgs),
    /// Runbook 8.2: the SSH keys that may log in to the host (the login user's authorized_keys)
    #[command(
        subcommand,
        after_help = "Examples:\n  ctops access list\n  ctops access add ~/alice.pub\n  ctops access remove alice@laptop"
    )]
    Access(AccessCommand),
    /// Runbook 8.3: system packages (apt) and the stack's images, health-gated
    #[command(
        subcommand,
        after_help = "Examples:\n  ctops update system\n  ctops update images"
    )]
    Update(UpdateCommand),
    /// Runbook 9.2: compose restart (keeps each container's configuration; .env changes need `env set`)
    #[command(
        after_help = "Examples:\n  ctops restart bot\n  ctops restart            every service"
    )]
    Restart {
        /// Services to restart [default: all]
        services: Vec<String>,
    },
    /// Appendix A: compose up -d
    #[command(after_help = "Examples:\n  ctops up\n  ctops up bot")]
    Up {
        /// Services to start [default: all]
        services: Vec<String>,
    },
    /// Appendix A: compose down (asks first; volumes are kept)
    #[command(after_help = "Examples:\n  ctops down\n  ctops down --yes")]
    Down,
    /// Runbook 9.2: down, then up -d --build (asks first)
    #[command(after_help = "Examples:\n  ctops rebuild")]
    Rebuild,
    /// Run a command in a service's container; stdin and stdout passed through
    ///
    /// Without -it, no TTY: for scripts and pipes. With -it, an interactive session with a
    /// terminal (a psql prompt, a shell).
    #[command(
        after_help = "Examples:\n  ctops exec api -- alembic current\n  ctops exec postgres -it -- psql -U trader trader_psy\n  echo 'select 1' | ctops exec postgres -- psql -U trader trader_psy"
    )]
    Exec {
        /// The compose service whose container runs the command
        service: String,
        /// Accepted so that `-it` reads as in docker (piped stdin always goes through)
        #[arg(short = 'i', long)]
        interactive: bool,
        /// A terminal (PTY) for the command, on the same SSH connection: `-it` for a psql
        /// prompt or a shell
        #[arg(short = 't', long)]
        tty: bool,
        /// The command and its arguments, after `--`
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Runbook 9.1: disk usage, Docker's own accounting and the largest container logs
    #[command(after_help = "Examples:\n  ctops disk\n  ctops disk --json")]
    Disk,
    /// Runbook 9.1: docker system prune -af (asks first), keeping the last releases' images
    #[command(after_help = "Examples:\n  ctops prune --dry-run\n  ctops prune")]
    Prune,
    /// Runbook 4.2: collect what an investigation needs
    #[command(
        subcommand,
        after_help = "Examples:\n  ctops incident snapshot --out /tmp"
    )]
    Incident(IncidentCommand),
    /// Runbook 3: the deployed release history on the host, newest first
    #[command(after_help = "Examples:\n  ctops releases\n  ctops releases --json")]
    Releases,
    /// The host lock: who holds it, and releasing a stale one
    #[command(
        subcommand,
        after_help = "Examples:\n  ctops lock status\n  ctops lock release"
    )]
    Lock(LockCommand),
    /// Prepare a fresh host once (through `sudo`): the shared state and backup dirs, the
    /// login's group, the checkout shared with the group; checks Docker, compose v2, git access
    #[command(
        after_help = "Examples:\n  ctops setup --dry-run\n  ctops setup\n  ctops doctor              then check every fact"
    )]
    Setup,
    /// Every fact the changing commands rely on, checked on the host read-only, as one table
    #[command(after_help = "Examples:\n  ctops doctor\n  ctops --target staging doctor --json")]
    Doctor,
    /// Validate the config and print it resolved for the target
    #[command(
        subcommand,
        after_help = "Examples:\n  ctops config check\n  ctops --target staging config check"
    )]
    Config(ConfigCommand),
    /// Print shell completions
    #[command(
        after_help = "Examples:\n  ctops completions bash > ~/.local/share/bash-completion/completions/ctops\n  ctops completions zsh > ~/.zfunc/_ctops"
    )]
    Completions {
        /// The shell to write completions for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    #[command(
        after_help = "Examples:\n  ctops man | man -l -\n  ctops man > /usr/local/share/man/man1/ctops.1"
    )]
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
    /// The application's local checkout, where preflight reads HEAD, VERSION, CHANGELOG.md
    /// and the commits [default: the current directory: run deploy from the checkout]
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Runbook 5.2: pg_dump inside the postgres service, atomic, with a manifest written last
    #[command(
        after_help = "Examples:\n  ctops backup db\n  ctops backup db --download --format sql"
    )]
    Db {
        /// Also copy it to local_dir on this machine, checking its sha256
        #[arg(long)]
        download: bool,
        /// custom (pg_restore) or sql (plain, as the runbook's own command writes)
        #[arg(long, value_enum, default_value_t = BackupFormat::Custom)]
        format: BackupFormat,
    },
    /// Runbook 5.4: the buckets mirrored into a dated snapshot under local_dir (off the host)
    #[command(after_help = "Examples:\n  ctops backup minio")]
    Minio,
    /// Runbook 5.1: a copy of .env (mode 0600) when it changed; kept indefinitely
    #[command(after_help = "Examples:\n  ctops backup env")]
    Env,
    /// Backups on the host and on this machine (dumps, .env copies, MinIO snapshots), newest first
    #[command(after_help = "Examples:\n  ctops backup list\n  ctops backup list --json")]
    List,
    /// Checksum, a full read, and a restore into a scratch database compared with the manifest
    #[command(
        after_help = "Examples:\n  ctops backup verify\n  ctops backup verify db-20261126T031500Z.dump"
    )]
    Verify {
        /// A backup name from `ctops backup list`, or `latest`
        #[arg(default_value = "latest", value_name = "NAME|latest")]
        name: String,
    },
    /// Remove database backups older than backup.db.keep_days (never the newest) and MinIO
    /// snapshots older than backup.minio.keep_days; --dry-run lists them
    #[command(after_help = "Examples:\n  ctops backup prune --dry-run\n  ctops backup prune")]
    Prune,
    /// For cron: db, minio, env, then prune after a successful backup; silent on success
    #[command(after_help = "Examples:\n  ctops backup all -q        in a crontab")]
    All,
}

#[derive(Debug, Subcommand)]
pub enum RestoreCommand {
    /// Restore the backup NAME over the database; asks for the database's name
    ///
    /// Loaded into a new database, swapped in by rename; the old one is kept. NAME is
    /// required: an omitted argument never chooses what gets overwritten.
    #[command(
        after_help = "Examples:\n  ctops backup list\n  ctops restore db db-20261126T031500Z.dump\n  ctops restore db latest --migrate\n  ctops restore db db_20261126.sql --unverified      a dump the runbook made"
    )]
    Db {
        /// A backup name from `ctops backup list`, or `latest` (spelled out)
        #[arg(value_name = "NAME|latest")]
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
    #[command(after_help = "Examples:\n  ctops restore list-kept")]
    ListKept,
    /// Drop one database a restore kept (asks for its name; only `_before_`, `_failed_` and
    /// `_restore_` copies of the configured database)
    #[command(
        after_help = "Examples:\n  ctops restore list-kept\n  ctops restore drop-kept trader_psy_before_20261126T031500Z"
    )]
    DropKept {
        /// A name from `ctops restore list-kept`
        name: String,
    },
    /// Put back a copy of .env kept by `backup env` (the current one is copied first)
    #[command(
        after_help = "Examples:\n  ctops restore env latest\n  ctops restore env env-20261126T031500Z"
    )]
    Env {
        /// A name from `ctops backup list` (env-...), or `latest` (spelled out)
        #[arg(value_name = "NAME|latest")]
        name: String,
    },
    /// Make the buckets exactly as in a snapshot (the current state is snapshotted first)
    #[command(
        after_help = "Examples:\n  ctops restore minio --as-of 2026-11-26\n  ctops restore minio"
    )]
    Minio {
        /// A date (2026-11-26: the end of that UTC day), a UTC time, or a snapshot name
        /// [default: the newest snapshot]
        #[arg(long, value_name = "DATE")]
        as_of: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Authorized keys: type, fingerprint, comment
    #[command(after_help = "Examples:\n  ctops access list")]
    List,
    /// Authorize a public key (validated; adding it twice adds it once)
    #[command(after_help = "Examples:\n  ctops access add ~/alice.pub")]
    Add {
        /// A file holding one OpenSSH public key (ssh-ed25519 AAAA... comment)
        #[arg(value_name = "PUBKEY_FILE")]
        pubkey_file: PathBuf,
    },
    /// Remove keys by fingerprint (SHA256:...) or comment; never the one in use or the last
    #[command(
        after_help = "Examples:\n  ctops access remove alice@laptop\n  ctops access remove SHA256:abc..."
    )]
    Remove {
        /// A fingerprint as `access list` prints it, or a key's comment
        #[arg(value_name = "FINGERPRINT|COMMENT")]
        key: String,
    },
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The .env key, e.g. POSTGRES_PASSWORD
    pub secret: String,
    /// Generate the new value (alphanumeric); refused for a `revoked_on_rotate` secret,
    /// whose value comes from its issuer
    #[arg(long, conflicts_with = "from_stdin")]
    pub generate: bool,
    /// Read the new value from stdin (one line); with no TTY to confirm on, add --yes
    #[arg(long)]
    pub from_stdin: bool,
    /// Length of a generated value, 16 to 128
    #[arg(long, default_value_t = 32, value_name = "N", value_parser = clap::value_parser!(u16).range(16..=128))]
    pub length: u16,
}

#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// apt-get update and a non-interactive upgrade (asks first; says when a reboot is needed)
    #[command(after_help = "Examples:\n  ctops update system")]
    System,
    /// Pull the services' images, rebuild the built ones on fresh bases, recreate, health gate
    #[command(after_help = "Examples:\n  ctops update images")]
    Images,
}

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// Logs, state, stats, disk, memory, OOM kills, releases and the audit log, secrets masked
    #[command(
        after_help = "Examples:\n  ctops incident snapshot\n  ctops incident snapshot --out /tmp"
    )]
    Snapshot {
        /// Where the timestamped folder goes [default: the current directory]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Every key, values masked
    #[command(after_help = "Examples:\n  ctops env list")]
    List,
    /// One value, printed on stdout (only when asked for by name)
    #[command(after_help = "Examples:\n  ctops env get LOG_LEVEL")]
    Get {
        /// The .env key whose value to print
        key: String,
    },
    /// Set keys; copy first, atomic write, recreate, health gate, undone on failure
    #[command(
        after_help = "Examples:\n  ctops env set LOG_LEVEL=debug\n  ctops env set A=1 B=2 --restart api,bot"
    )]
    Set {
        /// One or more assignments; a value with spaces is one shell word ('K=a b')
        #[arg(required = true, value_name = "KEY=VALUE")]
        assignments: Vec<String>,
        /// Services to recreate [default: from [secrets], else those whose config changed]
        #[arg(long, value_delimiter = ',', value_name = "SVC,...")]
        restart: Vec<String>,
    },
    /// Remove keys, then as `set`
    #[command(
        after_help = "Examples:\n  ctops env unset OLD_FLAG\n  ctops env unset A B --restart api"
    )]
    Unset {
        /// The keys to remove (every one must be set)
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        /// Services to recreate [default: from [secrets], else those whose config changed]
        #[arg(long, value_delimiter = ',', value_name = "SVC,...")]
        restart: Vec<String>,
    },
    /// Keys added, removed and changed since a backup copy (values not shown)
    #[command(after_help = "Examples:\n  ctops env diff\n  ctops env diff env-20261126T031500Z")]
    Diff {
        /// A name from `ctops backup list` (env-...), or `latest`
        #[arg(default_value = "latest", value_name = "NAME|latest")]
        backup: String,
    },
    /// $EDITOR on a private local copy; validated, then applied as `set`
    #[command(after_help = "Examples:\n  EDITOR=vim ctops env edit")]
    Edit {
        /// Services to recreate [default: from [secrets], else those whose config changed]
        #[arg(long, value_delimiter = ',', value_name = "SVC,...")]
        restart: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackupFormat {
    /// pg_dump's custom format, restored with pg_restore
    Custom,
    /// Plain SQL, as the runbook's own command writes
    Sql,
}

#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// The ref deploy would deploy [default: the head of the target's branch on origin]
    #[arg(long, value_name = "REF")]
    pub r#ref: Option<String>,
    /// The application's local checkout [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Tag or commit to return to, any release [default: the previously deployed release]
    #[arg(long, value_name = "REF", conflicts_with = "steps")]
    pub to: Option<String>,
    /// Go this many deployed releases back (skipping releases a rollback left)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub steps: usize,
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Who holds the host lock, since when, and whether its lease lapsed
    #[command(after_help = "Examples:\n  ctops lock status")]
    Status,
    /// Release a lock whose lease lapsed (asks first)
    #[command(after_help = "Examples:\n  ctops lock release")]
    Release,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config and print the resolved target
    #[command(
        after_help = "Examples:\n  ctops config check\n  ctops --config ./ctops.toml config check --json"
    )]
    Check,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Repeat every INTERVAL until Ctrl-C (NDJSON with --json) [default INTERVAL: 5s]
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

    /// Every command (nested ones too) with its path, e.g. `ctops backup verify`.
    fn every_command(cmd: &clap::Command, path: &str, all: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands() {
            let path = format!("{path} {}", sub.get_name());
            all.push((path.clone(), sub.clone()));
            every_command(sub, &path, all);
        }
    }

    #[test]
    fn every_argument_has_help_and_every_command_has_examples() {
        let mut root = Cli::command();
        root.build();
        let mut all = vec![("ctops".to_string(), root.clone())];
        every_command(&root, "ctops", &mut all);
        let mut missing = Vec::new();
        for (path, cmd) in &all {
            if path.split(' ').any(|w| w == "help") {
                continue; // clap's own
            }
            if cmd.get_about().is_none() {
                missing.push(format!("{path}: no about"));
            }
            let examples = cmd
                .get_after_help()
                .is_some_and(|h| h.to_string().starts_with("Examples:\n  "));
            if !examples {
                missing.push(format!("{path}: no Examples: section"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg
                    .get_help()
                    .is_none_or(|h| h.to_string().trim().is_empty())
                {
                    missing.push(format!("{path}: argument `{id}` has no help"));
                }
                if arg.is_global_set() && arg.get_help_heading() != Some(GLOBAL) {
                    missing.push(format!("{path}: global `{id}` not under `{GLOBAL}`"));
                }
            }
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    #[test]
    fn health_help_lists_its_exit_codes_and_defaults_are_shown() {
        let mut root = Cli::command();
        let health = root
            .find_subcommand_mut("health")
            .unwrap()
            .render_help()
            .to_string();
        for code in ["Exit codes:", "0  everything up", "5  degraded", "5s"] {
            assert!(health.contains(code), "{code}: {health}");
        }
        let rotate = root
            .find_subcommand_mut("rotate")
            .unwrap()
            .render_help()
            .to_string();
        assert!(
            rotate.contains("16 to 128") && rotate.contains("[default: 32]"),
            "{rotate}"
        );
        let restore = root.find_subcommand_mut("restore").unwrap();
        let db = restore
            .find_subcommand_mut("db")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(!db.contains("or the newest"), "{db}");
    }

    #[test]
    fn env_unset_takes_several_keys_and_exec_takes_it() {
        let cli = Cli::try_parse_from(["ctops", "env", "unset", "A", "B", "--restart", "api"]);
        let Command::Env(EnvCommand::Unset { keys, restart }) = cli.unwrap().command else {
            panic!()
        };
        assert_eq!((keys.len(), restart.len()), (2, 1));
        let cli = Cli::try_parse_from(["ctops", "exec", "db", "-it", "--", "psql"]).unwrap();
        let Command::Exec {
            tty, interactive, ..
        } = cli.command
        else {
            panic!()
        };
        assert!(tty && interactive);
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
