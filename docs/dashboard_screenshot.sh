#!/usr/bin/env bash
# Regenerates docs/optuna_dashboard.png: a 12-trial sweep of blobs_mlp, a real optuna-dashboard
# server on its journal file, and headless Chromium (Debian: apt-get install chromium).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
cd "$work"
python -m toyloops sweep --config blobs_mlp --space mlp --trials 12 --name demo --trainer.max_epochs 4 > sweep.log 2>&1
optuna-dashboard logs/sweeps/demo/study.journal --host 127.0.0.1 --port 6201 > dashboard.log 2>&1 &
server=$!
trap 'kill $server' EXIT
until python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6201/api/meta')" 2>/dev/null; do
  kill -0 $server
  sleep 0.5
done
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,1000 \
  --virtual-time-budget=20000 --screenshot="$repo/docs/optuna_dashboard.png" "http://127.0.0.1:6201/dashboard/studies/0"
