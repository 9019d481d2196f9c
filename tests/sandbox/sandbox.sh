#!/usr/bin/env bash
# Test sandbox host for ctops: this machine plays the production host "trader-psy".
#
#   sandbox.sh up          install what is missing, create what is missing, start everything, wait for health
#   sandbox.sh reset-host  put the host back to its initial state (fast; tests call it)
#   sandbox.sh down        remove the stack, its volumes and images, sshd, the state and host dirs
#   sandbox.sh env         print `export` lines for tests
#
# See README.md beside this file for the layout and the contract the Rust tests rely on.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The second profile (other names, paths and PostgreSQL set-up: a host laid out differently)
# lives in second/ with its own state and hash, so changing it never rebuilds this one.
if [ "${1:-}" = --second ]; then shift; exec "$HERE/second/sandbox.sh" "$@"; fi
STATE=${CTOPS_SANDBOX:-/var/tmp/ctops-sandbox}
BASE="/srv/ctops sandbox"
CHECKOUT="$BASE/trader-psy"
ORIGIN="$BASE/origin.git"
BACKUPS="$BASE/backups"
HOSTSTATE="$BASE/state"               # ctops's lock, journal, releases and audit log
DEPLOY=deploy
DEPLOY_HOME=/home/deploy
SSH_ALIAS=trader-psy-sandbox
SSH_PORT=2222
COMPOSE_FILE=infrastructure/docker-compose.yml
PROJECT=infrastructure              # compose's default: the compose file's folder name
SERVICES=(api bot postgres redis minio)
BUILT=(api bot)                     # services built from the checkout
INITIAL_REF=v1.26.0
INITIAL_REVISION=0002
SEED_DB=sandbox_seed                # template database holding the initial schema and rows
HEALTH_URL=http://127.0.0.1:18000/health
S3_ENDPOINT=http://127.0.0.1:19000
S3_ANON_STATUS=403                  # what s3s-fs answers to an anonymous GET /
# A second S3 server, for what s3s-fs cannot show: listings paged at 1000 keys (moto), with
# a request log to count GETs. A host process, like sshd; ctops reaches it through SSH too.
PAGING_S3_PORT=19001
PAGING_S3_ENDPOINT=http://127.0.0.1:$PAGING_S3_PORT
MOTO_VENV=/var/tmp/ctops-sandbox-moto     # outside the state: survives a recreate
# A Docker registry (Debian's docker-registry, a host process) holding the images the stack
# pulls, so `compose pull` and `compose build --pull` (ctops update images) are real.
REGISTRY=127.0.0.1:15000
REGISTRY_REFS=(sandbox-base:latest calmtrader/postgres:15 calmtrader/redis:7 calmtrader/minio:latest)
# A local apt repository (file:) with a dummy package in a newer version than the installed
# one (ctops update system); apt.conf points apt at it alone, so nothing else is fetched.
APT_DIR=$STATE/apt
DUMMY_PKG=ctops-sandbox-dummy
PG_PORT=15432
REDIS_PORT=16379
WAIT_SECONDS=${SANDBOX_WAIT_SECONDS:-120}
PY=/usr/bin/python3
PSQL=/usr/lib/postgresql/15/bin/psql
LOCK=/var/lock/ctops-sandbox.lock
APT_PACKAGES=(docker.io openssh-server postgresql redis-server alembic python3-alembic
    python3-psycopg2 python3-boto3 python3-venv sudo git curl ca-certificates docker-registry
    dpkg-dev)

log() { printf 'sandbox: %s\n' "$*" >&2; }
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

# Runs a command as deploy with a clean environment like an SSH login's.
deploy_run() {
    runuser -u "$DEPLOY" -- env -i HOME="$DEPLOY_HOME" USER="$DEPLOY" LOGNAME="$DEPLOY" \
        SHELL=/bin/bash PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 "$@"
}
as_deploy() { (cd "$CHECKOUT" && deploy_run "$@"); }
compose() { as_deploy docker compose --progress=plain -f "$COMPOSE_FILE" "$@"; }
container() { printf '%s-%s-1' "$PROJECT" "$1"; }

sandbox_hash() {
    (cd "$HERE" && find . -type f ! -path './second/*' ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 |
        LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64)
}

# A value from the checkout's live .env (tests may have changed it since reset-host).
env_value() { sed -n "s/^$1=//p" "$CHECKOUT/infrastructure/.env" | tail -n 1; }

# ---------------------------------------------------------------- installation

ensure_packages() {
    local missing=() pkg status
    for pkg in "${APT_PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
        [ "${status:0:2}" = ii ] || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return
    log "installing ${missing[*]}"
    local guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then   # keep postinst scripts from starting services
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        guard=/usr/sbin/policy-rc.d
    fi
    local rc=0
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${missing[@]}"; } >&2 || rc=$?
    [ -z "$guard" ] || rm -f "$guard"
    [ "$rc" -eq 0 ] || die "apt-get install failed"
}

# `docker compose` v2 is not in Debian 12: take the binary from Debian 13's package.
ensure_compose() {
    [ -x /usr/libexec/docker/cli-plugins/docker-compose ] && return
    docker compose version >/dev/null 2>&1 && return
    log "installing the docker compose v2 plugin (from Debian trixie's docker-compose package)"
    local tmp o rc=0
    tmp=$(mktemp -d)
    chmod 0755 "$tmp"   # apt downloads as _apt
    mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
    echo 'deb http://deb.debian.org/debian trixie main' >"$tmp/sources.list"
    o=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
       -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache")
    { apt-get "${o[@]}" update -q && (cd "$tmp" && apt-get "${o[@]}" download docker-compose) &&
      dpkg-deb -x "$tmp"/docker-compose_*.deb "$tmp/x" &&
      install -D "$tmp/x/usr/libexec/docker/cli-plugins/docker-compose" \
          /usr/libexec/docker/cli-plugins/docker-compose; } >&2 || rc=$?
    rm -rf "$tmp"
    [ "$rc" -eq 0 ] || die "could not install the docker compose plugin"
    docker compose version >&2
}

ensure_s3s_fs() {
    [ -x /usr/local/bin/s3s-fs ] && return
    log "installing s3s-fs 0.14.1 with cargo (takes a few minutes)"
    # shellcheck source=/dev/null
    command -v cargo >/dev/null || { [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"; }
    command -v cargo >/dev/null || die "cargo is needed to install s3s-fs"
    cargo install s3s-fs@0.14.1 --features binary --locked --root /usr/local >&2 ||
        die "cargo install s3s-fs failed"
}

ensure_dockerd() {
    docker info >/dev/null 2>&1 && return
    local pid
    pid=$(cat /var/run/docker.pid 2>/dev/null || true)
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        log "starting dockerd (log: $STATE/dockerd.log)"
        mkdir -p "$STATE"
        setsid dockerd --storage-driver=vfs --bridge=none --iptables=false \
            </dev/null >>"$STATE/dockerd.log" 2>&1 9>&- &
    fi
    for _ in $(seq 1 120); do
        docker info >/dev/null 2>&1 && return
        sleep 0.5
    done
    tail -n 30 "$STATE/dockerd.log" >&2 || true
    die "dockerd did not answer within 60 s"
}

ensure_user() {
    getent group docker >/dev/null || groupadd --system docker
    if ! id "$DEPLOY" >/dev/null 2>&1; then
        useradd -m -d "$DEPLOY_HOME" -s /bin/bash -G docker "$DEPLOY"
    fi
    id -nG "$DEPLOY" | grep -qw docker || usermod -aG docker "$DEPLOY"
    [ "$(getent shadow "$DEPLOY" | cut -d: -f2)" = '*' ] || usermod -p '*' "$DEPLOY"
    # What a careful admin grants the deploy account: reading sizes under Docker's root-only
    # directories (ctops disk), and apt-get as root (ctops update system), in a file of its
    # own so a test can take it away to see ctops refuse cleanly; nothing more.
    write_sudoers /etc/sudoers.d/ctops-sandbox "$DEPLOY ALL=(root) NOPASSWD: /usr/bin/stat"
    write_sudoers /etc/sudoers.d/ctops-sandbox-apt "$DEPLOY ALL=(root) NOPASSWD: /usr/bin/apt-get"
}

write_sudoers() {   # file rule
    [ "$(cat "$1" 2>/dev/null)" = "$2" ] && return
    printf '%s\n' "$2" >"$1.tmp"
    chmod 0440 "$1.tmp"
    visudo -cqf "$1.tmp" || die "invalid sudoers rule in $1"
    mv -f "$1.tmp" "$1"
}

# A base image of nothing but symlinks: containers run the host's programs from /usr.
ensure_base_image() {
    docker image inspect sandbox-base >/dev/null 2>&1 && return
    local tmp
    tmp=$(mktemp -d)
    chmod 0755 "$tmp"   # the containers' / (mktemp made it 0700)
    mkdir -p "$tmp/tmp" && chmod 1777 "$tmp/tmp"
    ln -s usr/bin "$tmp/bin"; ln -s usr/lib "$tmp/lib"; ln -s usr/lib64 "$tmp/lib64"; ln -s usr/sbin "$tmp/sbin"
    tar -C "$tmp" -c . | docker import --change 'LABEL ctops.sandbox=1' - sandbox-base >/dev/null
    rm -rf "$tmp"
}

# ---------------------------------------------------------------- registry and apt repository

ensure_registry() {
    daemon_running registry docker-registry && return
    mkdir -p "$STATE/registry"
    cat >"$STATE/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $STATE/registry}, delete: {enabled: true}}
http: {addr: $REGISTRY}
EOF
    start_daemon registry "http://$REGISTRY/v2/" /usr/bin/docker-registry serve "$STATE/registry.yml"
}

# Every image the stack pulls, in the registry and locally, as the base image: what a test
# pushed since is replaced (a push of unchanged layers only writes the tags).
publish_base_images() {
    local ref
    for ref in "${REGISTRY_REFS[@]}"; do
        docker tag sandbox-base "$REGISTRY/$ref"
        docker push -q "$REGISTRY/$ref" >/dev/null || die "docker push $REGISTRY/$ref failed"
    done
}

build_dummy_package() {   # version [postinst]
    local dir=$APT_DIR/build/$1
    rm -rf "$dir" && mkdir -p "$dir/DEBIAN" "$dir/usr/share/$DUMMY_PKG"
    echo "$1" >"$dir/usr/share/$DUMMY_PKG/version"
    cat >"$dir/DEBIAN/control" <<EOF
Package: $DUMMY_PKG
Version: $1
Architecture: all
Maintainer: ctops sandbox <root@localhost>
Description: dummy package for the tests of ctops update system
EOF
    if [ -n "${2:-}" ]; then
        printf '#!/bin/sh\nset -e\n%s\n' "$2" >"$dir/DEBIAN/postinst"
        chmod 0755 "$dir/DEBIAN/postinst"
    fi
    dpkg-deb -Zgzip --root-owner-group -b "$dir" "$APT_DIR/$DUMMY_PKG-$1.deb" >/dev/null
}

# Version 1.0 to install, and a repository offering 2.0, which asks for a reboot as a kernel
# or libc upgrade does.
create_apt_repo() {
    rm -rf "$APT_DIR" && mkdir -p "$APT_DIR/repo" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
    build_dummy_package 1.0
    build_dummy_package 2.0 'if [ "$1" = configure ]; then touch /var/run/reboot-required; echo '"$DUMMY_PKG"' >>/var/run/reboot-required.pkgs; fi'
    mv "$APT_DIR/$DUMMY_PKG-2.0.deb" "$APT_DIR/repo/"
    # (compressed copies too: apt's file method reports an error for each one missing)
    (cd "$APT_DIR/repo" && dpkg-scanpackages . /dev/null >Packages 2>/dev/null &&
        gzip -k Packages && xz -k Packages)
    echo "deb [trusted=yes] file:$APT_DIR/repo ./" >"$APT_DIR/sources.list"
    cat >"$APT_DIR/apt.conf" <<EOF
// The sandbox's apt: the local repository only, with lists and caches of its own.
Dir::Etc::SourceList "$APT_DIR/sources.list";
Dir::Etc::SourceParts "$APT_DIR/sources.list.d";
Dir::State::Lists "$APT_DIR/lists";
Dir::Cache "$APT_DIR/cache";
EOF
    chmod -R a+rX "$APT_DIR"
}

# The dummy package at 1.0 and no reboot flag of ours.
reset_apt() {
    if [ "$(dpkg-query -W -f='${Version}' "$DUMMY_PKG" 2>/dev/null)" != 1.0 ]; then
        dpkg -i "$APT_DIR/$DUMMY_PKG-1.0.deb" >/dev/null || die "dpkg -i $DUMMY_PKG 1.0 failed"
    fi
    if [ "$(sort -u /var/run/reboot-required.pkgs 2>/dev/null)" = "$DUMMY_PKG" ]; then
        rm -f /var/run/reboot-required /var/run/reboot-required.pkgs
    fi
}

# ---------------------------------------------------------------- ssh

write_sshd_config() {
    cat >"$STATE/sshd/sshd_config" <<EOF
# sshd for the ctops sandbox (generated by tests/sandbox/sandbox.sh)
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey "$STATE/sshd/hostkey"
PidFile "$STATE/sshd/sshd.pid"
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers $DEPLOY
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
    User $DEPLOY
    IdentityFile "$STATE/id_ed25519"
    IdentitiesOnly yes
    UserKnownHostsFile "$STATE/known_hosts"
    StrictHostKeyChecking yes
    BatchMode yes
EOF
}

ensure_authorized_keys() {
    local ak=$DEPLOY_HOME/.ssh/authorized_keys
    if ! cmp -s "$STATE/id_ed25519.pub" "$ak" 2>/dev/null; then
        install -d -o "$DEPLOY" -g "$DEPLOY" -m 0700 "$DEPLOY_HOME/.ssh"
        install -o "$DEPLOY" -g "$DEPLOY" -m 0600 "$STATE/id_ed25519.pub" "$ak.tmp"
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
        (exec 3<>/dev/tcp/127.0.0.1/$SSH_PORT) 2>/dev/null && return
        sleep 0.1
    done
    tail -n 20 "$STATE/sshd/sshd.log" >&2 || true
    die "sshd is not listening on 127.0.0.1:$SSH_PORT"
}

stop_sshd() {
    sshd_running || return 0
    kill "$(cat "$STATE/sshd/sshd.pid")" 2>/dev/null || true
}

ensure_moto() {
    if [ ! -x "$MOTO_VENV/bin/moto_server" ]; then
        log "installing moto (S3 server with paged listings) into $MOTO_VENV"
        rm -rf "$MOTO_VENV"
        "$PY" -m venv "$MOTO_VENV" >&2 || die "python3 -m venv failed"
        "$MOTO_VENV/bin/pip" install -q 'moto[server]==5.*' >&2 || die "pip install moto failed"
    fi
    daemon_running moto moto_server && return
    start_daemon moto "$PAGING_S3_ENDPOINT/" "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$PAGING_S3_PORT"
}

# Host processes of the sandbox (moto, the registry), like sshd: a pid file and a log in the
# state folder, named after the process.
daemon_running() {   # name, a word of its command line
    local pid
    pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && grep -qF "$2" "/proc/$pid/cmdline" 2>/dev/null
}

start_daemon() {   # name, a URL that answers once it is up, the command
    local name=$1 url=$2
    shift 2
    log "starting $name ($url)"
    setsid "$@" >>"$STATE/$name.log" 2>&1 </dev/null 9>&- &
    echo $! >"$STATE/$name.pid"
    for _ in $(seq 1 100); do
        curl -s -o /dev/null -m 1 "$url" && return
        sleep 0.1
    done
    tail -n 20 "$STATE/$name.log" >&2 || true
    die "$name is not answering at $url"
}

stop_daemon() {   # name, a word of its command line
    daemon_running "$1" "$2" || return 0
    kill "$(cat "$STATE/$1.pid")" 2>/dev/null || true
}

# Moto keeps everything in memory: forget every bucket, and start a fresh request log.
reset_moto() {
    curl -s -o /dev/null -m 5 -X POST "$PAGING_S3_ENDPOINT/moto-api/reset" || die "moto reset failed"
    : >"$STATE/moto.log"
}

# ---------------------------------------------------------------- host files

random_alnum() {
    "$PY" -c 'import secrets, string, sys
n = int(sys.argv[1]); a = string.ascii_letters + string.digits
print("".join(secrets.choice(a) for _ in range(n)))' "$1"
}

write_env_file() {
    local pw tok_id tok user secret
    pw=$(random_alnum 24)
    tok_id=$("$PY" -c 'import secrets; print(secrets.randbelow(9 * 10**9) + 10**9)')
    tok=$(random_alnum 35)
    user=$(random_alnum 20)
    secret=$(random_alnum 40)
    umask 077
    cat >"$STATE/env.initial" <<EOF
# CalmTrader settings for the ctops sandbox (generated once by tests/sandbox/sandbox.sh).
# Every secret here is fake and local to this machine.
POSTGRES_USER=trader
POSTGRES_PASSWORD=$pw
POSTGRES_DB=trader_psy
DATABASE_URL=postgresql://trader:$pw@127.0.0.1:$PG_PORT/trader_psy
REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
TELEGRAM_BOT_TOKEN=$tok_id:$tok
MINIO_ROOT_USER=$user
MINIO_ROOT_PASSWORD=$secret
APP_MODE=normal
EOF
    umask 022
}

# Puts the pristine .env in the checkout (atomically, 0600, owned by deploy) when it differs.
restore_env_file() {
    local env=$CHECKOUT/infrastructure/.env
    cmp -s "$STATE/env.initial" "$env" 2>/dev/null && return
    install -o "$DEPLOY" -g "$DEPLOY" -m 0600 "$STATE/env.initial" "$env.sandbox-tmp"
    mv -f "$env.sandbox-tmp" "$env"
}

write_ctops_config() {
    cat >"$STATE/ctops.toml.tmp" <<EOF
# ctops configuration for the test sandbox (generated by tests/sandbox/sandbox.sh).
default_target = "sandbox"

[targets.sandbox]
ssh = "$SSH_ALIAS"
ssh_config = "ssh_config"
protected = false
dir = "$CHECKOUT"
compose_file = "$COMPOSE_FILE"
branch = "main"
health_url = "$HEALTH_URL"
env_file = "infrastructure/.env"
backup_dir = "$BACKUPS"
state_dir = "$HOSTSTATE"
local_dir = "local-backups"
sudo = ["sudo", "-n"]

[timeouts]
connect = "5s"
command = "60s"
build = "5m"
migrate = "2m"

[update]
apt_config = "$APT_DIR/apt.conf"

[deploy]
health_timeout = "30s"
health_interval = "500ms"
stable_for = "4s"

[checks]
postgres = { service = "postgres", command = ["pg_isready", "-h", "127.0.0.1", "-p", "$PG_PORT", "-U", "trader"] }
redis = { service = "redis", command = ["redis-cli", "-p", "$REDIS_PORT", "ping"], expect = "PONG" }
minio = { http = "$S3_ENDPOINT/", expect_status = $S3_ANON_STATUS }

[backup.db]
service = "postgres"
user = "trader"
database = "trader_psy"
# reset-host deletes every backup, so the backup-age row would fail every test that wants
# an all-green health; the health test for that row sets max_age itself.
max_age = "0s"

[backup.minio]
endpoint = "$S3_ENDPOINT"
access_key_var = "MINIO_ROOT_USER"
secret_key_var = "MINIO_ROOT_PASSWORD"
buckets = ["voice-messages", "breathing-audio"]

[secrets]
TELEGRAM_BOT_TOKEN = { restart = ["bot"], revoked_on_rotate = true }
POSTGRES_PASSWORD = { restart = ["api", "bot"], postgres_role = "trader" }
EOF
    mv -f "$STATE/ctops.toml.tmp" "$STATE/ctops.toml"
}

# The checkout at the initial ref on branch main (upstream origin/main), clean, with
# origin's refs as first generated.
reset_git() {
    local refs
    refs=$(deploy_run git -C "$ORIGIN" for-each-ref --format='%(objectname) %(refname)')
    if [ "$refs" != "$(cat "$STATE/origin.refs")" ]; then
        log "restoring origin's refs"
        {
            LC_ALL=C comm -23 <(awk '{ print $2 }' <<<"$refs" | LC_ALL=C sort) \
                <(awk '{ print $2 }' "$STATE/origin.refs" | LC_ALL=C sort) | sed 's/^/delete /'
            awk '{ print "update " $2 " " $1 }' "$STATE/origin.refs"
        } | deploy_run git -C "$ORIGIN" update-ref --stdin
    fi
    # shellcheck disable=SC2016 # expanded by the inner shell
    as_deploy bash -euo pipefail -c '
        ref=$1 origin=$2
        git remote set-url origin "$origin"
        git fetch -q --prune --prune-tags --force origin "+refs/heads/*:refs/remotes/origin/*" "+refs/tags/*:refs/tags/*"
        git reset -q --hard
        git checkout -q -f -B main "$ref"
        git branch -q --set-upstream-to=origin/main main
        git for-each-ref --format="%(refname:short)" refs/heads | { grep -vx main || true; } | xargs -r git branch -q -D
        git stash clear
        git clean -q -ffdx -e infrastructure/.env
    ' reset-git "$INITIAL_REF" "$ORIGIN"
}

create_host_dirs() {
    install -d -o "$DEPLOY" -g "$DEPLOY" -m 0755 "$BASE" "$BACKUPS"
    install -d -o "$DEPLOY" -g "$DEPLOY" -m 2775 "$HOSTSTATE"
    local tmp="$BASE/.origin.git.tmp"
    rm -rf "$tmp"
    "$HERE/make-origin.sh" "$tmp" >>"$STATE/sandbox.log" 2>&1 || die "make-origin.sh failed"
    chown -R "$DEPLOY:$DEPLOY" "$tmp"
    mv "$tmp" "$ORIGIN"
    deploy_run git -C "$ORIGIN" for-each-ref --format="%(objectname) %(refname)" >"$STATE/origin.refs"
    (cd "$BASE" && deploy_run git clone -q "$ORIGIN" "$CHECKOUT")
    reset_git
    restore_env_file
}

# ---------------------------------------------------------------- database and object store

# psql inside the postgres container over its unix socket (trust), as the superuser trader.
pg_exec() { docker exec -i "$(container postgres)" psql -X -q -v ON_ERROR_STOP=1 -U trader "$@"; }
pg_query() { pg_exec -d postgres -At -c "$1" </dev/null; }

wait_pg_socket() {
    local deadline=$((SECONDS + WAIT_SECONDS))
    until docker exec "$(container postgres)" pg_isready -q -U trader >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { compose logs --tail 40 postgres >&2 || true; die "postgres did not start"; }
        sleep 0.2
    done
}

# Migrates trader_psy to the initial ref's head, inserts the seed rows and keeps a copy as
# the template $SEED_DB, then records the role's password verifier.
build_seed_database() {
    log "migrating the database to $INITIAL_REVISION and seeding it"
    pg_exec -d postgres >/dev/null <<EOF
SELECT format('DROP DATABASE %I WITH (FORCE)', datname) FROM pg_database
 WHERE datname NOT IN ('postgres', 'template0', 'template1') \gexec
CREATE DATABASE trader_psy OWNER trader;
EOF
    logged compose run --rm -T api alembic upgrade head
    pg_exec -d trader_psy <"$HERE/seed.sql" >/dev/null
    pg_exec -d postgres >/dev/null <<EOF
CREATE DATABASE $SEED_DB TEMPLATE trader_psy OWNER trader;
ALTER DATABASE $SEED_DB ALLOW_CONNECTIONS false;
EOF
    (umask 077 && pg_query "SELECT rolpassword FROM pg_authid WHERE rolname = 'trader'" >"$STATE/pg_verifier")
}

# Every database but the template back to the seed state, and the role's password back.
reset_database() {
    if [ "$(pg_query "SELECT count(*) FROM pg_database WHERE datname = '$SEED_DB'")" != 1 ]; then
        log "template database $SEED_DB is missing: migrating again"
        build_seed_database
        return
    fi
    { cat <<EOF
SELECT format('DROP DATABASE %I WITH (FORCE)', datname) FROM pg_database
 WHERE datname NOT IN ('postgres', 'template0', 'template1', '$SEED_DB') \gexec
CREATE DATABASE trader_psy TEMPLATE $SEED_DB OWNER trader;
EOF
      printf "ALTER ROLE trader PASSWORD '%s';\n" "$(cat "$STATE/pg_verifier")"
      # settings a test made with ALTER SYSTEM (log_statement = 'all')
      printf 'ALTER SYSTEM RESET ALL;\nSELECT pg_reload_conf();\n'
    } | pg_exec -d postgres >/dev/null
}

s3_volume_dir() { docker volume inspect -f '{{.Mountpoint}}' "${PROJECT}_miniodata"; }

seed_object_store() {
    log "seeding the object store"
    MINIO_ROOT_USER=$(env_value MINIO_ROOT_USER) MINIO_ROOT_PASSWORD=$(env_value MINIO_ROOT_PASSWORD) \
        "$PY" "$HERE/s3seed.py" --wait "$S3_ENDPOINT" "$WAIT_SECONDS"
    MINIO_ROOT_USER=$(env_value MINIO_ROOT_USER) MINIO_ROOT_PASSWORD=$(env_value MINIO_ROOT_PASSWORD) \
        "$PY" "$HERE/s3seed.py" "$S3_ENDPOINT"
    rm -rf "$STATE/s3-seed"
    cp -a "$(s3_volume_dir)" "$STATE/s3-seed"
}

# s3s-fs keeps objects and their metadata as plain files: put the seeded files back.
reset_object_store() {
    local dir
    dir=$(s3_volume_dir)
    find "$dir" -mindepth 1 -delete
    cp -a "$STATE/s3-seed/." "$dir/"
}

# ---------------------------------------------------------------- images and services

image_ids() {   # "repo:tag id" for every image of the fixture
    docker images --no-trunc --filter label=ctops.sandbox --format '{{.Repository}}:{{.Tag}} {{.ID}}'
}

tag_initial_images() {
    local svc
    for svc in "${BUILT[@]}"; do
        docker tag "$PROJECT-$svc:latest" "$PROJECT-$svc:sandbox-initial"
    done
}

# The images of the initial ref as the services' current images: re-tag the kept ones
# (or rebuild when they were pruned).
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

# Containers made from the fixture's images that are not the stack's own services:
# leftover one-off containers, or stacks under another project name.
remove_stray_containers() {
    docker ps -a --filter label=ctops.sandbox \
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
    local ps svc state health body code problems=""
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
        *) problems+="api: /health answered '${body:-nothing}'"$'\n' ;;
    esac
    PGPASSWORD=$(env_value POSTGRES_PASSWORD) PGCONNECT_TIMEOUT=2 "$PSQL" -X -At -h 127.0.0.1 \
        -p "$PG_PORT" -U trader -d trader_psy -c 'SELECT 1' >/dev/null 2>&1 ||
        problems+="postgres: no TCP password login on 127.0.0.1:$PG_PORT"$'\n'
    [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] ||
        problems+="redis: no PONG on 127.0.0.1:$REDIS_PORT"$'\n'
    # s3s-fs logs an error for every anonymous request: ask only once the rest is ready
    # (the container's own healthcheck is a TCP connect).
    if [ -z "$problems" ]; then
        code=$(curl -s -o /dev/null -m 4 -w '%{http_code}' "$S3_ENDPOINT/" 2>/dev/null || true)
        [ "$code" = "$S3_ANON_STATUS" ] ||
            problems+="minio: GET / answered ${code:-nothing}, expected $S3_ANON_STATUS"$'\n'
    fi
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
            die "timed out waiting for the stack (logs above; engine log: $STATE/dockerd.log; \`$0 reset-host\` restores the initial state)"
        fi
        sleep 0.3
    done
}

# ---------------------------------------------------------------- whole operations

# Removes everything the sandbox created except dockerd's log (dockerd keeps running).
teardown() {
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" | xargs -r docker rm -f >/dev/null
        docker ps -aq --filter label=ctops.sandbox | xargs -r docker rm -f >/dev/null
        docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT" | xargs -r docker volume rm -f >/dev/null
        for _ in 1 2; do   # a parent image goes once its children are gone
            docker images -q --filter label=ctops.sandbox | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
        done
    fi
    stop_sshd
    stop_daemon moto moto_server
    stop_daemon registry docker-registry
    if dpkg-query -W "$DUMMY_PKG" >/dev/null 2>&1; then
        dpkg --purge "$DUMMY_PKG" >/dev/null 2>&1 || true
    fi
    rm -rf "$BASE"
    if [ -d "$STATE" ]; then
        find "$STATE" -mindepth 1 -maxdepth 1 ! -name dockerd.log -exec rm -rf {} +
    fi
}

# Builds the whole sandbox from nothing (after a teardown).
create() {
    log "creating the sandbox in $STATE"
    install -d -m 0755 "$STATE" "$STATE/sshd" "$STATE/local-backups"
    : >"$STATE/sandbox.log"

    # deploy starts from a fresh home: nothing from an earlier sandbox survives.
    if [ -d "$DEPLOY_HOME" ]; then
        rm -rf "$DEPLOY_HOME"
        cp -rT /etc/skel "$DEPLOY_HOME"
        chown -R "$DEPLOY:$DEPLOY" "$DEPLOY_HOME"
    fi

    ssh-keygen -q -t ed25519 -N '' -C "ctops-sandbox-client" -f "$STATE/id_ed25519"
    ssh-keygen -q -t ed25519 -N '' -C "ctops-sandbox-host" -f "$STATE/sshd/hostkey"
    write_sshd_config
    write_ssh_client_files
    ensure_authorized_keys
    ensure_sshd
    ensure_moto

    create_apt_repo
    reset_apt
    ensure_registry
    write_env_file
    create_host_dirs
    ensure_base_image
    publish_base_images

    log "building the images of $INITIAL_REF"
    logged compose build
    tag_initial_images
    logged compose up -d postgres redis minio
    wait_pg_socket
    build_seed_database
    seed_object_store
    logged compose up -d
    wait_healthy
    sandbox_hash >"$STATE/hash"
    touch "$STATE/initialized"
}

# True when the state and host dirs look complete and match the sandbox files.
intact() {
    [ -f "$STATE/initialized" ] && [ "$(cat "$STATE/hash" 2>/dev/null)" = "$(sandbox_hash)" ] &&
        [ -f "$CHECKOUT/infrastructure/.env" ] && [ -d "$ORIGIN" ] && [ -d "$STATE/s3-seed" ] &&
        [ -s "$STATE/pg_verifier" ] && [ -f "$APT_DIR/apt.conf" ] && id "$DEPLOY" >/dev/null 2>&1
}

# Everything `up` and `reset-host` need before they look at the stack.
prepare() {
    mkdir -p "$STATE"
    if [ "$(stat -c %s "$STATE/sandbox.log" 2>/dev/null || echo 0)" -gt 1000000 ]; then
        : >"$STATE/sandbox.log"
    fi
    ensure_packages
    ensure_compose
    ensure_s3s_fs
    ensure_dockerd
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
        ensure_moto
        ensure_registry
    fi
}

cmd_up() {
    CREATED=0
    prepare
    if [ "$CREATED" = 0 ]; then
        thaw
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
        reset_apt
        # deploy's shell startup as created (a test puts PATH shims in front)
        cmp -s /etc/skel/.bashrc "$DEPLOY_HOME/.bashrc" ||
            install -o "$DEPLOY" -g "$DEPLOY" -m 0644 /etc/skel/.bashrc "$DEPLOY_HOME/.bashrc"
        logged compose up -d --remove-orphans
        recreate_restarted
        wait_pg_socket
        reset_database
        reset_object_store
        reset_moto
        redis-cli -p "$REDIS_PORT" flushall >/dev/null 2>&1 || true
        find "$BACKUPS" "$STATE/local-backups" "$HOSTSTATE" -mindepth 1 -delete
        docker image prune -f --filter label=ctops.sandbox >/dev/null
        wait_healthy
    fi
    local version
    version=$(curl -s -m 4 "$HEALTH_URL")
    case $version in
        *"\"version\": \"${INITIAL_REF#v}\""*) ;;
        *) die "api reports $version, expected version ${INITIAL_REF#v}" ;;
    esac
    write_ctops_config
    log "host reset to $INITIAL_REF in ${SECONDS}s"
}

cmd_down() {
    if command -v dockerd >/dev/null; then
        mkdir -p "$STATE"
        ensure_dockerd
    fi
    log "removing the stack, sshd and $BASE"
    teardown
    if [ -e "$DEPLOY_HOME/.ssh/authorized_keys" ]; then
        rm -f "$DEPLOY_HOME/.ssh/authorized_keys"
    fi
    rm -rf "$STATE"
    log "down in ${SECONDS}s"
}

cmd_env() {
    local k v
    while read -r k v; do
        printf 'export %s=%q\n' "$k" "$v"
    done <<EOF
CTOPS_SANDBOX $STATE
CTOPS_CONFIG $STATE/ctops.toml
SANDBOX_SCRIPT $HERE/sandbox.sh
SANDBOX_SSH_HOST $SSH_ALIAS
SANDBOX_SSH_CONFIG $STATE/ssh_config
SANDBOX_SSH_LOG $STATE/sshd/sshd.log
SANDBOX_DIR $CHECKOUT
SANDBOX_ORIGIN $ORIGIN
SANDBOX_BACKUP_DIR $BACKUPS
SANDBOX_LOCAL_BACKUPS $STATE/local-backups
SANDBOX_ENV_FILE $CHECKOUT/infrastructure/.env
SANDBOX_COMPOSE_FILE $COMPOSE_FILE
SANDBOX_COMPOSE_PROJECT $PROJECT
SANDBOX_HEALTH_URL $HEALTH_URL
SANDBOX_S3_ENDPOINT $S3_ENDPOINT
SANDBOX_PAGING_S3_ENDPOINT $PAGING_S3_ENDPOINT
SANDBOX_PAGING_S3_LOG $STATE/moto.log
SANDBOX_REGISTRY $REGISTRY
SANDBOX_DUMMY_PACKAGE $DUMMY_PKG
SANDBOX_INITIAL_REF $INITIAL_REF
SANDBOX_INITIAL_REVISION $INITIAL_REVISION
EOF
}

main() {
    local cmd=${1:-}
    case $cmd in
        up | reset-host | down)
            [ "$(id -u)" = 0 ] || die "run as root"
            exec 9>"$LOCK"
            flock -w 900 9 || die "another sandbox.sh holds $LOCK"
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
