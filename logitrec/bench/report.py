"""A load run's results: the JSON document, the table on stdout, the PNG."""

import os
import platform
import time
from pathlib import Path

from logitrec.atomic import replacing_file
from logitrec.bench.load import GENERATOR_LAG_SLOP_MS, GENERATOR_LIMITED_SHARE, PERCENTILES


def machine() -> dict:
    """Where the numbers were measured: the load generator shares this machine's CPUs with the
    server whenever the target is local."""
    import grpc

    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
    }


def document(command: str, target: str, settings: dict, runs: list[dict]) -> dict:
    return {
        "command": command,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "target": target,
        "settings": settings,
        "runs": runs,
    }


def load_label(run: dict) -> str:
    if run["offered_rps"] is not None:
        return f"{run['offered_rps']:g} req/s"
    return f"{run['clients']} clients"


def _ms(summary: dict | None, key: str) -> str:
    return "-" if summary is None else f"{summary[key]:.2f}"


def table(results: dict) -> str:
    """One line per run, then a note for each run the generator itself limited."""
    headers = ["load", "requests", "OK/s", "errors", *PERCENTILES, "max", "lag p99"]
    rows = []
    for run in results["runs"]:
        errors = sum(n for code, n in run["status_counts"].items() if code != "OK")
        latency = run["latency_ms"]
        rows.append(
            [load_label(run), str(run["requests"]), f"{run['achieved_rps']:.1f}", str(errors),
             *(_ms(latency, key) for key in PERCENTILES), _ms(latency, "max"),
             _ms(run["generator_lag_ms"], "p99")]
        )  # fmt: skip
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True))
             for line in (headers, *rows)]  # fmt: skip
    lines.append("latency in ms from the intended send time; OK/s: answers inside the window")
    for run in results["runs"]:
        errors = {code: n for code, n in run["status_counts"].items() if code != "OK"}
        if errors:
            lines.append(f"{load_label(run)}: not OK: {errors}")
        if run["generator_limited"]:
            lines.append(
                f"{load_label(run)}: the generator sent late (p99 lag "
                f"{run['generator_lag_ms']['p99']:.2f} ms: over {GENERATOR_LAG_SLOP_MS:g} ms and "
                f">= {GENERATOR_LIMITED_SHARE:.0%} of the p99 latency): it, not only the server, "
                "limited this run"
            )
    return "\n".join(lines)


def write_plot(path: Path, results: dict) -> None:
    """Latency percentiles vs offered load, and throughput vs offered load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    runs = results["runs"]
    open_loop = runs[0]["offered_rps"] is not None
    x = [run["offered_rps"] if open_loop else run["clients"] for run in runs]
    x_label = "offered load, req/s" if open_loop else "closed-loop clients"
    figure, (latency_axis, throughput_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for key in PERCENTILES:
        values = [run["latency_ms"][key] if run["latency_ms"] else None for run in runs]
        latency_axis.plot(x, values, marker="o", label=key)
    latency_axis.set(xlabel=x_label, ylabel="latency, ms (from intended send)", yscale="log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    latency_axis.yaxis.set_major_formatter(plain)
    latency_axis.yaxis.set_minor_formatter(plain)
    latency_axis.legend()
    throughput_axis.plot(x, [run["achieved_rps"] for run in runs], marker="o", label="achieved")
    if open_loop:
        throughput_axis.plot(x, x, linestyle="--", color="grey", label="offered")
    throughput_axis.set(xlabel=x_label, ylabel="OK answers/s")
    throughput_axis.legend()
    figure.suptitle(f"{results['target']}: {results['settings']['mode']} loop", fontsize=10)
    figure.tight_layout()
    with replacing_file(path) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)
