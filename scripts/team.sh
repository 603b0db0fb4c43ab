#!/usr/bin/env bash
# A team's set-up on one machine, to try it and to test it: a Dagster instance on PostgreSQL and a
# Ray cluster of two nodes, everything on 127.0.0.1 with free ports, everything under DIR.
#
#   bash scripts/team.sh up DIR     # start them; writes DIR/env for the commands that use them
#   . DIR/env                       # DAGSTER_HOME, DAGSTER_PG_URL, DIVCOEF_RAY_ADDRESS (and 127.0.0.1 kept)
#   bash scripts/team.sh down DIR   # stop exactly what `up` started, delete its data
#
# `up` starts, in this order:
# - PostgreSQL (scripts/postgres.sh) and DIR/dagster_home/dagster.yaml: the project's instance
#   settings (data/dagster_home/dagster.yaml) with the run, event log and schedule storage on it;
# - a Ray head (`ray start --head`, 1 CPU, temporary folder DIR/ray-head);
# - a second Ray node joining it (`ray start --address`, 1 CPU, its own temporary folder
#   DIR/ray-second and a resource `second_node`), as a GPU host would join a team's cluster.
# Both through scripts/ray_start.py, which is Ray's `ray start` kept on 127.0.0.1.
# Each `ray start` runs in a session of its own, whose id is kept in DIR/<node>.sid: `down` (and the
# tests, to kill a node) end every process of that session and nothing else. (`ray stop` would
# stop every Ray node on the machine, other people's too.) DIR should have a short path: Ray's
# sockets live under it and a socket path may have at most 107 characters.
# On failure `up` stops what it had started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$root/.venv/bin/python}

free_ports() {
    "$PYTHON" - "$1" <<'EOF'
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))
EOF
}

start_node() {  # NAME ARGS...: `ray start ARGS` in a new session; its id goes to DIR/NAME.sid
    local name=$1
    shift
    local agent grpc runtime metrics
    read -r agent grpc runtime metrics <<<"$(free_ports 4)"
    setsid bash -c 'echo $$ > "$0"; exec "$@"' "$dir/$name.sid" \
        "$PYTHON" "$root/scripts/ray_start.py" start --node-ip-address=127.0.0.1 --num-gpus=0 --temp-dir="$dir/$name" --disable-usage-stats \
        --dashboard-agent-listen-port="$agent" --dashboard-agent-grpc-port="$grpc" \
        --runtime-env-agent-port="$runtime" --metrics-export-port="$metrics" "$@" >"$dir/$name.log" 2>&1 \
        || { cat "$dir/$name.log" >&2; return 1; }
}

stop_session() {  # NAME: SIGKILL every process of the session in DIR/NAME.sid, until none is left
    local file=$dir/$1.sid
    [ -f "$file" ] || return 0
    local sid
    sid=$(cat "$file")
    for _ in $(seq 100); do
        pkill -KILL -s "$sid" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "$file"
}

up() {
    local pg_port head_port client_port
    read -r pg_port head_port client_port <<<"$(free_ports 3)"
    trap 'wait; down' ERR  # the background PostgreSQL start finishes before it is stopped
    bash "$root/scripts/postgres.sh" start "$dir/postgres" "$pg_port" &  # meanwhile, the Ray nodes start
    local postgres=$!
    mkdir -p "$dir/dagster_home"
    {
        cat "$root/data/dagster_home/dagster.yaml"
        printf '\n# Run, event log and schedule storage on PostgreSQL (dagster-postgres), at $DAGSTER_PG_URL.\n'
        printf 'storage:\n  postgres:\n    postgres_url:\n      env: DAGSTER_PG_URL\n'
    } > "$dir/dagster_home/dagster.yaml"
    start_node ray-head --head --port="$head_port" --ray-client-server-port="$client_port" --include-dashboard=false --num-cpus=1
    start_node ray-second --address="127.0.0.1:$head_port" --num-cpus=1 --resources='{"second_node": 1}'
    wait "$postgres"
    {
        cat "$dir/postgres/env"
        echo "export DAGSTER_HOME=$dir/dagster_home"
        echo "export DIVCOEF_RAY_ADDRESS=127.0.0.1:$head_port"
        echo "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0  # a process that connects keeps 127.0.0.1 (scripts/ray_start.py)"
    } > "$dir/env"
    trap - ERR
    echo "team.sh: PostgreSQL on 127.0.0.1:$pg_port, Ray head on 127.0.0.1:$head_port with a second node; . $dir/env" >&2
}

down() {
    stop_session ray-second
    stop_session ray-head
    bash "$root/scripts/postgres.sh" stop "$dir/postgres"
    rm -rf "$dir/ray-head" "$dir/ray-second" "$dir/env"
}

command=${1:-}
dir=${2:-}
if [ -z "$dir" ] || { [ "$command" != up ] && [ "$command" != down ]; }; then
    echo "usage: team.sh up DIR | down DIR" >&2
    exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
"$command"
