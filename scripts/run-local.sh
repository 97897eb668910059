#!/usr/bin/env bash
# `make run`: the service on a local Ray sized for this machine, on the embedded defaults (local storage,
# no cloud account): http://127.0.0.1:8000 (API docs at /docs). Ctrl-C stops Serve, then Ray, and exits 0.
#   RAY_NUM_CPUS (default: the machine's cores), RAY_OBJECT_STORE_BYTES (default 2 GB), SERVE_PORT (default 8000),
#   GENERATED_MODELS_DIR (default ./generated_models) and every variable of the README's configuration table.
# This Ray is this script's alone: its ports are free ones (another Ray on the machine is left alone), it runs as
# `ray start --block` and stops with it, and it is stopped by its own process id, never by `ray stop`.
set -euo pipefail
cd "$(dirname "$0")/.."
export GENERATED_MODELS_DIR="${GENERATED_MODELS_DIR:-$PWD/generated_models}"
export RAY_USAGE_STATS_ENABLED=0
# The same glibc malloc settings serve_config.yaml gives the replicas, for Ray's own processes (the HTTP proxy).
export MALLOC_MMAP_THRESHOLD_=1048576 MALLOC_ARENA_MAX=2 MALLOC_TRIM_THRESHOLD_=33554432
mkdir -p "$GENERATED_MODELS_DIR"
cpus="${RAY_NUM_CPUS:-$(nproc)}"
store="${RAY_OBJECT_STORE_BYTES:-2000000000}"
port="${SERVE_PORT:-8000}"
temp_dir="$(mktemp -d /tmp/ray-tree-detection.XXXXXX)"
free_ports() { .venv/bin/python -c 'import socket
socks = [socket.socket() for _ in range(int(__import__("sys").argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))' "$1"; }
read -r gcs_port client_port agent_port < <(free_ports 3)
# Ray's token authentication, with a token of this run: Ray would otherwise share ~/.ray/auth_token with every Ray of
# the user, and a client given an address does not always find it.
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN="$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')"
export RAY_AUTH_TOKEN
ray_pid="" serve_pid=""

stop() {
  trap - EXIT INT TERM
  # Serve first (SIGINT: `serve run` shuts its apps down and exits 0), then Ray (`ray start --block` ends its
  # processes on SIGTERM). Each runs in a process group of its own (set -m below): kill the group, wait for it.
  if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
    kill -INT -- "-$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
  fi
  if [ -n "$ray_pid" ] && kill -0 "$ray_pid" 2>/dev/null; then
    kill -TERM "$ray_pid" 2>/dev/null || true
    wait "$ray_pid" 2>/dev/null || true
  fi
  rm -rf "$temp_dir"
  echo "Stopped Serve and Ray."
  exit "${1:-0}"
}
# A Ctrl-C or a TERM while Serve runs in the background, or the end of the script: stop, and exit 0 (or the
# status of what failed).
trap 'stop 0' INT TERM
trap 'stop $?' EXIT

# Job control: every command started below runs in a process group of its own. A Ctrl-C at a terminal reaches
# only the foreground job: `serve run`, never Ray's processes (which would each print a stack dump), nor this
# script or make (which would report "Error 130").
set -m
.venv/bin/ray start --head --block --num-cpus="$cpus" --object-store-memory="$store" --include-dashboard=false \
  --port="$gcs_port" --ray-client-server-port="$client_port" --dashboard-agent-listen-port="$agent_port" \
  --temp-dir="$temp_dir" --disable-usage-stats >"$temp_dir/ray-start.log" 2>&1 </dev/null &
ray_pid=$!
until grep -q "Ray runtime started" "$temp_dir/ray-start.log" 2>/dev/null; do
  if ! kill -0 "$ray_pid" 2>/dev/null; then
    cat "$temp_dir/ray-start.log" >&2
    echo "Ray did not start (log above)." >&2
    exit 1
  fi
  sleep 0.5
done
sed "s/^  port: 8000$/  port: $port/" serve_config.yaml >"$temp_dir/serve_config.yaml"
if ! grep -q "^  port: $port$" "$temp_dir/serve_config.yaml"; then
  echo "serve_config.yaml has no '  port: 8000' line to set SERVE_PORT in" >&2
  exit 1
fi
echo "Ray: $cpus CPUs, object store $store bytes. Serving on http://127.0.0.1:$port (docs: /docs, tuning page: /ui/); Ctrl-C stops."
export RAY_ADDRESS="127.0.0.1:$gcs_port"
if [ -t 0 ]; then
  # At a terminal: a foreground job, so Ctrl-C goes to `serve run` alone; it shuts Serve down and returns 0.
  .venv/bin/serve run "$temp_dir/serve_config.yaml"
else
  # No terminal (a supervisor, a test): in the background and waited for, so a signal to this script reaches the
  # trap at once (bash runs traps only between commands).
  .venv/bin/serve run "$temp_dir/serve_config.yaml" </dev/null &
  serve_pid=$!
  wait "$serve_pid"
fi
