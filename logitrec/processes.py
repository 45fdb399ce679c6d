"""Child processes: stopping them politely (SIGTERM, a grace period, then SIGKILL), and
measuring them as the benchmarks do (wall time, the kernel's own peak RSS)."""

import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stop(process: subprocess.Popen, grace_seconds: float = 20.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_measured(command: list[str], log_path: Path) -> dict:
    """Run `command` from the repository root, output to `log_path`; SystemExit with the log's
    end when it fails. Returns its wall seconds and peak RSS in GB."""
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        # wait4 reaps the child and reports its own peak RSS (kilobytes on Linux).
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        tail = Path(log_path).read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(map(str, command[:6]))} ... failed:\n{tail}")
    return {"wall_seconds": round(wall, 1), "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 2)}


def memory_gb(pid: int) -> dict:
    """A running process's resident memory now and at its peak so far (Linux /proc)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024**2, 2)
    return {"rss_gb": fields.get("VmRSS"), "peak_rss_gb": fields.get("VmHWM")}
