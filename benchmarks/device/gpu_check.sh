#!/usr/bin/env bash
# The GPU serving path, checked end to end on a CUDA machine that cannot reach a package index,
# in at most 8 minutes (every step under `timeout`, later steps skipped past the budget):
#   1. install the carried wheels into a private folder first on PYTHONPATH (the machine's own
#      torch, numpy and CUDA libraries are used as they are)
#   2. data: ML-1M when carried (--data DIR with ml-1m.txt), else `logitrec data synth`
#   3. a checkpoint: --checkpoint DIR when carried, else a quick scratch model trained on the GPU
#   4. export fp32 and fp16 (--device gpu, Triton GPU configs with TensorRT); each export checks
#      its parity with PyTorch and refuses to install on failure
#   5. retrieval: FAISS on the GPU at 1M and 5M items (benchmarks/device/gpu_retrieval.py)
#   6. serving: the gateway on the embedded CUDA backend, fp32 and fp16, loaded by
#      `logitrec bench load`; on Triton too when `tritonserver` is on PATH
#   7. benchmarks/device/gpu_summary.py: throughput at p99 <= 20 ms, parity, FAISS sweep
# Everything lands in one folder: $OUT when set (the lent machine's), else --out: gpu_check.log,
# summary.json and details.tgz (every step's JSON and log).
#
# Usage: bash benchmarks/device/gpu_check.sh [--wheels DIR] [--out DIR] [--data DIR]
#            [--checkpoint DIR] [--python PY] [--cpu]
#   --wheels DIR  the carried wheels (default shared/wheels); docs/gpu.md says how to make them
#   --cpu         a dry run on a machine without a GPU: device cpu, tiny sizes, no wheels
set -uo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
WHEELS=$REPO/shared/wheels DATA="" CHECKPOINT="" PY=python3 CPU=0
OUT_DIR=${OUT:-$REPO/benchmarks/scratch/gpu_check}
while [ $# -gt 0 ]; do
  case $1 in
    --wheels) WHEELS=$2; shift 2 ;;
    --out) OUT_DIR=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --checkpoint) CHECKPOINT=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --cpu) CPU=1; shift ;;
    *) echo "unknown argument $1 (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
exec > >(tee -a "$OUT_DIR/gpu_check.log") 2>&1
BUDGET_SECONDS=${BUDGET_SECONDS:-470}  # 8 minutes, less the summary's few seconds
STARTED=$SECONDS

if [ "$CPU" = 1 ]; then
  DEVICE=cpu SIZES=20000,60000 QUERIES=256 USERS=400 ITEMS=200 EPOCHS=1 CLIENTS=4,16 SECS=2
else
  DEVICE=cuda SIZES=1000000,5000000 QUERIES=4096 USERS=6040 ITEMS=3416 EPOCHS=8 CLIENTS=64,256,1024 SECS=5
fi

# step NAME SECONDS COMMAND...: run under timeout, record rc and time; skipped past the budget
step() {
  local name=$1 limit=$2 started=$SECONDS rc
  shift 2
  if [ $((SECONDS - STARTED + limit)) -gt "$BUDGET_SECONDS" ]; then
    limit=$((BUDGET_SECONDS - (SECONDS - STARTED)))
    if [ "$limit" -lt 10 ]; then
      echo "== $name: skipped (budget spent)"
      echo "{\"step\": \"$name\", \"rc\": null, \"skipped\": true}" >>"$OUT_DIR/steps.jsonl"
      return 1
    fi
  fi
  echo "== $name (at most ${limit}s)"
  timeout --kill-after=5 "$limit" bash -c '"$@"' "$name" "$@"  # functions: exported below
  rc=$?
  echo "== $name: rc $rc after $((SECONDS - started))s"
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - started))}" >>"$OUT_DIR/steps.jsonl"
  return $rc
}

install_wheels() {
  if [ "$CPU" = 1 ]; then return 0; fi
  ls "$WHEELS"/*.whl >/dev/null || { echo "no wheels in $WHEELS (docs/gpu.md)"; return 1; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
    "$WHEELS"/*.whl
}

environment() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
  "$PY" - <<'EOF'
import faiss, onnxruntime, torch
from logitrec.runtime_check import check_runtime
check_runtime()
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
print("faiss", faiss.__version__, "GPUs:", faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0)
print("torch", torch.__version__, "cuda:", torch.cuda.is_available())
EOF
}

prepare_data() {
  if [ -n "$DATA" ] && [ -f "$DATA/ml-1m.txt" ]; then
    "$PY" -m logitrec data prepare "$DATA" --out "$WORK/data" -q
  else
    "$PY" -m logitrec data synth --out "$WORK/raw" --users "$USERS" --items "$ITEMS" &&
      "$PY" -m logitrec data prepare "$WORK/raw" --out "$WORK/data" -q
  fi
}

train() {
  "$PY" -m logitrec train --data "$WORK/data" --out "$WORK/checkpoint" --device "$DEVICE" -q \
    --epochs "$EPOCHS" --max-length 50 --hidden-size 32 --windows newest --valid-users 500
}

export_model() {  # export_model PRECISION
  local extra=()
  [ "$CPU" = 1 ] || extra=(--device gpu --tensorrt)
  "$PY" -m logitrec export --checkpoint "$CHECKPOINT" --repository "$WORK/repository" \
    --name "$1" --version 1 --precision "$1" "${extra[@]}" >"$OUT_DIR/export_$1.json"
}

serve_and_load() {  # serve_and_load LABEL MODEL [serve flags...]: the gateway, then the load
  local label=$1 model=$2 ready=$WORK/ready_$1.json pid port rc
  shift 2
  "$PY" -m logitrec serve --repository "$WORK/repository" --model "$model" --port 0 \
    --no-metrics --ready-file "$ready" "$@" >"$OUT_DIR/gateway_$label.log" 2>&1 &
  pid=$!
  for _ in $(seq 120); do [ -f "$ready" ] || ! kill -0 $pid 2>/dev/null && break; sleep 0.5; done
  if [ ! -f "$ready" ]; then
    echo "gateway $label did not start:"; tail -n 20 "$OUT_DIR/gateway_$label.log"
    kill $pid 2>/dev/null; return 1
  fi
  port=$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['port'])" "$ready")
  "$PY" -m logitrec bench load --target "127.0.0.1:$port" --repository "$WORK/repository" \
    --model "$model" --clients "$CLIENTS" --channels 4 --warmup 1 --duration "$SECS" \
    --out "$OUT_DIR/load_$label.json"
  rc=$?
  kill -TERM $pid 2>/dev/null
  wait $pid 2>/dev/null
  return $rc
}

triton() {  # Triton's native onnxruntime backend on the GPU configs, behind the gateway
  local log=$OUT_DIR/tritonserver.log pid rc
  tritonserver --model-repository "$WORK/repository" --model-control-mode=explicit \
    --load-model='*' --http-port 0 --grpc-port 8001 --metrics-port 0 >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 120); do grep -q "Started GRPCInferenceService" "$log" && break; sleep 0.5; done
  serve_and_load triton_fp32 fp32 --backend triton --triton-url 127.0.0.1:8001
  rc=$?
  kill -TERM $pid 2>/dev/null
  wait $pid 2>/dev/null
  return $rc
}

export REPO WHEELS DATA CHECKPOINT PY CPU OUT_DIR WORK DEVICE SIZES QUERIES USERS ITEMS EPOCHS \
  CLIENTS SECS
export -f install_wheels environment prepare_data train export_model serve_and_load triton
echo "gpu_check: repo $REPO, out $OUT_DIR, device $DEVICE, work $WORK"
step install 60 install_wheels || exit 1
if [ "$CPU" = 1 ]; then
  export PYTHONPATH=$REPO:$REPO/clients/python${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$WORK/site:$REPO:$REPO/clients/python${PYTHONPATH:+:$PYTHONPATH}
fi
cd "$REPO" || exit 1
step environment 30 environment || exit 1
if [ -z "$CHECKPOINT" ]; then
  step data 40 prepare_data && step train 90 train && CHECKPOINT=$WORK/checkpoint
fi
[ -n "$CHECKPOINT" ] || { echo "no checkpoint: stopping"; exit 1; }
step export_fp32 50 export_model fp32
step export_fp16 50 export_model fp16
step retrieval 140 "$PY" benchmarks/device/gpu_retrieval.py --device "$DEVICE" --sizes "$SIZES" \
  --queries "$QUERIES" --out "$OUT_DIR/retrieval_gpu.json"
step serve_fp32 60 serve_and_load "${DEVICE}_fp32" fp32 --device "$DEVICE" --batches-in-flight 2
step serve_fp16 60 serve_and_load "${DEVICE}_fp16" fp16 --device "$DEVICE" --batches-in-flight 2
if command -v tritonserver >/dev/null; then
  step triton 90 triton
else
  echo "== triton: skipped (no tritonserver on PATH)"
fi
"$PY" benchmarks/device/gpu_summary.py "$OUT_DIR"
# A lent machine returns at most 8 files: the log, the summary and one archive of the rest.
(cd "$OUT_DIR" && tar --exclude=gpu_check.log --exclude=summary.json --exclude=details.tgz \
  --remove-files -czf details.tgz -- *)
echo "gpu_check finished in $((SECONDS - STARTED))s; results in $OUT_DIR"
