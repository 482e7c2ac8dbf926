"""Batch on real engines: two real llama_cpp.server processes as endpoints, and in-process llama.cpp instances.

The model is the small SmolLM2-135M; what is checked is the scheduling (several explorations in
flight, each conversation on one endpoint, each answer indexed), not the answers' quality.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from batch_helpers import LlamaServer, batch, batch_args, clean_env, index_lines, overlapping, write_queries
from llama_server import llama_servers

SMALL = [
    "--set", "model.temperature=0", "--set", "model.max_tokens=64", "--set", "agent.max_turns=1",
    "--set", "agent.task_depth=0", "--set", "agent.deadline_s=120",
]  # fmt: skip


@pytest.fixture(scope="module")
def two_servers(small_model_path: Path) -> Iterator[list[LlamaServer]]:
    with llama_servers(small_model_path) as servers:
        yield servers


def completions(stderr: str) -> list[dict[str, str]]:
    """The http.completion log events (JSON lines on stderr)."""
    events = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "http.completion":
                events.append(event)
    return events


@pytest.mark.model
@pytest.mark.slow
def test_two_real_servers_serve_several_explorations_each_on_one_endpoint(
    two_servers: list[LlamaServer], sample_repo: Path, tmp_path: Path
) -> None:
    queries = write_queries(tmp_path / "q.txt", 3)
    out = tmp_path / "out"
    urls = [s.url for s in two_servers]
    flags = ["--endpoint", urls[0], "--endpoint", urls[1], "--parallel", "3", "-q"]
    flags += ["--set", "http.n_ctx=4096", "--set", "log.json_format=true", "--log-level", "info", *SMALL]
    done = batch(*batch_args(sample_repo, queries, out, *flags)[1:], timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 answered" in done.stderr
    records = index_lines(out)
    assert sorted(r["id"] for r in records) == ["q01", "q02", "q03"]
    assert {r["endpoint"] for r in records} == set(urls)  # both servers did work
    assert overlapping(records) >= 2  # several explorations in flight at once
    by_conversation: dict[str, set[str]] = defaultdict(set)
    for event in completions(done.stderr):
        by_conversation[event["conversation"]].add(event["endpoint"])
    assert len(by_conversation) >= 3
    assert all(len(eps) == 1 for eps in by_conversation.values()), by_conversation  # each sticks to one
    assert {ep for eps in by_conversation.values() for ep in eps} == set(urls)


@pytest.mark.model
@pytest.mark.slow
def test_in_process_instances_run_at_once_and_ctrl_c_stops_them_keeping_the_answers(
    small_model_path: Path, sample_repo: Path, tmp_path: Path
) -> None:
    queries = write_queries(tmp_path / "q.txt", 6)
    out = tmp_path / "out"
    flags = ["--model", str(small_model_path), "--parallel", "2", *SMALL]
    flags += ["--set", "llama.n_ctx=4096", "--set", "llama.n_threads=1", "--set", "llama.n_threads_batch=1"]
    proc = subprocess.Popen(
        batch_args(sample_repo, queries, out, *flags), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=clean_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        # q01 and q02 started at once, one per instance: once both are in, q03 and q04 are running.
        while {"q01", "q02"} - {r["id"] for r in index_lines(out)}:
            assert time.monotonic() < deadline and proc.poll() is None, "no answers in time"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    assert time.monotonic() - stopped < 20 and "Traceback" not in stderr
    answers = sorted(out.glob("*.md"))
    assert 2 <= len(answers) < 6 and not list(out.glob("*.partial"))
    assert sorted(r["id"] for r in index_lines(out)) == sorted(a.stem for a in answers)
    assert all(a.read_text().rstrip().endswith("s_") for a in answers)
    first = [r for r in index_lines(out) if r["id"] in ("q01", "q02")]
    assert sorted(r["endpoint"] for r in first) == ["in-process:1", "in-process:2"]
    assert overlapping(first) == 2  # the two instances ran at once
    assert all((out / f"{r['id']}.md").read_text().startswith(f"# {r['id']}: ") for r in first)
