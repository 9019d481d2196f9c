#!/usr/bin/env bash
# Second test sandbox profile for ctops: this machine plays a host laid out differently from
# the first profile's "trader-psy", sharing no name, port, path, user or database with it.
#
#   sandbox.sh up          create what is missing, start everything, wait for health
#   sandbox.sh reset-host  put the host back to its initial state (fast; tests call it)
#   sandbox.sh down        remove the stack, its volume and images, sshd, the state and host dirs
#   sandbox.sh env         print `export` lines for tests
#
# (Also reached as `tests/sandbox/sandbox.sh --second ARGS`.) It reuses what the first
# profile installs and runs (packages, dockerd, the compose plugin, the registry on
# 127.0.0.1:15000) and calls the first profile's `up` when one of them is missing; it never
# changes the first profile's containers, images, users, sshd or files. See README.md beside
# this file for the layout and the contract the Rust tests rely on.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FIRST=$HERE/../sandbox.sh
STATE=${CTOPS_SANDBOX2:-/var/tmp/ctops-sandbox2}
BASE="/srv/calm trader"
CHECKOUT="$BASE/app"
ORIGIN="$BASE/origin.git"
BACKUPS="$BASE/backups"
# ctops's default state_dir (lock, journal, releases, audit log), as the SPEC's `ctops setup`
# prepares it on a fresh host: group-owned by the login, setgid. No other profile uses it
# (the first one sets state_dir in its config).
HOSTSTATE=/var/lib/ctops
LOGIN=calm
LOGIN_HOME=/home/calm
SSH_ALIAS=calm-sandbox2
SSH_PORT=2322                       # an sshd of its own (the first one allows only deploy)
BRANCH=trunk
COMPOSE_FILE=deploy/compose.yaml
ENV_FILE=deploy/.env
PROJECT=calmstack                   # `name:` in the compose file
SERVICES=(web worker db cache)
BUILT=(web worker)                  # services built from the checkout
INITIAL_REF=r2
INITIAL_VERSION=3.1.0
INITIAL_REVISION=a2
DB_SERVICE=db
DB_SUPERUSER=calmadmin              # POSTGRES_USER in the db service's environment
DB_NAME=calmdb                      # POSTGRES_DB in the db service's environment
DB_APP_ROLE=calm_app                # the app's role; its password is APP_DB_PASSWORD
SEED_DB=calmdb_seed                 # template database holding the initial schema and rows
PG_PORT=25432
REDIS_PORT=26379
WEB_PORT=28000
HEALTH_URL=http://127.0.0.1:$WEB_PORT/health
REGISTRY=127.0.0.1:15000
LABEL=ctops.sandbox2                # on every image of this profile (never ctops.sandbox:
                                    # the first profile removes containers carrying that one)
BASE_IMAGE=calm-base
REGISTRY_REFS=(calm-base:latest calm/postgres:15 calm/redis:7)
WAIT_SECONDS=${SANDBOX_WAIT_SECONDS:-120}
PY=/usr/bin/python3
PSQL=/usr/lib/postgresql/15/bin/psql
LOCK=/var/lock/ctops-sandbox2.lock

log() { printf 'sandbox2: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Output of noisy steps goes to $STATE/sandbox.log; shown when the step fails.
logged() {
    local rc=0
    printf '\n$ %s\n' "$*" >>"$STATE/sandbox.log"
    "$@" >>"$STATE/sandbox.log" 2>&1 </dev/null || rc=$?
    if [ "$rc" -ne 0 ]; then
        tail -n 40 "$STATE/sandbox.log" >&2
        die "step failed (exit $rc): $*"
    fi
}

# Runs a command as the login user with a clean environment like an SSH login's.
login_run() {
    runuser -u "$LOGIN" -- env -i HOME="$LOGIN_HOME" USER="$LOGIN" LOGNAME="$LOGIN" \
        SHELL=/bin/bash PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 "$@"
}
as_login() { (cd "$CHECKOUT" && login_run "$@"); }
compose() { as_login docker compose --progress=plain -f "$COMPOSE_FILE" "$@"; }
container() { printf '%s-%s-1' "$PROJECT" "$1"; }

sandbox_hash() {
    (cd "$HERE" && find . -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 |
        LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64)
}

# A value from the checkout's live .env (tests may have changed it since reset-host).
env_value() { sed -n "s/^$1=//p" "$CHECKOUT/$ENV_FILE" | tail -n 1; }

# ---------------------------------------------------------------- what the first profile provides

# Packages, dockerd, the compose plugin and the registry come from the first profile: run its
# `up` when one is missing (it installs and starts them, and leaves a running one alone).
first_profile_ready() {
    [ -x /usr/sbin/sshd ] && [ -x "$PSQL" ] && command -v redis-cli >/dev/null &&
        command -v alembic >/dev/null && docker info >/dev/null 2>&1 &&
        docker compose version >/dev/null 2>&1 &&
        curl -fs -o /dev/null -m 2 "http://$REGISTRY/v2/"
}

ensure_first_profile() {
    first_profile_ready && return
    log "dockerd, the registry or a package is missing: running the first profile's up"
    "$FIRST" up >/dev/null || die "tests/sandbox/sandbox.sh up failed"
    first_profile_ready || die "still missing after the first profile's up (dockerd, compose, registry on $REGISTRY, sshd, psql, redis-cli, alembic)"
}

# ---------------------------------------------------------------- installation

ensure_user() {
    getent group docker >/dev/null || die "no docker group"
    if ! id "$LOGIN" >/dev/null 2>&1; then
        useradd -m -d "$LOGIN_HOME" -s /bin/bash -G docker "$LOGIN"
    fi
    id -nG "$LOGIN" | grep -qw docker || usermod -aG docker "$LOGIN"
    [ "$(getent shadow "$LOGIN" | cut -d: -f2)" = '*' ] || usermod -p '*' "$LOGIN"
    # As the first profile's deploy account: sizes under Docker's root-only folders, no more.
    write_sudoers /etc/sudoers.d/ctops-sandbox2 "$LOGIN ALL=(root) NOPASSWD: /usr/bin/stat"
}

write_sudoers() {   # file rule
    [ "$(cat "$1" 2>/dev/null)" = "$2" ] && return
    printf '%s\n' "$2" >"$1.tmp"
    chmod 0440 "$1.tmp"
    visudo -cqf "$1.tmp" || die "invalid sudoers rule in $1"
    mv -f "$1.tmp" "$1"
}

# The login's home as a new account's, keeping only .ssh: whatever ctops (or a test) put
# there, a state folder under ~/.local for instance, goes.
reset_login_home() {
    find "$LOGIN_HOME" -mindepth 1 -maxdepth 1 ! -name .ssh -exec rm -rf {} +
    cp -rT /etc/skel "$LOGIN_HOME"
    chown -R "$LOGIN:$LOGIN" "$LOGIN_HOME"
}

# A base image of nothing but symlinks (containers run the host's programs from /usr), like
# the first profile's but labelled $LABEL: images built FROM it inherit the label, and the
# first profile's reset-host removes every container whose image carries its own label.
ensure_base_image() {
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return
    local tmp
    tmp=$(mktemp -d)
    chmod 0755 "$tmp"
    mkdir -p "$tmp/tmp" && chmod 1777 "$tmp/tmp"
    ln -s usr/bin "$tmp/bin"; ln -s usr/lib "$tmp/lib"; ln -s usr/lib64 "$tmp/lib64"; ln -s usr/sbin "$tmp/sbin"
    tar -C "$tmp" -c . | docker import --change "LABEL $LABEL=1" - "$BASE_IMAGE" >/dev/null
    rm -rf "$tmp"
}

# Every image the stack pulls, in the registry and locally, as the base image.
publish_base_images() {
    local ref
    for ref in "${REGISTRY_REFS[@]}"; do
        docker tag "$BASE_IMAGE" "$REGISTRY/$ref"
        docker push -q "$REGISTRY/$ref" >/dev/null || die "docker push $REGISTRY/$ref failed"
    done
}

# ---------------------------------------------------------------- ssh

write_sshd_config() {
    cat >"$STATE/sshd/sshd_config" <<EOF
# sshd for the second ctops sandbox profile (generated by tests/sandbox/second/sandbox.sh)
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey "$STATE/sshd/hostkey"
PidFile "$STATE/sshd/sshd.pid"
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers $LOGIN
AuthorizedKeysFile .ssh/authorized_keys
LogLevel VERBOSE
PrintMotd no
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
}

write_ssh_client_files() {
    printf '[127.0.0.1]:%s %s\n' "$SSH_PORT" "$(cut -d' ' -f1,2 "$STATE/sshd/hostkey.pub")" >"$STATE/known_hosts"
    cat >"$STATE/ssh_config" <<EOF
Host $SSH_ALIAS
    HostName 127.0.0.1
    Port $SSH_PORT
    User $LOGIN
    IdentityFile "$STATE/id_ed25519"
    IdentitiesOnly yes
    UserKnownHostsFile "$STATE/known_hosts"
    StrictHostKeyChecking yes
    BatchMode yes
EOF
}

ensure_authorized_keys() {
    local ak=$LOGIN_HOME/.ssh/authorized_keys
    if ! cmp -s "$STATE/id_ed25519.pub" "$ak" 2>/dev/null; then
        install -d -o "$LOGIN" -g "$LOGIN" -m 0700 "$LOGIN_HOME/.ssh"
        install -o "$LOGIN" -g "$LOGIN" -m 0600 "$STATE/id_ed25519.pub" "$ak.tmp"
        mv -f "$ak.tmp" "$ak"
    fi
    chmod 0600 "$ak"
}

sshd_running() {
    local pid
    pid=$(cat "$STATE/sshd/sshd.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && grep -qF "$STATE/sshd/sshd_config" "/proc/$pid/cmdline" 2>/dev/null
}

ensure_sshd() {
    sshd_running && return
    log "starting sshd on 127.0.0.1:$SSH_PORT"
    mkdir -p /run/sshd && chmod 0755 /run/sshd
    /usr/sbin/sshd -t -f "$STATE/sshd/sshd_config" || die "invalid sshd_config"
    /usr/sbin/sshd -f "$STATE/sshd/sshd_config" -E "$STATE/sshd/sshd.log" 9>&-
    for _ in $(seq 1 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$SSH_PORT") 2>/dev/null && return
        sleep 0.1
    done
    tail -n 20 "$STATE/sshd/sshd.log" >&2 || true
    die "sshd is not listening on 127.0.0.1:$SSH_PORT"
}

stop_sshd() {
    sshd_running || return 0
    kill "$(cat "$STATE/sshd/sshd.pid")" 2>/dev/null || true
}

# ---------------------------------------------------------------- host files

random_alnum() {
    "$PY" -c 'import secrets, string, sys
n = int(sys.argv[1]); a = string.ascii_letters + string.digits
print("".join(secrets.choice(a) for _ in range(n)))' "$1"
}

write_env_file() {
    local admin app key
    admin=$(random_alnum 24)
    app=$(random_alnum 28)
    key=$(random_alnum 32)
    (umask 077 && cat >"$STATE/env.initial" <<EOF
# Calm Trader settings (generated once by tests/sandbox/second/sandbox.sh; fake secrets).
# Superuser $DB_SUPERUSER's password (the db service's POSTGRES_PASSWORD).
POSTGRES_PASSWORD=$admin
# Role $DB_APP_ROLE's password, also inside DATABASE_URL.
APP_DB_PASSWORD=$app
DATABASE_URL=postgresql://$DB_APP_ROLE:$app@[::1]:$PG_PORT/$DB_NAME
REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
WORKER_API_KEY=$key
LOG_LEVEL=info
EOF
    )
}

# Puts the pristine .env in the checkout (atomically, 0600, owned by the login) when it differs.
restore_env_file() {
    local env=$CHECKOUT/$ENV_FILE
    cmp -s "$STATE/env.initial" "$env" 2>/dev/null && [ "$(stat -c %a "$env")" = 600 ] && return
    install -o "$LOGIN" -g "$LOGIN" -m 0600 "$STATE/env.initial" "$env.sandbox-tmp"
    mv -f "$env.sandbox-tmp" "$env"
}

# What the issue allows the config to say about this host, and nothing more: ctops must find
# the rest (service names, migration folder, database user and name, writers, where the
# password is checked). ssh_config is how this machine reaches the host (a real operator has
# it in ~/.ssh/config, which ssh reads from the passwd home, not $HOME).
write_ctops_config() {
    cat >"$STATE/ctops.toml.tmp" <<EOF
# ctops configuration for the second sandbox profile (generated by
# tests/sandbox/second/sandbox.sh): only what an operator knows without reading the host.
[targets.calm]
ssh = "$SSH_ALIAS"
ssh_config = "ssh_config"
dir = "$CHECKOUT"
compose_file = "$COMPOSE_FILE"
branch = "$BRANCH"
health_url = "$HEALTH_URL"
env_file = "$ENV_FILE"
backup_dir = "$BACKUPS"
sudo = ["sudo", "-n"]

[secrets]
APP_DB_PASSWORD = { restart = ["web", "worker"], postgres_role = "$DB_APP_ROLE" }
EOF
    mv -f "$STATE/ctops.toml.tmp" "$STATE/ctops.toml"
}

# The checkout at the initial ref on branch trunk (upstream origin/trunk), clean, with
# origin's refs as first generated.
reset_git() {
    local refs
    refs=$(login_run git -C "$ORIGIN" for-each-ref --format='%(objectname) %(refname)')
    if [ "$refs" != "$(cat "$STATE/origin.refs")" ]; then
        log "restoring origin's refs"
        {
            LC_ALL=C comm -23 <(awk '{ print $2 }' <<<"$refs" | LC_ALL=C sort) \
                <(awk '{ print $2 }' "$STATE/origin.refs" | LC_ALL=C sort) | sed 's/^/delete /'
            awk '{ print "update " $2 " " $1 }' "$STATE/origin.refs"
        } | login_run git -C "$ORIGIN" update-ref --stdin
    fi
    # shellcheck disable=SC2016 # expanded by the inner shell
    as_login bash -euo pipefail -c '
        ref=$1 origin=$2 branch=$3 env=$4
        git remote set-url origin "$origin"
        git fetch -q --prune --prune-tags --force origin "+refs/heads/*:refs/remotes/origin/*" "+refs/tags/*:refs/tags/*"
        git reset -q --hard
        git checkout -q -f -B "$branch" "$ref"
        git branch -q --set-upstream-to="origin/$branch" "$branch"
        git for-each-ref --format="%(refname:short)" refs/heads | { grep -vx "$branch" || true; } | xargs -r git branch -q -D
        git stash clear
        git clean -q -ffdx -e "$env"
    ' reset-git "$INITIAL_REF" "$ORIGIN" "$BRANCH" "$ENV_FILE"
}

create_host_dirs() {
    install -d -o "$LOGIN" -g "$LOGIN" -m 0755 "$BASE" "$BACKUPS"
    install -d -o "$LOGIN" -g "$LOGIN" -m 2775 "$HOSTSTATE"
    local tmp="$BASE/.origin.git.tmp"
    rm -rf "$tmp"
    "$HERE/make-origin.sh" "$tmp" >>"$STATE/sandbox.log" 2>&1 || die "make-origin.sh failed"
    chown -R "$LOGIN:$LOGIN" "$tmp"
    mv "$tmp" "$ORIGIN"
    login_run git -C "$ORIGIN" for-each-ref --format="%(objectname) %(refname)" >"$STATE/origin.refs"
    (cd "$BASE" && login_run git clone -q -b "$BRANCH" "$ORIGIN" "$CHECKOUT")
    reset_git
    restore_env_file
}

# ---------------------------------------------------------------- database

# psql inside the db container over its unix socket (trust), as the superuser.
pg_exec() { docker exec -i "$(container "$DB_SERVICE")" psql -X -q -v ON_ERROR_STOP=1 -U "$DB_SUPERUSER" "$@"; }
pg_query() { pg_exec -d postgres -At -c "$1" </dev/null; }

# Ready over TCP, not only on the socket: the entrypoint's first start runs a socket-only
# server for the init scripts before the real one.
wait_pg() {
    local deadline=$((SECONDS + WAIT_SECONDS))
    until docker exec "$(container "$DB_SERVICE")" pg_isready -q -h 127.0.0.1 -U "$DB_SUPERUSER" -d postgres >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { compose logs --tail 40 "$DB_SERVICE" >&2 || true; die "$DB_SERVICE did not start"; }
        sleep 0.2
    done
}

# A login over TCP with a password: prints nothing, succeeds when the server accepted it.
pg_login() {   # host role password
    PGPASSWORD=$3 PGCONNECT_TIMEOUT=2 "$PSQL" -X -At -h "$1" -p "$PG_PORT" -U "$2" -d "$DB_NAME" \
        -c 'SELECT 1' >/dev/null 2>&1
}

# The official image's pg_hba, as the tests rely on it: 127.0.0.1 takes any password, ::1
# only the right one.
check_pg_hba() {
    pg_login 127.0.0.1 "$DB_APP_ROLE" wrong-password ||
        die "127.0.0.1 refused a wrong password: the pg_hba is not the official image's (trust)"
    ! pg_login ::1 "$DB_APP_ROLE" wrong-password ||
        die "::1 accepted a wrong password: the pg_hba is not the official image's (scram-sha-256)"
    pg_login ::1 "$DB_APP_ROLE" "$(env_value APP_DB_PASSWORD)" ||
        die "::1 refused $DB_APP_ROLE's password from $ENV_FILE"
}

# Migrates the database to the initial ref's head, inserts the seed rows and keeps a copy as
# the template $SEED_DB, then records the roles' password verifiers.
build_seed_database() {
    log "migrating $DB_NAME to $INITIAL_REVISION and seeding it"
    pg_exec -d postgres >/dev/null <<EOF
SELECT format('DROP DATABASE %I WITH (FORCE)', datname) FROM pg_database
 WHERE datname NOT IN ('postgres', 'template0', 'template1') \gexec
CREATE DATABASE $DB_NAME OWNER $DB_APP_ROLE;
EOF
    logged compose run --rm -T --no-deps web alembic upgrade head
    [ "$(pg_exec -d "$DB_NAME" -At -c 'SELECT version_num FROM alembic_version' </dev/null)" = "$INITIAL_REVISION" ] ||
        die "$DB_NAME is not at revision $INITIAL_REVISION after the migration"
    pg_exec -d "$DB_NAME" <"$HERE/seed.sql" >/dev/null
    pg_exec -d postgres >/dev/null <<EOF
CREATE DATABASE $SEED_DB TEMPLATE $DB_NAME OWNER $DB_APP_ROLE;
ALTER DATABASE $SEED_DB ALLOW_CONNECTIONS false;
EOF
    (umask 077 && pg_query "SELECT rolname || ' ' || rolpassword FROM pg_authid
        WHERE rolname IN ('$DB_SUPERUSER', '$DB_APP_ROLE') ORDER BY 1" >"$STATE/pg_verifiers")
}

# Every database but the template back to the seed state, and the roles' passwords back.
reset_database() {
    if [ "$(pg_query "SELECT count(*) FROM pg_database WHERE datname = '$SEED_DB'")" != 1 ]; then
        log "template database $SEED_DB is missing: migrating again"
        build_seed_database
        return
    fi
    { cat <<EOF
SELECT format('DROP DATABASE %I WITH (FORCE)', datname) FROM pg_database
 WHERE datname NOT IN ('postgres', 'template0', 'template1', '$SEED_DB') \gexec
CREATE DATABASE $DB_NAME TEMPLATE $SEED_DB OWNER $DB_APP_ROLE;
EOF
      awk '{ printf "ALTER ROLE %s PASSWORD '\''%s'\'';\n", $1, $2 }' "$STATE/pg_verifiers"
      printf 'ALTER SYSTEM RESET ALL;\nSELECT pg_reload_conf();\n'
    } | pg_exec -d postgres >/dev/null
}

# ---------------------------------------------------------------- images and services

image_ids() {   # "repo:tag id" for every image of this profile
    docker images --no-trunc --filter "label=$LABEL" --format '{{.Repository}}:{{.Tag}} {{.ID}}'
}

tag_initial_images() {
    local svc
    for svc in "${BUILT[@]}"; do
        docker tag "$PROJECT-$svc:latest" "$PROJECT-$svc:sandbox-initial"
    done
}

# The images of the initial ref as the services' current images: re-tag the kept ones (or
# rebuild when they were pruned).
reset_images() {
    local ids svc latest initial rebuild=0
    ids=$(image_ids)
    for svc in "${BUILT[@]}"; do
        initial=$(sed -n "s|^$PROJECT-$svc:sandbox-initial ||p" <<<"$ids")
        latest=$(sed -n "s|^$PROJECT-$svc:latest ||p" <<<"$ids")
        if [ -z "$initial" ]; then
            rebuild=1
        elif [ "$initial" != "$latest" ]; then
            docker tag "$PROJECT-$svc:sandbox-initial" "$PROJECT-$svc:latest"
        fi
    done
    if [ "$rebuild" = 1 ]; then
        log "building the images of $INITIAL_REF"
        logged compose build "${BUILT[@]}"
        tag_initial_images
    fi
}

# Tags other than latest and sandbox-initial on the built images (ctops keeps the running
# images as `ctops-<commit>` for rollbacks): a reset host has kept nothing.
untag_kept_images() {
    local svc
    for svc in "${BUILT[@]}"; do
        docker images --format '{{.Repository}}:{{.Tag}}' "$PROJECT-$svc" |
            { grep -v -e ':latest$' -e ':sandbox-initial$' || true; } | xargs -r docker rmi >/dev/null
    done
}

# Containers of this profile's images that are not the stack's own services: one-off
# containers, or stacks under another project name.
remove_stray_containers() {
    docker ps -a --filter "label=$LABEL" \
        --format '{{.ID}} {{.Label "com.docker.compose.project"}} {{.Label "com.docker.compose.oneoff"}}' |
        awk -v p="$PROJECT" '$2 != p || $3 == "True" { print $1 }' | xargs -r docker rm -f >/dev/null
}

# Resumes what a test froze: paused containers of the stack, and SIGSTOPped processes in them.
thaw() {
    local ps ids paused pid
    ps=$(docker ps --no-trunc --filter "label=com.docker.compose.project=$PROJECT" --format '{{.ID}} {{.State}}')
    [ -n "$ps" ] || return 0
    paused=$(awk '$2 == "paused" { print $1 }' <<<"$ps")
    [ -z "$paused" ] || xargs docker unpause <<<"$paused" >/dev/null
    ids=$(awk '{ print $1 }' <<<"$ps")
    for pid in $(ps -eo pid=,stat= | awk '$2 ~ /^T/ { print $1 }'); do
        if grep -qF "$ids" "/proc/$pid/cgroup" 2>/dev/null; then
            kill -CONT "$pid" 2>/dev/null || true
        fi
    done
}

# Recreates services whose container restarted (so restart counts start at 0).
recreate_restarted() {
    local restarted
    restarted=$(docker ps -a --filter "label=com.docker.compose.project=$PROJECT" \
        --filter label=com.docker.compose.oneoff=False \
        --format '{{.ID}}' | xargs -r docker inspect -f \
        '{{index .Config.Labels "com.docker.compose.service"}} {{.RestartCount}}' |
        awk '$2 != 0 { print $1 }')
    [ -z "$restarted" ] && return
    log "recreating restarted services: ${restarted//$'\n'/ }"
    # shellcheck disable=SC2086
    logged compose up -d --force-recreate --no-deps $restarted
}

# One pass over every check; prints what is not ready yet (nothing when all are).
not_ready() {
    local ps svc state health body problems=""
    ps=$(docker ps -a --filter "label=com.docker.compose.project=$PROJECT" \
        --filter label=com.docker.compose.oneoff=False --format '{{.ID}}' | xargs -r docker inspect -f \
        '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' 2>/dev/null || true)
    for svc in "${SERVICES[@]}"; do
        state="" health=""
        read -r state health < <(awk -v s="$svc" '$1 == s { print $2, $3 }' <<<"$ps") || true
        if [ "${state:-}" != running ]; then
            problems+="$svc: container ${state:-missing}"$'\n'
        elif [ "$health" != none ] && [ "$health" != healthy ]; then
            problems+="$svc: docker health $health"$'\n'
        fi
    done
    body=$(curl -s -m 4 "$HEALTH_URL" 2>/dev/null || true)
    case $body in
        *'"status": "ok"'*'"database": true'*) ;;
        *) problems+="web: /health answered '${body:-nothing}'"$'\n' ;;
    esac
    pg_login ::1 "$DB_APP_ROLE" "$(env_value APP_DB_PASSWORD)" ||
        problems+="$DB_SERVICE: no password login as $DB_APP_ROLE on [::1]:$PG_PORT"$'\n'
    [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] ||
        problems+="cache: no PONG on 127.0.0.1:$REDIS_PORT"$'\n'
    printf '%s' "$problems"
}

wait_healthy() {
    local deadline=$((SECONDS + WAIT_SECONDS)) problems failing
    while problems=$(not_ready) && [ -n "$problems" ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "error: the stack is not healthy after ${WAIT_SECONDS}s:"
            printf '  %s\n' "${problems%$'\n'}" | sed '2,$s/^/  /' >&2
            failing=$(cut -d: -f1 <<<"$problems" | sort -u | tr '\n' ' ')
            compose ps -a >&2 || true
            # shellcheck disable=SC2086
            compose logs --no-color --tail 30 $failing >&2 || true
            die "timed out waiting for the stack (logs above; \`$0 reset-host\` restores the initial state)"
        fi
        sleep 0.3
    done
}

# ---------------------------------------------------------------- whole operations

# Removes everything this profile created (dockerd, the registry and the first profile stay).
teardown() {
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" | xargs -r docker rm -f >/dev/null
        docker ps -aq --filter "label=$LABEL" | xargs -r docker rm -f >/dev/null
        docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT" | xargs -r docker volume rm -f >/dev/null
        for _ in 1 2; do   # a parent image goes once its children are gone
            docker images -q --filter "label=$LABEL" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
        done
    fi
    stop_sshd
    rm -rf "$BASE" "$HOSTSTATE"
    if [ -d "$STATE" ]; then
        find "$STATE" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    fi
}

# Builds the whole profile from nothing (after a teardown).
create() {
    log "creating the second sandbox profile in $STATE"
    install -d -m 0755 "$STATE" "$STATE/sshd"
    : >"$STATE/sandbox.log"
    reset_login_home

    ssh-keygen -q -t ed25519 -N '' -C "ctops-sandbox2-client" -f "$STATE/id_ed25519"
    ssh-keygen -q -t ed25519 -N '' -C "ctops-sandbox2-host" -f "$STATE/sshd/hostkey"
    write_sshd_config
    write_ssh_client_files
    ensure_authorized_keys
    ensure_sshd

    write_env_file
    create_host_dirs
    ensure_base_image
    publish_base_images

    log "building the images of $INITIAL_REF"
    logged compose build
    tag_initial_images
    logged compose up -d "$DB_SERVICE" cache
    wait_pg
    check_pg_hba
    build_seed_database
    logged compose up -d
    wait_healthy
    sandbox_hash >"$STATE/hash"
    touch "$STATE/initialized"
}

# True when the state and host dirs look complete and match this profile's files.
intact() {
    [ -f "$STATE/initialized" ] && [ "$(cat "$STATE/hash" 2>/dev/null)" = "$(sandbox_hash)" ] &&
        [ -f "$CHECKOUT/$ENV_FILE" ] && [ -d "$ORIGIN" ] && [ -d "$HOSTSTATE" ] && [ -s "$STATE/pg_verifiers" ] &&
        id "$LOGIN" >/dev/null 2>&1
}

# Everything `up` and `reset-host` need before they look at the stack.
prepare() {
    mkdir -p "$STATE"
    if [ "$(stat -c %s "$STATE/sandbox.log" 2>/dev/null || echo 0)" -gt 1000000 ]; then
        : >"$STATE/sandbox.log"
    fi
    ensure_first_profile
    ensure_user
    if ! intact; then
        if [ -f "$STATE/initialized" ]; then
            log "sandbox files changed or state incomplete: recreating"
        fi
        teardown
        create
        CREATED=1
    else
        ensure_base_image
        ensure_authorized_keys
        ensure_sshd
    fi
}

cmd_up() {
    CREATED=0
    prepare
    if [ "$CREATED" = 0 ]; then
        thaw
        publish_base_images
        logged compose up -d
        wait_healthy
    fi
    write_ctops_config
    log "ready in ${SECONDS}s"
    echo "$STATE/ctops.toml"
}

cmd_reset_host() {
    CREATED=0
    prepare
    if [ "$CREATED" = 0 ]; then
        thaw
        remove_stray_containers
        reset_git
        restore_env_file
        publish_base_images
        reset_images
        reset_login_home
        logged compose up -d --remove-orphans
        recreate_restarted
        untag_kept_images   # once no container runs them
        wait_pg
        reset_database
        redis-cli -p "$REDIS_PORT" flushall >/dev/null 2>&1 || true
        find "$BACKUPS" "$HOSTSTATE" -mindepth 1 -delete
        docker image prune -f --filter "label=$LABEL" >/dev/null
        wait_healthy
    fi
    local version
    version=$(curl -s -m 4 "$HEALTH_URL")
    case $version in
        *"\"version\": \"$INITIAL_VERSION\""*) ;;
        *) die "web reports $version, expected version $INITIAL_VERSION" ;;
    esac
    write_ctops_config
    log "host reset to $INITIAL_REF in ${SECONDS}s"
}

cmd_down() {
    if docker info >/dev/null 2>&1; then
        log "removing the stack, sshd and $BASE"
    fi
    mkdir -p "$STATE"
    teardown
    if [ -e "$LOGIN_HOME/.ssh/authorized_keys" ]; then
        rm -f "$LOGIN_HOME/.ssh/authorized_keys"
    fi
    rm -rf "$STATE"
    log "down in ${SECONDS}s"
}

cmd_env() {
    local k v
    while read -r k v; do
        printf 'export %s=%q\n' "$k" "$v"
    done <<EOF
CTOPS_SANDBOX2 $STATE
SANDBOX2_CONFIG $STATE/ctops.toml
SANDBOX2_SCRIPT $HERE/sandbox.sh
SANDBOX2_SSH_HOST $SSH_ALIAS
SANDBOX2_SSH_CONFIG $STATE/ssh_config
SANDBOX2_SSH_LOG $STATE/sshd/sshd.log
SANDBOX2_LOGIN $LOGIN
SANDBOX2_DIR $CHECKOUT
SANDBOX2_ORIGIN $ORIGIN
SANDBOX2_BRANCH $BRANCH
SANDBOX2_BACKUP_DIR $BACKUPS
SANDBOX2_STATE_DIR $HOSTSTATE
SANDBOX2_ENV_FILE $CHECKOUT/$ENV_FILE
SANDBOX2_COMPOSE_FILE $COMPOSE_FILE
SANDBOX2_COMPOSE_PROJECT $PROJECT
SANDBOX2_HEALTH_URL $HEALTH_URL
SANDBOX2_PG_PORT $PG_PORT
SANDBOX2_DB_NAME $DB_NAME
SANDBOX2_DB_SUPERUSER $DB_SUPERUSER
SANDBOX2_DB_APP_ROLE $DB_APP_ROLE
SANDBOX2_INITIAL_REF $INITIAL_REF
SANDBOX2_INITIAL_VERSION $INITIAL_VERSION
SANDBOX2_INITIAL_REVISION $INITIAL_REVISION
EOF
}

main() {
    local cmd=${1:-}
    case $cmd in
        up | reset-host | down)
            [ "$(id -u)" = 0 ] || die "run as root"
            exec 9>"$LOCK"
            flock -w 900 9 || die "another second/sandbox.sh holds $LOCK"
            ;;
    esac
    case $cmd in
        up) cmd_up ;;
        reset-host) cmd_reset_host ;;
        down) cmd_down ;;
        env) cmd_env ;;
        *) echo "usage: $0 up|reset-host|down|env" >&2; exit 2 ;;
    esac
}

main "$@"
