//! `update system` against the sandbox's local apt repository (a dummy package, 1.0 installed,
//! 2.0 offered) and `update images` against its Docker registry on 127.0.0.1.

use crate::util::*;

const DUMMY: &str = "ctops-sandbox-dummy";
const REGISTRY_REDIS: &str = "127.0.0.1:15000/calmtrader/redis:7";

fn dummy_version() -> String {
    host(&format!("dpkg-query -W -f='${{Version}}' {DUMMY}"))
}

#[test]
fn update_system_upgrades_the_package_waiting_for_the_dpkg_lock() {
    let _guard = exclusive();
    reset_host();
    assert_eq!(dummy_version(), "1.0");

    let run = sandbox_ctops(["update", "system"]).run().expect(4);
    assert!(run.stderr().contains("--yes"), "{}", run.describe());
    assert_eq!(dummy_version(), "1.0", "not confirmed: nothing upgraded");
    let run = sandbox_ctops(["update", "system", "--dry-run"])
        .run()
        .expect(0);
    assert!(
        run.stderr().contains("would run") && run.stderr().contains("upgrade"),
        "{}",
        run.describe()
    );
    assert_eq!(dummy_version(), "1.0", "dry run: nothing upgraded");

    let mut locker = hold_dpkg_lock(3);
    let doc = sandbox_ctops(["update", "system", "--yes", "--json"])
        .run()
        .expect(0)
        .json();
    // apt waited for the lock instead of failing: the holder ran its full time.
    assert!(locker.wait().unwrap().success());
    assert_schema("update-system.json", &doc);
    assert_eq!(dummy_version(), "2.0");
    assert_eq!(
        host(&format!("cat /usr/share/{DUMMY}/version")).trim(),
        "2.0"
    );
    assert_eq!(
        doc["upgraded"],
        serde_json::json!([{"package": DUMMY, "from": "1.0", "to": "2.0"}]),
        "{doc:#}"
    );
    assert_eq!(doc["waited_for_lock"], true, "{doc:#}");
    assert_eq!(doc["reboot_required"], true, "{doc:#}");
    assert_eq!(doc["reboot_packages"], serde_json::json!([DUMMY]));
    assert_eq!(doc["docker_upgraded"], false);

    let run = sandbox_ctops(["update", "system", "--yes"]).run().expect(0);
    assert!(
        run.stderr().contains("nothing to upgrade") && run.stderr().contains("needs a reboot"),
        "{}",
        run.describe()
    );
    reset_host();
}

/// Puts a sudoers file back when the test ends, however it ends.
struct Restore(&'static str);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::rename(format!("{}.away", self.0), self.0);
    }
}

#[test]
fn update_system_without_root_refuses_clearly_and_never_prompts() {
    let _guard = exclusive();
    reset_host();

    let dir = tempfile::tempdir().unwrap();
    let no_sudo = variant_config(dir.path(), |t| t.replace("sudo = [\"sudo\", \"-n\"]\n", ""));
    let run = sandbox_ctops(["update", "system", "--yes"])
        .env("CTOPS_CONFIG", &no_sudo)
        .run()
        .expect(4);
    assert!(
        run.stderr().contains("needs root") && run.stderr().contains("sudo = [\"sudo\", \"-n\"]"),
        "{}",
        run.describe()
    );

    // sudo is configured but the host grants nothing: sudo's own answer, no prompt.
    let rule = "/etc/sudoers.d/ctops-sandbox-apt";
    std::fs::rename(rule, format!("{rule}.away")).unwrap();
    let _restore = Restore(rule);
    let run = sandbox_ctops(["update", "system", "--yes", "--json"])
        .run()
        .expect(4);
    let doc = run.json();
    assert_schema("error.json", &doc);
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("needs root") && message.contains("password is required"),
        "{}",
        run.describe()
    );
    assert_eq!(dummy_version(), "1.0");
}

/// Pushes an image of our own as the registry's redis image, keeping the local tag on the
/// image the stack runs now (so only a pull can bring the new one); returns both ids.
fn push_new_redis_image(dockerfile_extra: &str) -> (String, String) {
    let old = host(&format!(
        "docker image inspect -f '{{{{.Id}}}}' {REGISTRY_REDIS}"
    ));
    let new = host(&format!(
        "printf 'FROM sandbox-base\\nLABEL ctops.sandbox=1 ctops.test=update-images-{n}\\n{dockerfile_extra}\\n' \
         | docker build -q -t {REGISTRY_REDIS} - >/dev/null 2>&1 && docker push -q {REGISTRY_REDIS} >/dev/null \
         && docker image inspect -f '{{{{.Id}}}}' {REGISTRY_REDIS} && docker tag {old} {REGISTRY_REDIS}",
        n = std::process::id(),
        old = old.trim()
    ));
    assert_ne!(old.trim(), new.trim());
    (old.trim().to_string(), new.trim().to_string())
}

fn redis_image() -> String {
    host(&format!(
        "docker inspect -f '{{{{.Image}}}}' {}",
        container("redis")
    ))
    .trim()
    .to_string()
}

#[test]
fn update_images_pulls_the_new_image_and_the_service_runs_it() {
    let _guard = exclusive();
    reset_host();
    let (old, new) = push_new_redis_image("");
    assert_eq!(redis_image(), old);

    sandbox_ctops(["update", "images"]).run().expect(4);
    assert_eq!(
        redis_image(),
        old,
        "not confirmed: nothing pulled or recreated"
    );
    let run = sandbox_ctops(["update", "images", "--dry-run"])
        .run()
        .expect(0);
    assert!(run.stdout().contains("pull"), "{}", run.describe());
    assert_eq!(redis_image(), old, "dry run: nothing pulled or recreated");
    assert_eq!(
        host(&format!(
            "docker image inspect -f '{{{{.Id}}}}' {REGISTRY_REDIS}"
        ))
        .trim(),
        old,
        "dry run: the local tag is where it was"
    );

    let started = || {
        host(&format!(
            "docker inspect -f '{{{{.State.StartedAt}}}}' {} {}",
            container("postgres"),
            container("minio")
        ))
    };
    let untouched = started();
    let doc = sandbox_ctops(["update", "images", "--yes", "--json"])
        .run()
        .expect(0)
        .json();
    assert_schema("update-images.json", &doc);
    assert_eq!(redis_image(), new, "redis runs the pulled image");
    assert_eq!(
        host("redis-cli -p 16379 ping").trim(),
        "PONG",
        "and answers"
    );
    // redis is on the pulled image; api and bot may be too if their rebuild made new images
    // (with no build cache left, a rebuild does); postgres and minio are not.
    let updated = doc["updated"].as_array().unwrap();
    let redis = updated.iter().find(|u| u["service"] == "redis");
    assert_eq!(
        redis.map(|u| &u["to"]),
        Some(&new.as_str().into()),
        "{doc:#}"
    );
    assert!(
        updated
            .iter()
            .all(|u| u["service"] != "postgres" && u["service"] != "minio"),
        "{doc:#}"
    );
    assert_eq!(
        started(),
        untouched,
        "postgres and minio (same image, nothing depending on redis) were not recreated"
    );
    sandbox_ctops(["health"]).run().expect(0);
    reset_host();
}

#[test]
fn update_images_that_fail_the_gate_put_the_previous_image_back() {
    let _guard = exclusive();
    reset_host();
    // An image whose entrypoint exits at once: redis stops answering.
    let (old, _new) = push_new_redis_image("ENTRYPOINT [\"/bin/false\"]");

    let run = sandbox_ctops(["update", "images", "--yes", "--json"])
        .run()
        .expect(1);
    let doc = run.json();
    assert_schema("update-images.json", &doc);
    assert_eq!(doc["state"], "rolled-back", "{}", run.describe());
    wait_healthy();
    assert_eq!(redis_image(), old, "redis runs the previous image again");
    assert_eq!(
        host(&format!(
            "docker image inspect -f '{{{{.Id}}}}' {REGISTRY_REDIS}"
        ))
        .trim(),
        old,
        "the tag points at the previous image, so a later `up -d` keeps it"
    );
    sandbox_ctops(["health"]).run().expect(0);
    reset_host();
}

/// The case: a pull that fails. The message names `pull` and only the undo that ran:
/// no gate ran and no service was recreated, so it must not say so.
#[test]
fn update_images_failing_at_pull_names_that_step_and_only_the_undo_that_ran() {
    let _guard = exclusive();
    reset_host();
    let before = redis_image();
    let run = sandbox_ctops(["update", "images", "--yes", "--json"])
        .env("CTOPS_FAIL_STEP", "pull")
        .run()
        .expect(1);
    let doc = run.json();
    assert_schema("update-images.json", &doc);
    let message = doc["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("step `pull` failed"), "{}", run.describe());
    assert!(
        !message.contains("health gate") && !message.contains("recreate"),
        "claims a gate or a recreate that never happened: {message}"
    );
    let ran: Vec<&str> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "start")
        .filter_map(|e| e["step"].as_str())
        .collect();
    assert!(
        !ran.contains(&"gate") && !ran.contains(&"recreate_back"),
        "{ran:?}"
    );
    assert_eq!(redis_image(), before, "redis runs what it ran");
    sandbox_ctops(["health"]).run().expect(0);
}
