# A further sweep round on the same warm machine (calls 4 and 5): launch, wait, collect to $OUT.
# Usage: WAIT_SECONDS=330 bash benchmarks/device/sweep_round.sh sweep2.txt runs2
set -u
configs=$1 runs=$2
count=$(grep -cv '^#' "benchmarks/device/$configs")
cp "benchmarks/device/$configs" /tmp/w/repo/benchmarks/device/
cd /tmp/w/repo && export PYTHONPATH=/tmp/site
mkdir -p "/tmp/w/$runs"
bash benchmarks/device/launch.sh "benchmarks/device/$configs" /tmp/w/ml-1m "/tmp/w/$runs"
deadline=$((SECONDS + ${WAIT_SECONDS:-300}))
while [ $SECONDS -lt $deadline ] && [ "$(ls /tmp/w/"$runs"/*/metrics.json 2>/dev/null | wc -l)" -lt "$count" ]; do
  sleep 10
done
python3 benchmarks/device/collect.py "/tmp/w/$runs" "$OUT/gpu_$runs.json"
tar -C /tmp/w --exclude='*.safetensors' -czf "$OUT/$runs.tgz" "$runs"
