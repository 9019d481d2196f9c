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

use crate::cli::RotateArgs;
use crate::compose::exec_in_service_stdin;
use crate::context::Ctx;
use crate::envchange::{self, Change, Source};
use crate::envfile::{self, EnvFile};
use crate::error::{Error, Exit};
use crate::remote::RemoteCommand;
use crate::runner::Step;
use crate::scram;

/// What can be refused from the arguments alone, before anything is asked of the host.
pub fn check_input(args: &RotateArgs) -> Result<(), Error> {
    let key = args.secret.as_str();
    if envfile::valid_key(key) {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "invalid key {key:?}: letters, digits and _ only"
        )))
    }
}

pub async fn run(ctx: &Ctx, args: &RotateArgs) -> Result<Exit> {
    check_input(args)?;
    let t = &ctx.target;
    let key = args.secret.as_str();
    let config = t.secrets.get(key).cloned().unwrap_or_default();
    if args.generate && config.revoked_on_rotate {
        // Its issuer (BotFather for a Telegram token) makes the value and revokes the old
        // one: a random string would be kept as the token, and the service stay down.
        return Err(Error::usage(format!(
            "{key} is revoked_on_rotate: its new value comes from its issuer, not from --generate"
        ))
        .with_help(format!(
            "paste the token BotFather gave you: ctops rotate {key} --from-stdin (or run on a terminal to be asked)"
        ))
        .into());
    }
    let read = envchange::read_for_change(ctx).await?;
    let before = read.file.clone();
    let old = before.get(key).ok_or_else(|| {
        Error::usage(format!("{key} is not set in {}", envchange::env_path(ctx)))
            .with_help("ctops env list shows the keys")
    })?;
    let new = new_value(args)?;
    if new == old {
        return Err(Error::usage("the new value is the old one: nothing to rotate").into());
    }
    let (after, updated) = replace_everywhere(&before, &old, &new)?;
    let services = config.restart.clone();
    let mut summary = crate::summary::Summary::new(format!("rotate {}", ctx.target_label()))
        .row(
            "secret",
            format!(
                "{key} (the value is never shown){}",
                if config.revoked_on_rotate {
                    "; the old one is revoked by its issuer, so it is not put back on failure"
                } else {
                    ""
                }
            ),
        )
        .row(
            "updates",
            format!(
                "{} in {} (sha256 {} now)",
                updated.join(", "),
                envchange::env_path(ctx),
                &read.sha256[..12.min(read.sha256.len())]
            ),
        );
    if let Some(role) = &config.postgres_role {
        summary = summary.row(
            "role",
            format!("PostgreSQL role {role}: new password set first (SCRAM verifier), the old one put back if the gate fails"),
        );
    }
    ctx.out.status(
        summary
            .row(
                "backup",
                "the current file is copied first, put back on failure",
            )
            .row(
                "restart",
                format!(
                    "{}, then the health gate",
                    if services.is_empty() {
                        "the services whose configuration changed".to_string()
                    } else {
                        services.join(", ")
                    }
                ),
            )
            .render(),
    );
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
        let (set_new, new_sql) = alter_role(ctx, role, &new, "new")?;
        let (set_old, old_sql) = alter_role(ctx, role, &old, "old")?;
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
    // The proof runs over the application's own path to the database. Where PostgreSQL
    // trusts that address (the official image trusts 127.0.0.1 and ::1), any password logs
    // in and nothing can be proven: the rotation is applied and reported as not proven
    // rather than undone.
    let path = match (&role, ctx.dry_run) {
        (Some(role), false) => Some(app_path(ctx, &before, role)),
        _ => None,
    };
    let unprovable = match (&path, &role) {
        (Some(Ok(path)), Some(role)) => trusts_any_password(ctx, path, role).await?,
        (Some(Err(why)), _) => Some(why.clone()),
        _ => None,
    };
    change.proven = path.as_ref().map(|_| unprovable.is_none());
    let exit = envchange::apply(ctx, change).await?;
    if exit != Exit::Ok || ctx.dry_run {
        return Ok(exit);
    }
    if let (Some(role), Some(why)) = (&role, &unprovable) {
        crate::say!("warning: rotate {key}: applied, not proven: {why}");
        ctx.out.status(format!(
            "role {role}'s password and {key} are changed and the services passed the health gate, but ctops could not prove that the old password is refused"
        ));
        return Ok(Exit::Degraded);
    }
    if let (Some(role), Some(Ok(path))) = (&role, &path) {
        if let Err(e) = check_passwords(ctx, path, role, &new, &old).await {
            crate::say!("error: {e}; putting the old value back");
            let mut undo = Change::new(
                "rotate",
                format!("undo rotate {key}"),
                Source::Upload(before.render().into_bytes()),
                config.restart.clone(),
            );
            // Against the file this rotation wrote: a change made since is not undone.
            undo.expect_sha256 = Some(envchange::sha256_hex(after.render().as_bytes()));
            let (set_old, old_sql) = alter_role(ctx, role, &old, "old")?;
            undo.private_files = vec![old_sql];
            undo.before_replace = vec![Step::new(
                "alter_role",
                format!("set role {role}'s old password back"),
                &[set_old],
            )];
            let undone = envchange::apply(ctx, undo).await?;
            return Ok(if undone == Exit::Ok {
                Exit::Failed
            } else {
                Exit::Stranded
            });
        }
        ctx.out.status(format!(
            "checked over the application's path ({}): role {role} takes the new password and refuses the old one",
            path.describe()
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
        let changed = match replace_url_password(&value, old, new) {
            Some(changed) => changed,
            None if old_enc != old => value.replace(old, new).replace(&old_enc, &new_enc),
            None => value.replace(old, new),
        };
        if changed != value && !updated.contains(&key) {
            after
                .set(&key, &changed)
                .map_err(|e| Error::usage(format!("{key}: {e}")))?;
            updated.push(key);
        }
    }
    Ok((after, updated))
}

/// What a URL's userinfo may hold unencoded (RFC 3986's unreserved characters).
const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` with its URL's password replaced, when that password (decoded) is `old`, by `new`
/// percent-encoded: an `old` that needs no encoding looks the same inside a URL as outside,
/// so the plain replace would put a `new` with `@`, `/` or `:` into the URL unencoded.
fn replace_url_password(value: &str, old: &str, new: &str) -> Option<String> {
    let start = value.find("://")? + 3;
    let authority_end = value[start..]
        .find(['/', '?', '#'])
        .map_or(value.len(), |i| start + i);
    let at = start + value[start..authority_end].rfind('@')?;
    let colon = start + value[start..at].find(':')? + 1;
    let password = percent_encoding::percent_decode_str(&value[colon..at])
        .decode_utf8()
        .ok()?;
    (password == old).then(|| {
        format!(
            "{}{}{}",
            &value[..colon],
            percent_encoding::utf8_percent_encode(new, USERINFO),
            &value[at..]
        )
    })
}

/// psql as the configured user in the postgres service, reading its SQL from stdin.
fn psql(ctx: &Ctx, database: &str, tuples_only: bool) -> Result<RemoteCommand, Error> {
    let t = &ctx.target;
    let db = &t.backup.db;
    let mut argv: Vec<String> = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        .map(String::from)
        .to_vec();
    if tuples_only {
        argv.push("-At".into());
    }
    argv.extend([
        "-U".into(),
        t.fact("backup.db.user", &db.user)?.to_string(),
        "-d".into(),
        database.to_string(),
    ]);
    Ok(exec_in_service_stdin(
        t,
        t.fact("backup.db.service", &db.service)?,
        &argv,
    ))
}

const RUN_SQL: &str = include_str!("../scripts/rotate-sql.sh");

/// Sent before `ALTER ROLE`: keeps the statement, and so the verifier, out of the server's
/// log whatever its logging settings (`log_statement = all` logs it in full) and out of
/// `pg_stat_activity`. Each setting is a superuser's (or needs `GRANT SET`): without the
/// privilege the server's own settings apply and psql prints a warning into the step log;
/// a setting an older server does not know is skipped.
const QUIET_SESSION: &str = "DO $$
DECLARE s text[];
BEGIN
  FOREACH s SLICE 1 IN ARRAY ARRAY[['log_statement', 'none'], ['log_min_duration_statement', '-1'],
      ['log_min_duration_sample', '-1'], ['log_transaction_sample_rate', '0'],
      ['log_min_error_statement', 'panic'], ['track_activities', 'off']] LOOP
    BEGIN
      PERFORM set_config(s[1], s[2], false);
    EXCEPTION WHEN undefined_object THEN NULL;
    END;
  END LOOP;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE WARNING 'ctops: cannot keep the password verifier out of the server log and pg_stat_activity: %', SQLERRM;
END $$;
";

/// The command that sets `role`'s password to `password`'s SCRAM verifier, and the private
/// file (path, SQL) it reads: the verifier is uploaded 0600 under the lock (see
/// [`envchange::Change::private_files`]), never in the runner's script, a command line or the
/// `--dry-run` output (it is as good as the password to an offline guesser).
fn alter_role(
    ctx: &Ctx,
    role: &str,
    password: &str,
    which: &str,
) -> Result<(RemoteCommand, (String, Vec<u8>)), Error> {
    let sql = format!(
        "{QUIET_SESSION}ALTER ROLE \"{}\" PASSWORD '{}';\n",
        role.replace('"', "\"\""),
        scram::verifier(password)
    );
    // One operation at a time holds the host lock: a fixed name per use is enough.
    let path = format!(
        "{}/rotate-{which}-password.sql",
        ctx.target.state_dir.trim_end_matches('/')
    );
    let prefix = ["sh", "-c", RUN_SQL, "ctops", path.as_str()].map(String::from);
    let run = psql(ctx, "postgres", false)?.wrapped(&prefix);
    Ok((run, (path, sql.into_bytes())))
}

/// How the application reaches PostgreSQL as a role: host and port from its database URL in
/// `.env`, and the database it names (the configured one otherwise).
#[derive(Debug, Clone, PartialEq)]
struct AppPath {
    host: String,
    port: Option<u16>,
    database: String,
}

impl AppPath {
    fn describe(&self) -> String {
        match self.port {
            Some(port) => format!("host {} port {port}", self.host),
            None => format!("host {}", self.host),
        }
    }
}

/// The application's own path to the database as `role`, or why there is none to check.
fn app_path(ctx: &Ctx, env: &EnvFile, role: &str) -> Result<AppPath, String> {
    let entries = env.entries();
    let (host, port) = crate::discover::app_database_address(&entries, role).ok_or_else(|| {
        format!("no database URL in {} connects as role {role}, so ctops does not know the application's path to check", ctx.target.env_file)
    })?;
    let database = crate::discover::app_database_name(
        &entries,
        role,
        ctx.target.backup.db.database.as_deref(),
    )
    .ok_or_else(|| format!("no database to log in to as {role}: set `backup.db.database`"))?;
    Ok(AppPath {
        host,
        port,
        database,
    })
}

/// Whether `password` logs `role` in over `path` (psql in the database's service; the
/// conninfo, password included, goes to psql on stdin as a `\connect` line).
async fn logs_in(ctx: &Ctx, path: &AppPath, role: &str, password: &str) -> Result<bool, Error> {
    let remote = ctx.remote().await?;
    let mut conninfo = format!(
        "host={} user={} dbname={} password={}",
        conn_value(&path.host),
        conn_value(role),
        conn_value(&path.database),
        conn_value(password)
    );
    if let Some(port) = path.port {
        conninfo.push_str(&format!(" port={port}"));
    }
    let script = format!(
        "\\connect '{}'\nSELECT 'logged-in';\n",
        conninfo.replace('\\', "\\\\").replace('\'', "\\'")
    );
    let database = ctx
        .target
        .fact("backup.db.database", &ctx.target.backup.db.database)?;
    let psql = psql(ctx, database, true)?.read_only();
    let out = remote
        .run_with_input(&psql, Some(script.as_bytes()))
        .await?;
    Ok(out.status == 0 && out.stdout_text().contains("logged-in"))
}

/// `Some(why)` when the application's path takes any password (pg_hba trusts it).
async fn trusts_any_password(
    ctx: &Ctx,
    path: &AppPath,
    role: &str,
) -> Result<Option<String>, Error> {
    let wrong = format!("ctops-wrong-{}", crate::lock::new_token());
    Ok(logs_in(ctx, path, role, &wrong).await?.then(|| {
        format!(
            "PostgreSQL lets role {role} in over the application's path ({}) with any password (pg_hba.conf trusts that address), so no password check can tell the new one from the old",
            path.describe()
        )
    }))
}

/// Over the application's path: the new password logs in, the old one is refused.
async fn check_passwords(
    ctx: &Ctx,
    path: &AppPath,
    role: &str,
    new: &str,
    old: &str,
) -> Result<(), Error> {
    if !logs_in(ctx, path, role, new).await? {
        return Err(Error::failed(format!(
            "role {role} does not log in over {} with the new password",
            path.describe()
        )));
    }
    if logs_in(ctx, path, role, old).await? {
        return Err(Error::failed(format!(
            "role {role} still logs in over {} with the old password",
            path.describe()
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
    fn a_plain_old_password_in_a_url_gets_an_encoded_new_one() {
        let file = EnvFile::parse(
            "POSTGRES_PASSWORD=Old1pass\nDATABASE_URL=postgresql://u:Old1pass@h:5432/db?x=1\n",
        );
        let (after, updated) = replace_everywhere(&file, "Old1pass", "n@w/p:s s%").unwrap();
        assert_eq!(updated, ["POSTGRES_PASSWORD", "DATABASE_URL"]);
        assert_eq!(
            after.get("POSTGRES_PASSWORD").as_deref(),
            Some("n@w/p:s s%")
        );
        assert_eq!(
            after.get("DATABASE_URL").as_deref(),
            Some("postgresql://u:n%40w%2Fp%3As%20s%25@h:5432/db?x=1")
        );
        // And back: the encoded password is found decoded.
        let (back, _) = replace_everywhere(&after, "n@w/p:s s%", "Old1pass").unwrap();
        for key in ["POSTGRES_PASSWORD", "DATABASE_URL"] {
            assert_eq!(back.get(key), file.get(key), "{key}");
        }
    }

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
