#!/usr/bin/env bash
# A PostgreSQL server from Debian's `postgresql` package for a Dagster instance, on 127.0.0.1 only.
#
#   bash scripts/postgres.sh install          # install Debian's postgresql when absent (never fails)
#   bash scripts/postgres.sh start DIR PORT   # a new server, its data in a temporary folder
#   bash scripts/postgres.sh stop DIR         # stop it and delete its data
#
# `start` creates a database cluster (initdb) with one role and database, both `dagster`, that
# accepts connections from 127.0.0.1 without a password (trust), starts it on 127.0.0.1:PORT and
# writes DIR/env with `export DAGSTER_PG_URL=postgresql+psycopg2://dagster@127.0.0.1:PORT/dagster`,
# the URL the instance settings read (SQLAlchemy 2.1 takes a plain postgresql:// for psycopg 3; the
# driver dagster-postgres installs is psycopg2). It is for trying a team's set-up on one machine and for the tests;
# a team's server has passwords and backups. PostgreSQL refuses to run as root, so as root the
# server runs as the `postgres` user the package creates (with `runuser`), its data in a folder
# of its own under /tmp that user owns (DIR may sit in a folder it cannot enter).
#
# `install`, like scripts/browser.sh, installs the package with scripts/apt_install.sh (root or
# password-less sudo, and apt-get); where it cannot, it says why and exits 0, and the tests that
# need a server are skipped with that reason.
set -euo pipefail

bindir() {
    # initdb and pg_ctl: on PATH, else the newest of Debian's /usr/lib/postgresql/<version>/bin.
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"  # the package's folder, where createdb is too
        return
    fi
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$found" ] || [ ! -x "$found/initdb" ]; then
        echo "postgres.sh: no PostgreSQL server found (initdb); run: bash scripts/postgres.sh install" >&2
        return 1
    fi
    echo "$found"
}

install() {
    if bindir >/dev/null 2>&1; then
        return 0
    fi
    # Each test starts a server of its own, on a free port, whatever the package itself starts.
    if bash "$(dirname "$0")/apt_install.sh" postgres.sh "the PostgreSQL tests" postgresql; then
        echo "postgres.sh: installed $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)" >&2
    fi
    return 0
}

as_server_user() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    local dir=${1:?usage: postgres.sh start DIR PORT} port=${2:?usage: postgres.sh start DIR PORT}
    local bin data
    bin=$(bindir)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ -f "$dir/data-dir" ]; then
        echo "postgres.sh: $dir already has a server ($(cat "$dir/data-dir")); stop it first" >&2
        return 1
    fi
    if [ "$(id -u)" -eq 0 ]; then
        if ! id postgres >/dev/null 2>&1; then
            echo "postgres.sh: running as root and there is no postgres user to run the server as" >&2
            return 1
        fi
        data=$(mktemp -d /tmp/divcoef-pgdata.XXXXXX)
        chown postgres: "$data"
    else
        data="$dir/data"
        mkdir -p "$data"
    fi
    chmod 700 "$data"
    echo "$data" > "$dir/data-dir"
    as_server_user "$bin/initdb" --pgdata="$data/cluster" --username=dagster --auth=trust --encoding=UTF8 \
        --no-instructions >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
    as_server_user "$bin/pg_ctl" --pgdata="$data/cluster" --log="$data/server.log" --wait --timeout=60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c fsync=off" start >/dev/null \
        || { cat "$data/server.log" >&2; return 1; }
    as_server_user "$bin/createdb" --host=127.0.0.1 --port="$port" --username=dagster dagster
    echo "export DAGSTER_PG_URL=postgresql+psycopg2://dagster@127.0.0.1:$port/dagster" > "$dir/env"
    echo "postgres.sh: PostgreSQL on 127.0.0.1:$port, database dagster (data: $data)" >&2
}

stop() {
    local dir=${1:?usage: postgres.sh stop DIR}
    [ -f "$dir/data-dir" ] || return 0
    local data bin
    data=$(cat "$dir/data-dir")
    bin=$(bindir)
    if [ -f "$data/cluster/postmaster.pid" ]; then
        as_server_user "$bin/pg_ctl" --pgdata="$data/cluster" --mode=immediate --wait stop >/dev/null 2>&1 || true
    fi
    rm -rf "$data"
    rm -f "$dir/data-dir" "$dir/env"
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) echo "usage: postgres.sh install | start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
