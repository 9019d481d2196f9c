//! Runbook 3.2-3.3, `rollback`: back to the previously *deployed* release from the host's
//! release history (not `HEAD~1`, which is wrong after a deploy that spanned several
//! commits), or to `--to REF`. The schema is downgraded with the current image, which has
//! the newer scripts, before the old code is checked out.

use anyhow::Result;

use super::switch::{self, Kind, Request};
use crate::cli::RollbackArgs;
use crate::context::Ctx;
use crate::deployed::read_history;
use crate::error::{Error, Exit};

pub async fn run(ctx: &Ctx, args: &RollbackArgs) -> Result<Exit> {
    let remote = ctx.remote().await?;
    let target = match &args.to {
        Some(r) => r.clone(),
        None => {
            let history = read_history(remote, &ctx.target.state_dir).await?;
            previous_commit(&history, args.steps).ok_or_else(|| {
                Error::usage(format!(
                    "the release history on {} has no release {} back",
                    remote.host(),
                    args.steps
                ))
                .with_help("see `ctops releases`, then `ctops rollback --to REF`")
            })?
        }
    };
    // `switch` asks once it can show the plan (from, to, schema, backup).
    let command_line = match &args.to {
        Some(r) => format!("rollback --to {r}"),
        None => format!("rollback --steps {}", args.steps),
    };
    let request = Request {
        kind: Kind::Rollback,
        reference: Some(target),
        force: false,
        command_line,
        preflight: None,
    };
    switch::run(ctx, &request).await
}

/// The commit `steps` deployed releases before the one running now (history newest first),
/// skipping releases a rollback left (Capistrano's semantics: rolling back twice goes two
/// releases back).
fn previous_commit(history: &[crate::deployed::Record], steps: usize) -> Option<String> {
    let abandoned = crate::deployed::abandoned_commits(history);
    let mut commits: Vec<&str> = Vec::new();
    for (i, record) in history
        .iter()
        .enumerate()
        .filter(|(_, r)| r.result == "deployed" || r.result == "found")
    {
        // The running release (the newest record) counts even if it was once left.
        if i > 0 && abandoned.contains(&record.commit) {
            continue;
        }
        if commits.last() != Some(&record.commit.as_str()) {
            commits.push(&record.commit);
        }
    }
    commits.get(steps).map(|c| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployed::Record;

    fn rec(commit: &str, result: &str) -> Record {
        Record {
            commit: commit.into(),
            result: result.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_previous_release_is_the_last_other_commit_that_was_live() {
        let history = vec![
            rec("c3", "deployed"),
            rec("c9", "rolled-back"),
            rec("c3", "deployed"),
            rec("c2", "deployed"),
            rec("c1", "found"),
        ];
        assert_eq!(previous_commit(&history, 1).as_deref(), Some("c2"));
        assert_eq!(previous_commit(&history, 2).as_deref(), Some("c1"));
        assert_eq!(previous_commit(&history, 3), None);
    }

    fn switch(commit: &str, kind: &str, from: &str) -> Record {
        Record {
            kind: Some(kind.into()),
            from: Some(from.into()),
            ..rec(commit, "deployed")
        }
    }

    #[test]
    fn a_second_rollback_goes_past_the_release_the_first_one_left() {
        // found A, deploy B, deploy C, rollback (C -> B): newest first.
        let mut history = vec![
            switch("B", "rollback", "C"),
            switch("C", "deploy", "B"),
            switch("B", "deploy", "A"),
            rec("A", "found"),
        ];
        assert_eq!(previous_commit(&history, 1).as_deref(), Some("A"));
        crate::deployed::mark_rolled_back_from(&mut history);
        let marked: Vec<bool> = history.iter().map(|r| r.rolled_back_from).collect();
        assert_eq!(marked, [false, true, false, false]);
        // Then rollback again (B -> A): nothing older is left.
        history.insert(0, switch("A", "rollback", "B"));
        assert_eq!(previous_commit(&history, 1), None);
        // A deploy of C again makes it a release to return to.
        history.insert(0, switch("C", "deploy", "A"));
        assert_eq!(previous_commit(&history, 1).as_deref(), Some("A"));
        history.insert(0, switch("D", "deploy", "C"));
        assert_eq!(previous_commit(&history, 1).as_deref(), Some("C"));
    }
}
