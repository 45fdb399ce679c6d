# Round 4 in one device call: install polars (carried wheels), copy repo and dataset, run
# sweep4.txt on the GPU until done or WAIT_SECONDS, then test-evaluate the best epoch of any run
# the wait cut short, and collect. Carry: .dev/polars artifacts/ml-1m
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .dev/polars/*.whl
mkdir -p /tmp/w/repo
tar --exclude=./.dev --exclude=./artifacts -cf - . | tar -C /tmp/w/repo -xf -
cp -r artifacts/ml-1m /tmp/w/ml-1m
cd /tmp/w/repo && export PYTHONPATH=/tmp/site
nvidia-smi -L
runs=/tmp/w/${RUNS:-runs4} configs=benchmarks/device/${CONFIGS:-sweep4.txt}
count=$(grep -cv '^#' $configs)
bash benchmarks/device/launch.sh $configs /tmp/w/ml-1m $runs
deadline=$((SECONDS + ${WAIT_SECONDS:-420}))
while [ $SECONDS -lt $deadline ] && [ "$(ls $runs/*/metrics.json 2>/dev/null | wc -l)" -lt "$count" ]; do
  sleep 10
done
pkill -f "logitrec train" ; sleep 2
for staging in $runs/.*.tmp-*; do
  [ -f "$staging/model.safetensors" ] || continue
  python3 -m logitrec evaluate --data /tmp/w/ml-1m --checkpoint "$staging" --split test \
    >"$staging/cut_short_test.json" 2>/dev/null
done
python3 benchmarks/device/collect.py $runs "$OUT/gpu_${RUNS:-runs4}.json"
tar -C /tmp/w --exclude='*.safetensors' -czf "$OUT/${RUNS:-runs4}.tgz" "${RUNS:-runs4}"
