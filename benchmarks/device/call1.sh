# Device call 1 of 3: install polars, copy the repo and the dataset to /tmp, start the sweep.
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .dev/polars/*.whl
mkdir -p /tmp/w/repo /tmp/w/parts
tar --exclude=./.dev --exclude=./artifacts -cf - . | tar -C /tmp/w/repo -xf -
cp -r artifacts/ml-1m /tmp/w/ml-1m
cd /tmp/w/repo
export PYTHONPATH=/tmp/site
nvidia-smi -L
python3 -c "import torch, polars, transformers; print(torch.__version__, polars.__version__, transformers.__version__, torch.cuda.get_device_name())"
bash benchmarks/device/launch.sh benchmarks/device/sweep.txt /tmp/w/ml-1m /tmp/w/runs
sleep 45
tail -n 3 /tmp/w/runs/*.log
python3 benchmarks/device/collect.py /tmp/w/runs /tmp/w/progress.json
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
