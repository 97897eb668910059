#!/usr/bin/env bash
# `make run`: the service on a local Ray sized for this machine, on the embedded defaults (local storage,
# no cloud account): http://127.0.0.1:8000 (API docs at /docs). Ctrl-C stops Serve and Ray.
#   RAY_NUM_CPUS (default: the machine's cores), RAY_OBJECT_STORE_BYTES (default 2 GB),
#   GENERATED_MODELS_DIR (default ./generated_models) and every variable of the README's configuration table.
set -euo pipefail
cd "$(dirname "$0")/.."
export GENERATED_MODELS_DIR="${GENERATED_MODELS_DIR:-$PWD/generated_models}"
export RAY_USAGE_STATS_ENABLED=0
# The same glibc malloc settings serve_config.yaml gives the replicas, for Ray's own processes (the HTTP proxy).
export MALLOC_MMAP_THRESHOLD_=1048576 MALLOC_ARENA_MAX=2 MALLOC_TRIM_THRESHOLD_=33554432
mkdir -p "$GENERATED_MODELS_DIR"
cpus="${RAY_NUM_CPUS:-$(nproc)}"
store="${RAY_OBJECT_STORE_BYTES:-2000000000}"
temp_dir="$(mktemp -d /tmp/ray-tree-detection.XXXXXX)"
serve_pid=""
stop() {
  trap - EXIT INT TERM
  # TERM, not INT: a background job of a script ignores SIGINT. Ray is stopped next anyway.
  if [ -n "$serve_pid" ]; then kill -TERM "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi
  .venv/bin/ray stop --force >/dev/null 2>&1 || true
  rm -rf "$temp_dir"
}
trap stop EXIT INT TERM
.venv/bin/ray start --head --num-cpus="$cpus" --object-store-memory="$store" --include-dashboard=false \
  --temp-dir="$temp_dir" --disable-usage-stats >/dev/null
echo "Ray: $cpus CPUs, object store $store bytes. Serving on http://127.0.0.1:8000 (docs: /docs, tuning page: /ui/); Ctrl-C stops."
# In the background and waited for, so a TERM or Ctrl-C reaches the trap at once and stops Serve, then Ray.
RAY_ADDRESS=auto .venv/bin/serve run serve_config.yaml &
serve_pid=$!
wait "$serve_pid"
