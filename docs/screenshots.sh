#!/usr/bin/env bash
# Regenerates docs/tensorboard_*.png from the current code: one Lightning run and one hand-loop run
# of blobs_mlp, a real TensorBoard server, and headless Chromium (Debian: apt-get install chromium).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
cd "$work"
args=(fit --config "$repo/configs/blobs_mlp.yaml" --trainer.enable_progress_bar false --dashboard.boundary_every_n_epochs 2)
python "$repo/train.py" "${args[@]}" > /dev/null
python -m toyloops loop "${args[@]}" > /dev/null
python -m tensorboard.main --logdir logs --host 127.0.0.1 --port 6200 > tensorboard.log 2>&1 &
server=$!
trap 'kill $server' EXIT
sleep 6
shoot() { chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="$1" \
  --virtual-time-budget=20000 --screenshot="$repo/docs/$2" "http://127.0.0.1:6200/?darkMode=false#$3"; }
shoot 1400,1000 tensorboard_scalars.png "scalars&tagFilter=val%2F"
shoot 1400,900 tensorboard_boundary.png "images&tagFilter=decision_boundary"
