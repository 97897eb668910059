#!/usr/bin/env bash
# `make run`: detect trees in IMAGE (default: a synthetic sample scene) and write JSON + overlay.
# The Ray Serve service replaces this with `serve run serve_config.yaml` (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-generated_models}
mkdir -p "$out"
image=${IMAGE:-}
if [ -z "$image" ]; then
  image="$out/sample_scene.png"
  [ -f "$image" ] || .venv/bin/python scripts/make_sample.py "$image" --size 1024
  : "${REAL_WIDTH:=102.4}" "${REAL_HEIGHT:=102.4}" "${DETECT_ARGS:=--cluster-threshold 0 --min-diameter 2}"
fi
.venv/bin/python -m treecore detect "$image" \
  --real-width "${REAL_WIDTH:-100}" --real-height "${REAL_HEIGHT:-100}" --tiles "${TILES:-4}" \
  -o "$out/trees.json" --overlay "$out/overlay.png" ${DETECT_ARGS:-}
echo "trees: $out/trees.json  overlay: $out/overlay.png"
