//! ctops: parse, load the config, dispatch, map errors to exit codes. Nothing else.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use ctops::cli::{Cli, Command, ConfigCommand, IncidentCommand, LockCommand, UpdateCommand};
use ctops::context::Ctx;
use ctops::error::{self, Exit};
use ctops::ops::service::Verb;
use ctops::output::Output;
use ctops::remote::dial;
use ctops::{config, ops};

fn main() -> ExitCode {
    // ssh runs this binary as its ProxyCommand: not a user command, so not in the CLI.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == dial::SUBCOMMAND)
    {
        return ExitCode::from(dial::main());
    }
    let cli = Cli::parse();
    let g = &cli.global;
    let out = Output::new(g.json, g.quiet, g.verbose, g.no_color);
    init_tracing(g.verbose);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let exit = runtime.block_on(run(cli, &out));
    // Don't wait for tasks still blocked on a closed pipe or a dead link.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    ExitCode::from(exit.code())
}

async fn run(cli: Cli, out: &Output) -> Exit {
    let name = cli.command.name();
    let mut target = cli.global.target.clone();
    match execute(cli, out, &mut target).await {
        Ok(exit) => exit,
        Err(err) if error::is_broken_pipe(&err) => Exit::Ok,
        Err(err) => report(&err, out, name, target.as_deref()),
    }
}

async fn execute(cli: Cli, out: &Output, target_name: &mut Option<String>) -> anyhow::Result<Exit> {
    let name = cli.command.name();
    match &cli.command {
        // Rendered into memory first: clap_complete panics when its writer fails (a closed
        // pipe, `ctops completions bash | head`); `out.print` ends quietly instead.
        Command::Completions { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "ctops", &mut text);
            out.print(&String::from_utf8_lossy(&text))?;
            return Ok(Exit::Ok);
        }
        Command::Man => {
            let mut text = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut text)?;
            out.print(&String::from_utf8_lossy(&text))?;
            return Ok(Exit::Ok);
        }
        _ => {}
    }
    let (path, origin) = config::discover(cli.global.config.as_deref())?;
    let loaded = config::load(&path, origin, cli.global.target.as_deref())?;
    *target_name = Some(loaded.target.name.clone());
    for warning in &loaded.warnings {
        out.warn(warning);
    }
    if let Command::Config(ConfigCommand::Check) = cli.command {
        return ops::config_check::run(&loaded, out);
    }
    let mut ctx = Ctx::new(
        loaded.target,
        out.clone(),
        cli.global.dry_run,
        cli.global.yes,
    );
    // A hostile ref (`--upload-pack=...`) is refused before anything is read from the host.
    if let Some(reference) = cli.command.reference() {
        ctops::deployed::validate_ref(reference)?;
    }
    // So are backup names, `.env` keys and assignments: nothing is asked of the host first.
    ops::check_input(&cli.command)?;
    if cli.command.needs_stack_facts() {
        ctx.discover_stack().await?;
    }
    if cli.command.checks_facts_first() {
        ctops::hostfacts::before_change(&ctx, name).await?;
    }
    let until_interrupted = cli.command.runs_until_interrupted();
    let result = if cli.command.handles_interrupts() {
        dispatch(&ctx, cli.command).await
    } else {
        tokio::select! {
            biased;
            result = dispatch(&ctx, cli.command) => result,
            _ = ctops::signals::interrupted() => Ok(if until_interrupted { Exit::Ok } else { Exit::Interrupted }),
        }
    };
    ctx.close().await;
    result
}

async fn dispatch(ctx: &Ctx, command: Command) -> anyhow::Result<Exit> {
    match command {
        Command::Health(args) => ops::health::run(ctx, &args).await,
        Command::Status => ops::status::run(ctx).await,
        Command::Logs(args) => ops::logs::run(ctx, &args).await,
        Command::Stats => ops::stats::run(ctx).await,
        Command::Deploy(args) => ops::deploy::run(ctx, &args).await,
        Command::Rollback(args) => ops::rollback::run(ctx, &args).await,
        Command::Releases => ops::releases::run(ctx).await,
        Command::Env(command) => ops::env::run(ctx, &command).await,
        Command::Rotate(args) => ops::rotate::run(ctx, &args).await,
        Command::Access(command) => ops::access::run(ctx, &command).await,
        Command::Restart { services } => ops::service::run(ctx, Verb::Restart(services)).await,
        Command::Up { services } => ops::service::run(ctx, Verb::Up(services)).await,
        Command::Down => ops::service::run(ctx, Verb::Down).await,
        Command::Rebuild => ops::service::run(ctx, Verb::Rebuild).await,
        Command::Exec {
            service,
            command,
            tty,
            ..
        } => ops::service::exec(ctx, &service, &command, tty).await,
        Command::Disk => ops::service::disk(ctx).await,
        Command::Prune => ops::service::prune(ctx).await,
        Command::Update(UpdateCommand::System) => ops::update::system(ctx).await,
        Command::Update(UpdateCommand::Images) => ops::update::images(ctx).await,
        Command::Incident(IncidentCommand::Snapshot { out }) => {
            ops::incident::snapshot(ctx, out.as_deref()).await
        }
        Command::Preflight(args) => ops::preflight::run(ctx, &args).await,
        Command::Backup(command) => ops::backup::run(ctx, &command).await,
        Command::Restore(command) => ops::restore::run(ctx, &command).await,
        Command::Lock(LockCommand::Status) => ops::lock::status(ctx).await,
        Command::Doctor => ops::doctor::run(ctx).await,
        Command::Lock(LockCommand::Release) => ops::lock::release(ctx).await,
        Command::Setup => ops::setup::run(ctx).await,
        Command::Config(_) | Command::Completions { .. } | Command::Man => {
            unreachable!("handled before connecting")
        }
    }
}

/// Prints an error (`error:` and `help:` lines, or a JSON document) and picks the exit code.
fn report(err: &anyhow::Error, out: &Output, command: &str, target: Option<&str>) -> Exit {
    let exit = error::exit_code_of(err);
    let state = error::state_of(err);
    if out.json {
        let doc = serde_json::json!({
            "command": command,
            "target": target,
            "ok": false,
            "error": { "kind": exit.kind(), "message": format!("{err:#}"), "help": error::help_of(err) },
            "state": state,
        });
        let _ = out.json_doc(&doc);
    }
    ctops::say!("error: {err:#}");
    // Whenever the host may differ from before, say what is where.
    if state != "unchanged" {
        ctops::say!("state: {state}");
    }
    if let Some(help) = error::help_of(err) {
        ctops::say!("help: {help}");
    }
    exit
}

fn init_tracing(verbose: u8) {
    let level = if verbose >= 2 {
        "ctops=debug"
    } else {
        "ctops=warn"
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CTOPS_LOG").unwrap_or_else(|_| level.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
