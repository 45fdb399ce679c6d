"""The main job's last step: start the gateway on an exported repository, ask it for
recommendations through the Python client, print them with titles, stop the gateway.

    python scripts/serve_and_query.py --repository artifacts/model_repository [--users 2]

The histories are real ones: the users the export's parity check used.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from logitrec_client import RecommenderClient


def start_gateway(repository: Path, scratch: Path) -> tuple[subprocess.Popen, int]:
    ready = scratch / "ready.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "logitrec", "serve", "--repository", str(repository),
         "--port", "0", "--metrics-port", "0", "--ready-file", str(ready),
         "--log-level", "warning"],
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the gateway did not start (its log is above)")
        time.sleep(0.1)
    return process, json.loads(ready.read_text())["port"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--users", type=int, default=2)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    scorer = sorted(args.repository.glob("*_scorer/*/manifest.json"))[-1].parent
    catalog = pl.read_parquet(scorer / "catalog.parquet").sort("index")
    ids, titles = catalog["item_id"].to_list(), catalog["title"].to_list()
    histories = np.load(scorer / "parity_histories.npy")[: args.users]
    with tempfile.TemporaryDirectory() as scratch:
        process, port = start_gateway(args.repository, Path(scratch))
        try:
            with RecommenderClient(f"127.0.0.1:{port}") as client:
                info = client.model_info()
                print(f"\ngateway on 127.0.0.1:{port}: {info.model} v{info.model_version}, "
                      f"{info.num_items} items, {info.backend} backend")  # fmt: skip
                for row in histories:
                    history = [ids[i - 1] for i in row if i]
                    recent = "; ".join(titles[i - 1] or ids[i - 1] for i in row[-5:] if i)
                    print(f"\nhistory of {len(history)} items, most recent: {recent}")
                    print(client.recommend(history, k=args.k))
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
