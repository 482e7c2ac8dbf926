"""benchmarks/gpu.sh, the lent GPU machine's one call: it parses, and every phase keeps to the time left."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def test_the_gpu_scripts_parse() -> None:
    for script in ("gpu.sh", "gpu_pack.sh"):
        done = subprocess.run(["bash", "-n", str(BENCH / script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_a_phase_that_cannot_finish_in_the_time_left_is_skipped_with_a_line(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "GPU_BUDGET_S": "0", "PY": "/bin/false"}
    done = subprocess.run(
        ["bash", str(BENCH / "gpu.sh"), "--cpu-check"], capture_output=True, text=True, env=env, timeout=60
    )
    log = (tmp_path / "gpu.log").read_text()
    assert ": exit " not in log, log  # no phase ran
    if "skipped model: 0s left" in log:  # no 2-layer model yet: nothing to measure, and it says so
        assert done.returncode == 1, log
    else:  # the model of an earlier run is there: each measuring phase is skipped in turn
        assert all(f"skipped {p}: 0s left" in log for p in ("scale", "speculative", "memory")), log
