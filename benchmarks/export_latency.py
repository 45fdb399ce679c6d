"""Encoder latency, PyTorch vs ONNX Runtime, at batch 1 / 8 / 32 on real ML-1M histories.

    python benchmarks/export_latency.py --model scratch=artifacts/quality/scratch-default-60min \
        --model minilm=artifacts/quality/minilm-8min

Each checkpoint is exported (python-backend configs, into benchmarks/scratch/export-repo), the
export's parity result is recorded, then both runtimes encode the same histories: median and
p90 over repeated calls after warm-up, on this machine's threads. For a GPT-2 (scratch) model
the encoder as it was before the newest-state graph (the backbone's full forward, every
position through every layer) is exported beside it and timed in the same run. Writes
benchmarks/results/export.{json,md,png}.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from export.graphs import Encoder
from export.onnx_graphs import export_encoder
from logitrec import repository as layout
from logitrec.triton_local import load_model, run_triton
from training.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BATCHES = (1, 8, 32)


def export(name: str, checkpoint: Path, repository: Path) -> dict:
    command = [
        sys.executable, "-m", "logitrec", "export", "--checkpoint", str(checkpoint),
        "--repository", str(repository), "--name", name, "--triton-backend", "python", "--force",
        "--version", "1",
    ]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"export of {checkpoint} failed:\n{result.stderr[-3000:]}")
    summary = json.loads(result.stdout)
    summary["export_seconds"] = round(time.perf_counter() - started, 1)
    return summary


def timed(function, repeats: int) -> tuple[float, float]:
    for _ in range(3):
        function()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return float(np.median(samples) * 1000), float(np.percentile(samples, 90) * 1000)


def measure(name: str, checkpoint: Path, repository: Path, repeats: int) -> dict:
    import onnxruntime

    model, _ = load_checkpoint(checkpoint)
    encoder = Encoder(model).eval()
    full_forward = None
    if encoder.newest_only:
        reference = Encoder(model).eval()
        reference.newest_only = False
        path = repository / f"{name}_full_forward_encoder.onnx"
        export_encoder(reference, path)
        full_forward = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    version = layout.scorer_dir(repository, name, 1)
    histories = np.load(version / layout.PARITY_HISTORIES)
    context = np.load(version / layout.PARITY_CONTEXT)
    session = onnxruntime.InferenceSession(
        str(layout.model_file(repository, name, "encoder", 1)), providers=["CPUExecutionProvider"]
    )
    rows = []
    for batch in BATCHES:
        items = histories[np.arange(batch) % len(histories)]
        ctx = context[np.arange(batch) % len(context)]
        feed = {"items": items}
        if ctx.shape[1]:
            feed["context"] = ctx
        items_t, ctx_t = torch.as_tensor(items), torch.as_tensor(ctx) if ctx.shape[1] else None

        def run_torch(items_t=items_t, ctx_t=ctx_t):
            with torch.no_grad():
                encoder(items_t, ctx_t)

        def run_onnx(feed=feed):
            session.run(None, feed)

        torch_ms, torch_p90 = timed(run_torch, repeats)
        onnx_ms, onnx_p90 = timed(run_onnx, repeats)
        before = {}
        if full_forward is not None:
            full_ms, _ = timed(lambda feed=feed: full_forward.run(None, feed), repeats)
            before = {
                "onnxruntime_full_forward_ms": round(full_ms, 2),
                "newest_state_speedup": round(full_ms / onnx_ms, 2),
            }
        rows.append(
            {
                "batch": batch,
                "history_length": int(items.shape[1]),
                "torch_ms": round(torch_ms, 2),
                "torch_p90_ms": round(torch_p90, 2),
                "onnxruntime_ms": round(onnx_ms, 2),
                "onnxruntime_p90_ms": round(onnx_p90, 2),
                "speedup": round(torch_ms / onnx_ms, 2),
                **before,
            }
        )
        print(name, rows[-1], flush=True)
    return {
        "rows": rows,
        "encoder_onnx_bytes": layout.model_file(repository, name, "encoder", 1).stat().st_size,
    }


def triton_check(repository: Path, names: list[str], checkpoints: dict[str, Path]) -> dict:
    """Load every exported model in the real tritonserver (nvidia-pytriton, Python backend) and
    compare its encoder + scorer answers on the parity histories with PyTorch."""
    import tritonclient.grpc as grpcclient

    report = {}
    with run_triton(repository) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for name in names:
            started = time.perf_counter()
            for kind in ("encoder", "scorer"):
                load_model(server, layout.model_name(name, kind), timeout=300)
            load_seconds = time.perf_counter() - started
            version = layout.scorer_dir(repository, name, 1)
            histories = np.load(version / layout.PARITY_HISTORIES)[:16]
            context = np.load(version / layout.PARITY_CONTEXT)[:16]
            inputs = [grpcclient.InferInput("items", list(histories.shape), "INT64")]
            inputs[0].set_data_from_numpy(histories)
            if context.shape[1]:
                inputs.append(grpcclient.InferInput("context", list(context.shape), "INT64"))
                inputs[1].set_data_from_numpy(context)
            vectors = client.infer(f"{name}_encoder", inputs).as_numpy("user_vector")
            model, config = load_checkpoint(checkpoints[name])
            candidates = np.tile(np.arange(1, config.num_items + 1), (len(vectors), 1))
            scorer_inputs = [
                grpcclient.InferInput("user_vector", list(vectors.shape), "FP32"),
                grpcclient.InferInput("candidates", list(candidates.shape), "INT64"),
            ]
            scorer_inputs[0].set_data_from_numpy(vectors)
            scorer_inputs[1].set_data_from_numpy(candidates.astype(np.int64))
            logits = client.infer(f"{name}_scorer", scorer_inputs).as_numpy("logits")
            with torch.no_grad():
                ctx = torch.as_tensor(context) if context.shape[1] else None
                expected = model(torch.as_tensor(histories), ctx).numpy()
            top = np.argsort(-logits, 1)[:, :10]
            expected_top = np.argsort(-expected, 1)[:, :10]
            report[name] = {
                "users": len(histories),
                "load_seconds": round(load_seconds, 1),
                "max_abs_logit_diff": float(np.abs(logits - expected).max()),
                "top10_identical_users": int((top == expected_top).all(1).sum()),
            }
            print(name, "triton", report[name], flush=True)
        client.close()
    return report


def write_report(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "export.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Export: parity and encoder latency (PyTorch vs ONNX Runtime)",
        "",
        f"Machine: {results['machine']}; torch {results['versions']['torch']}, onnxruntime "
        f"{results['versions']['onnxruntime']}; {results['threads']} threads; "
        f"date {results['date']}.",
        f"Command: `{results['command']}`",
        "",
        "Histories are real ML-1M test histories left-padded to each model's window; times are",
        "the median (and p90) of repeated encoder calls after warm-up, same process, same",
        "threads, PyTorch first then ONNX Runtime at each batch size.",
        "",
    ]
    for name, entry in results["models"].items():
        parity = entry["export"]["parity"]
        lines += [
            f"## {name} (`{entry['checkpoint']}`)",
            "",
            f"Parity on {parity['users']} users: max |logit diff| "
            f"{parity['max_abs_logit_diff']:.2g} (tolerance {parity['tolerance']}), top-10 "
            f"identical for {parity['top10_identical_users']}/{parity['users']}, "
            f"passed: {parity['passed']}; FAISS recall@10 {parity.get('faiss_recall@10')}. "
            f"History window {entry['latency']['rows'][0]['history_length']} items. "
            f"Export took {entry['export']['export_seconds']} s; encoder.onnx "
            f"{entry['latency']['encoder_onnx_bytes'] / 1e6:.1f} MB.",
            "",
            "| batch | PyTorch ms (p90) | ONNX Runtime ms (p90) | speed-up |",
            "| --- | --- | --- | --- |",
        ]
        for row in entry["latency"]["rows"]:
            lines.append(
                f"| {row['batch']} | {row['torch_ms']} ({row['torch_p90_ms']}) | "
                f"{row['onnxruntime_ms']} ({row['onnxruntime_p90_ms']}) | {row['speedup']}x |"
            )
        lines.append("")
        rows = [r for r in entry["latency"]["rows"] if "onnxruntime_full_forward_ms" in r]
        if rows:
            lines += [
                "Newest-state encoder (what is exported) vs the backbone's full forward (the",
                "encoder before it), both in ONNX Runtime, same run:",
                "",
                "| batch | full forward ms | newest state ms | speed-up |",
                "| --- | --- | --- | --- |",
                *(
                    f"| {r['batch']} | {r['onnxruntime_full_forward_ms']} | "
                    f"{r['onnxruntime_ms']} | {r['newest_state_speedup']}x |"
                    for r in rows
                ),
                "",
            ]
    if results.get("triton"):
        lines += [
            "## In the real Triton server",
            "",
            "Each export loaded in nvidia-pytriton's tritonserver (Python backend running the",
            "same model.onnx with ONNX Runtime, CPU) and queried over gRPC: encoder, then the",
            "scorer over the whole catalog, against PyTorch on the same real histories.",
            "",
            "| model | load s | users | max abs logit diff | top-10 identical |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, entry in results["triton"].items():
            lines.append(
                f"| {name} | {entry['load_seconds']} | {entry['users']} | "
                f"{entry['max_abs_logit_diff']:.2g} | "
                f"{entry['top10_identical_users']}/{entry['users']} |"
            )
        lines.append("")
    (RESULTS / "export.md").write_text("\n".join(lines))
    plot(results)


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.5), squeeze=False)
    for axis, name in zip(axes[0], models, strict=True):
        rows = results["models"][name]["latency"]["rows"]
        x = np.arange(len(rows))
        axis.bar(x - 0.2, [r["torch_ms"] for r in rows], 0.4, label="PyTorch")
        axis.bar(x + 0.2, [r["onnxruntime_ms"] for r in rows], 0.4, label="ONNX Runtime")
        axis.set_xticks(x, [str(r["batch"]) for r in rows])
        axis.set_xlabel("batch size")
        axis.set_ylabel("encoder latency, ms (median)")
        axis.set_title(name)
        axis.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "export.png", dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="NAME=CHECKPOINT_DIR")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--report-only", action="store_true", help="Re-render from the JSON.")
    parser.add_argument(
        "--triton", action="store_true", help="Also load and query the exports in real Triton."
    )
    args = parser.parse_args()
    if args.report_only:
        write_report(json.loads((RESULTS / "export.json").read_text()))
        return
    if not args.model:
        parser.error("--model NAME=CHECKPOINT_DIR is required")
    repository = REPO / "benchmarks" / "scratch" / "export-repo"
    shutil.rmtree(repository, ignore_errors=True)
    import onnxruntime

    results = {
        "command": "python benchmarks/export_latency.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "models": {},
    }
    for spec in args.model:
        name, checkpoint = spec.split("=", 1)
        checkpoint = Path(checkpoint)
        summary = export(name, checkpoint, repository)
        results["models"][name] = {
            "checkpoint": str(checkpoint),
            "export": summary,
            "latency": measure(name, checkpoint, repository, args.repeats),
        }
    if args.triton:
        checkpoints = {n: Path(e["checkpoint"]) for n, e in results["models"].items()}
        results["triton"] = triton_check(repository, list(results["models"]), checkpoints)
    write_report(results)
    print(f"wrote {RESULTS / 'export.md'}")


if __name__ == "__main__":
    main()
