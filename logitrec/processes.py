"""Stopping child processes politely: SIGTERM, a grace period, then SIGKILL."""

import subprocess


def stop(process: subprocess.Popen, grace_seconds: float = 20.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
