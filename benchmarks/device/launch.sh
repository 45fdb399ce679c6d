#!/usr/bin/env bash
# Start one background training run per line of a config file ("name|extra train flags"), all on
# the same GPU at once. Runs outlive the calling shell (setsid) so a sweep can span several calls
# to a lent machine. Usage: launch.sh CONFIGS DATASET RUNS_DIR
set -euo pipefail
configs=$1 data=$2 runs=$3
mkdir -p "$runs"
while IFS='|' read -r name flags; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  # shellcheck disable=SC2086
  setsid nohup python3 -m logitrec train --data "$data" --out "$runs/$name" --force -q \
    --device cuda --threads 1 $flags >"$runs/$name.log" 2>&1 </dev/null &
  echo "started $name: $flags"
done <"$configs"
