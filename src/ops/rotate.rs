//! Runbook 8.1, `rotate SECRET`: a new value for a secret in `.env`, everywhere it is used.
//!
//! The new value is read without echo on a TTY, from stdin, or generated (alphanumeric), and
//! is never printed, logged, put on a remote command line or in a remote environment: it
//! reaches the host only inside the new `.env`, over stdin. Every `.env` value that contains
//! the old one (say inside `DATABASE_URL`, URL-encoded there) is updated.
//!
//! For a `postgres_role` secret the runbook is wrong: changing `.env` and restarting postgres
//! does not change the password of an initialised database. ctops computes the SCRAM-SHA-256
//! verifier itself and runs `ALTER ROLE ... PASSWORD '<verifier>'` (the clear text never
//! reaches the server, its log or `pg_stat_activity`), then `.env`, then recreates the
//! services, then checks over TCP that the new password works and the old one does not.
//! Any failure puts the old value back everywhere, except for a `revoked_on_rotate` secret.

use std::io::{IsTerminal, Read};

use anyhow::Result;

use super::env::{self, Change, Source};
use crate::cli::RotateArgs;
use crate::compose::exec_in_service_stdin;
use crate::context::Ctx;
use crate::envfile::{self, EnvFile};
use crate::error::{Error, Exit};
use crate::remote::RemoteCommand;
use crate::runner::Step;
use crate::scram;

pub async fn run(ctx: &Ctx, args: &RotateArgs) -> Result<Exit> {
    let t = &ctx.target;
    let key = args.secret.as_str();
    if !envfile::valid_key(key) {
        return Err(Error::usage(format!("invalid key {key:?}")).into());
    }
    let config = t.secrets.get(key).cloned().unwrap_or_default();
    let read = env::read_for_change(ctx).await?;
    let before = read.file.clone();
    let old = before.get(key).ok_or_else(|| {
        Error::usage(format!("{key} is not set in {}", env::env_path(ctx)))
            .with_help("ctops env list shows the keys")
    })?;
    let new = new_value(args)?;
    if new == old {
        return Err(Error::usage("the new value is the old one: nothing to rotate").into());
    }
    let (after, updated) = replace_everywhere(&before, &old, &new)?;
    let services = config.restart.clone();
    if !ctx.dry_run {
        ctx.confirm(&format!(
            "rotate {key} on {} (updates {}; recreates {})",
            ctx.target_label(),
            updated.join(", "),
            if services.is_empty() {
                "the services whose configuration changed".to_string()
            } else {
                services.join(", ")
            }
        ))?;
    }
    let mut change = Change::new(
        "rotate",
        format!("rotate {key} (updates {})", updated.join(", ")),
        Source::Upload(after.render().into_bytes()),
        services,
    );
    change.keep_on_failure = config.revoked_on_rotate;
    change.expect_sha256 = Some(read.sha256.clone());
    let role = config.postgres_role.clone();
    if let Some(role) = &role {
        let (set_new, new_sql) = alter_role(ctx, role, &new, "new");
        let (set_old, old_sql) = alter_role(ctx, role, &old, "old");
        change.private_files = vec![new_sql, old_sql];
        change.before_replace = vec![Step::new(
            "alter_role",
            format!("set role {role}'s password (SCRAM verifier)"),
            &[set_new],
        )
        .marks("ROLE")];
        change.undo_before_replace = vec![Step::new(
            "role_back",
            format!("set role {role}'s old password back"),
            &[set_old],
        )
        .when("ROLE")];
    }
    let exit = env::switch(ctx, change).await?;
    if exit != Exit::Ok || ctx.dry_run {
        return Ok(exit);
    }
    if let Some(role) = &role {
        if let Err(e) = check_passwords(ctx, role, &new, &old).await {
            eprintln!("error: {e}; putting the old value back");
            let mut undo = Change::new(
                "rotate",
                format!("undo rotate {key}"),
                Source::Upload(before.render().into_bytes()),
                config.restart.clone(),
            );
            // Against the file this rotation wrote: a change made since is not undone.
            undo.expect_sha256 = Some(env::sha256_hex(after.render().as_bytes()));
            let (set_old, old_sql) = alter_role(ctx, role, &old, "old");
            undo.private_files = vec![old_sql];
            undo.before_replace = vec![Step::new(
                "alter_role",
                format!("set role {role}'s old password back"),
                &[set_old],
            )];
            let undone = env::switch(ctx, undo).await?;
            return Ok(if undone == Exit::Ok {
                Exit::Failed
            } else {
                Exit::Stranded
            });
        }
        ctx.out.status(format!(
            "checked over TCP: role {role} takes the new password and refuses the old one"
        ));
    }
    Ok(Exit::Ok)
}

/// The new value, from `--generate`, `--from-stdin` or a prompt without echo.
fn new_value(args: &RotateArgs) -> Result<String, Error> {
    let value = if args.generate {
        scram::generate(usize::from(args.length))
    } else if args.from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Error::usage(format!("cannot read the new value from stdin: {e}")))?;
        text.strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text)
            .to_string()
    } else if std::io::stdin().is_terminal() {
        dialoguer::Password::new()
            .with_prompt(format!("new value for {}", args.secret))
            .with_confirmation("again", "the two entries differ")
            .interact()
            .map_err(|e| Error::usage(format!("cannot read the new value: {e}")))?
    } else {
        return Err(Error::usage(
            "no new value: pass --generate, --from-stdin, or run on a terminal to be asked",
        ));
    };
    if value.is_empty() || value.contains(['\n', '\r']) {
        return Err(Error::usage("the new value must be one non-empty line"));
    }
    Ok(value)
}

/// `.env` with every occurrence of `old` replaced (URL-encoded where it appears encoded);
/// and the keys that changed.
pub fn replace_everywhere(
    file: &EnvFile,
    old: &str,
    new: &str,
) -> Result<(EnvFile, Vec<String>), Error> {
    let encode = |v: &str| -> String {
        url::form_urlencoded::byte_serialize(v.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    let (old_enc, new_enc) = (encode(old), encode(new));
    let mut after = file.clone();
    let mut updated = Vec::new();
    for (key, value) in file.entries() {
        let mut changed = value.replace(old, new);
        if old_enc != old {
            changed = changed.replace(&old_enc, &new_enc);
        }
        if changed != value && !updated.contains(&key) {
            after
                .set(&key, &changed)
                .map_err(|e| Error::usage(format!("{key}: {e}")))?;
            updated.push(key);
        }
    }
    Ok((after, updated))
}

/// psql as the configured user in the postgres service, reading its SQL from stdin.
fn psql(ctx: &Ctx, database: &str, tuples_only: bool) -> RemoteCommand {
    let db = &ctx.target.backup.db;
    let mut argv: Vec<String> = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        .map(String::from)
        .to_vec();
    if tuples_only {
        argv.push("-At".into());
    }
    argv.extend([
        "-U".into(),
        db.user.clone().unwrap_or_else(|| "postgres".into()),
        "-d".into(),
        database.to_string(),
    ]);
    exec_in_service_stdin(
        &ctx.target,
        db.service.as_deref().unwrap_or("postgres"),
        &argv,
    )
}

const RUN_SQL: &str = include_str!("../scripts/rotate-sql.sh");

/// The command that sets `role`'s password to `password`'s SCRAM verifier, and the private
/// file (path, SQL) it reads: the verifier is uploaded 0600 under the lock (see
/// [`env::Change::private_files`]), never in the runner's script, a command line or the
/// `--dry-run` output (it is as good as the password to an offline guesser).
fn alter_role(
    ctx: &Ctx,
    role: &str,
    password: &str,
    which: &str,
) -> (RemoteCommand, (String, Vec<u8>)) {
    let sql = format!(
        "ALTER ROLE \"{}\" PASSWORD '{}';\n",
        role.replace('"', "\"\""),
        scram::verifier(password)
    );
    // One operation at a time holds the host lock: a fixed name per use is enough.
    let path = format!(
        "{}/rotate-{which}-password.sql",
        ctx.target.state_dir.trim_end_matches('/')
    );
    let prefix = ["sh", "-c", RUN_SQL, "ctops", path.as_str()].map(String::from);
    let run = psql(ctx, "postgres", false).wrapped(&prefix);
    (run, (path, sql.into_bytes()))
}

/// Over TCP inside the postgres service: the new password logs in, the old one is refused.
/// The conninfo (with the password) goes to psql on stdin, as a `\connect` line.
async fn check_passwords(ctx: &Ctx, role: &str, new: &str, old: &str) -> Result<(), Error> {
    let remote = ctx.remote().await?;
    let database = ctx
        .target
        .backup
        .db
        .database
        .clone()
        .unwrap_or_else(|| "postgres".into());
    let login = |password: &str| {
        let conninfo = format!(
            "host=127.0.0.1 user={} dbname={} password={}",
            conn_value(role),
            conn_value(&database),
            conn_value(password)
        );
        format!(
            "\\connect '{}'\nSELECT 'logged-in';\n",
            conninfo.replace('\\', "\\\\").replace('\'', "\\'")
        )
    };
    let psql = psql(ctx, &database, true).read_only();
    let works =
        |out: &crate::remote::Captured| out.status == 0 && out.stdout_text().contains("logged-in");
    let with_new = remote
        .run_with_input(&psql, Some(login(new).as_bytes()))
        .await?;
    if !works(&with_new) {
        return Err(Error::failed(format!(
            "role {role} does not log in over TCP with the new password"
        )));
    }
    let with_old = remote
        .run_with_input(&psql, Some(login(old).as_bytes()))
        .await?;
    if works(&with_old) {
        return Err(Error::failed(format!(
            "role {role} still logs in over TCP with the old password"
        )));
    }
    Ok(())
}

/// A libpq conninfo value, single-quoted.
fn conn_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_value_is_replaced_plain_and_url_encoded() {
        let file = EnvFile::parse(
            "# db\nPOSTGRES_PASSWORD=p@ss/1\nDATABASE_URL=postgresql://u:p%40ss%2F1@h:5432/db\nOTHER=x\n",
        );
        let (after, updated) = replace_everywhere(&file, "p@ss/1", "Nw9").unwrap();
        assert_eq!(updated, ["POSTGRES_PASSWORD", "DATABASE_URL"]);
        assert_eq!(
            after.render(),
            "# db\nPOSTGRES_PASSWORD=Nw9\nDATABASE_URL=postgresql://u:Nw9@h:5432/db\nOTHER=x\n"
        );
    }
}
