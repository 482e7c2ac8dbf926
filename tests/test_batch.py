"""`mcp-loco batch` at scale: explorations at once on an endpoint, the index, the summary, Ctrl-C, two runs at once.

The endpoint is a real HTTP server on 127.0.0.1 answering every request after a fixed latency
(benchmarks/scripted_endpoint.py), and every batch is a real `mcp-loco` process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from batch_helpers import FAIL, ScriptedEndpoint, batch, batch_args, clean_env, index_lines, write_queries

from mcp_loco.batch import read_queries

LATENCY = 0.5


@pytest.fixture
def endpoint() -> Iterator[ScriptedEndpoint]:
    with ScriptedEndpoint(LATENCY) as ep:
        yield ep


def run_seconds(stderr: str) -> float:
    """The run's own time from its summary line (process start-up left out)."""
    m = re.search(r"failed, in (\d+\.\d)s", stderr)
    assert m, stderr
    return float(m.group(1))


def first_turns(ep: ScriptedEndpoint) -> int:
    """Conversations the endpoint served: prompts that hold no tool result yet."""
    return sum(1 for p in ep.prompts if p.count("<|im_start|>assistant") == 1)


def wait_for(check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_parallel_4_takes_under_40_percent_of_the_sequential_time(
    endpoint: ScriptedEndpoint, sample_repo: Path, tmp_path: Path
) -> None:
    queries = write_queries(tmp_path / "q.txt", 8)
    out = tmp_path / "out"
    done = batch(*batch_args(sample_repo, queries, out, "--endpoint", endpoint.url, "--parallel", "4", "-q")[1:])
    assert done.returncode == 0, done.stderr
    assert "batch: 8 answered, 0 skipped (already answered), 0 failed" in done.stderr
    # Run one after another, the requests could not overlap: the sequential time is at least their latencies.
    sequential_floor = endpoint.requests * LATENCY
    assert endpoint.requests >= 16  # a forced tool call and the report, per query
    assert run_seconds(done.stderr) <= 0.4 * sequential_floor
    assert endpoint.max_in_flight >= 3
    assert first_turns(endpoint) == 8  # each query explored once
    records = index_lines(out)
    assert sorted(r["id"] for r in records) == [f"q{i:02d}" for i in range(1, 9)]
    assert sorted(p.name for p in out.iterdir()) == sorted(["index.jsonl", *(f"q{i:02d}.md" for i in range(1, 9))])


@pytest.mark.slow
def test_parallel_1_runs_one_at_a_time(endpoint: ScriptedEndpoint, sample_repo: Path, tmp_path: Path) -> None:
    queries = write_queries(tmp_path / "q.txt", 3)
    done = batch(*batch_args(sample_repo, queries, tmp_path / "out", "--endpoint", endpoint.url, "--parallel", "1")[1:])
    assert done.returncode == 0, done.stderr
    assert endpoint.max_in_flight == 1
    assert [r["id"] for r in index_lines(tmp_path / "out")] == ["q01", "q02", "q03"]  # file order
    # The progress bar: answered / failed / running, and tqdm's elapsed<remaining.
    assert re.search(r"answered \d, failed 0, running [01]", done.stderr), done.stderr
    assert re.search(r"\d\d:\d\d<\d\d:\d\d", done.stderr), done.stderr
    # The default is the pool's size (server.parallel): 2 here.
    endpoint.reset()
    more = write_queries(tmp_path / "more.txt", 4, prefix="m")
    done = batch(
        *batch_args(sample_repo, more, tmp_path / "out", "--endpoint", endpoint.url, "--set", "server.parallel=2")[1:]
    )
    assert done.returncode == 0, done.stderr
    assert endpoint.max_in_flight == 2


@pytest.mark.slow
def test_index_holds_one_line_per_answer_with_what_happened(
    endpoint: ScriptedEndpoint, sample_repo: Path, tmp_path: Path
) -> None:
    queries = tmp_path / "q.txt"
    queries.write_text(f"a1\tWhere is load_config?\nbad\tPlease {FAIL} now\na2\tWhat does main do?\n")
    out = tmp_path / "out"
    done = batch(*batch_args(sample_repo, queries, out, "--endpoint", endpoint.url, "--parallel", "2")[1:])
    # A query that fails is recorded and the run goes on.
    assert done.returncode == 1, done.stderr
    assert "2 answered, 0 skipped (already answered), 1 failed" in done.stderr
    assert "Traceback" not in done.stderr
    records = {r["id"]: r for r in index_lines(out)}
    assert set(records) == {"a1", "a2", "bad"}
    bad = records["bad"]
    assert bad["status"] == "failed" and "HTTP 400" in bad["error"] and not (out / "bad.md").exists()
    a1 = records["a1"]
    assert a1["status"] == "answered" and a1["query"] == "Where is load_config?"
    assert a1["stop_reason"] == "answered" and a1["turns"] == 2
    assert a1["citations"]["verified"] and a1["citations"]["unverified"][0]["cite"] == "/nonexistent/invented.py"
    assert set(a1["quotes"]) == {"verified", "unverified"}
    assert a1["usage"]["prompt_tokens"] > 0 and a1["usage"]["completion_tokens"] > 0
    assert a1["endpoint"] == endpoint.url and 2 * LATENCY <= a1["seconds"] < 30
    # The summary adds it up.
    summary = batch("batch", "--summary", str(out))
    assert summary.returncode == 0, summary.stderr
    text = summary.stdout
    assert "answered: 2" in text and "failed: 1" in text
    assert "verified citations: 2 of 4 (50%)" in text
    tokens = sum(r["usage"]["prompt_tokens"] for r in records.values() if "usage" in r)
    assert f"tokens: {tokens:,} prompt" in text
    assert re.search(r"wall time: \d+\.\d s", text)
    # A rerun tries the failed query again and skips the answered ones; the summary counts it by its last line.
    queries.write_text("a1\tWhere is load_config?\nbad\tfixed now\na2\tWhat does main do?\n")
    done = batch(*batch_args(sample_repo, queries, out, "--endpoint", endpoint.url)[1:])
    assert done.returncode == 0 and "1 answered, 2 skipped (already answered), 0 failed" in done.stderr
    assert len(index_lines(out)) == 4
    assert "answered: 3\nfailed: 0" in batch("batch", "--summary", str(out)).stdout


@pytest.mark.slow
def test_ctrl_c_stops_every_exploration_and_keeps_the_finished_answers(
    endpoint: ScriptedEndpoint, sample_repo: Path, tmp_path: Path
) -> None:
    queries = write_queries(tmp_path / "q.txt", 12)
    out = tmp_path / "out"
    args = batch_args(sample_repo, queries, out, "--endpoint", endpoint.url, "--parallel", "3")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    try:
        wait_for(lambda: len(index_lines(out)) >= 2)
        wait_for(lambda: endpoint.in_flight >= 2)  # explorations are running right now
        proc.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert time.monotonic() - stopped < 10  # stopped, not left to finish the queue
    assert "interrupted" in stderr and "Traceback" not in stderr
    answers = sorted(out.glob("*.md"))
    records = index_lines(out)
    assert 2 <= len(answers) < 12
    assert sorted(r["id"] for r in records) == sorted(a.stem for a in answers)
    for a in answers:  # every answer kept is whole
        assert a.read_text().rstrip().endswith("s_"), a
    assert not list(out.glob("*.partial"))  # no scratch file left behind
    # The next run answers only what is left.
    done = batch(*batch_args(sample_repo, queries, out, "--endpoint", endpoint.url, "--parallel", "4")[1:])
    assert done.returncode == 0, done.stderr
    assert f"{12 - len(answers)} answered, {len(answers)} skipped" in done.stderr
    assert len(index_lines(out)) == 12


@pytest.mark.slow
def test_two_runs_on_one_out_never_answer_a_query_twice(
    endpoint: ScriptedEndpoint, sample_repo: Path, tmp_path: Path
) -> None:
    queries = write_queries(tmp_path / "q.txt", 10)
    out = tmp_path / "out"
    args = batch_args(sample_repo, queries, out, "--endpoint", endpoint.url, "--parallel", "2", "-q")
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    answered = [int(re.search(r"batch: (\d+) answered", err).group(1)) for _, err in results]  # type: ignore[union-attr]
    assert sum(answered) == 10 and all(answered)  # both worked, neither redid the other's
    assert first_turns(endpoint) == 10
    records = index_lines(out)
    assert sorted(r["id"] for r in records) == [f"q{i:02d}" for i in range(1, 11)]
    assert not list(out.glob("*.partial"))


@pytest.mark.parametrize(
    ("content", "flags", "needle"),
    [
        (b"q1\tcaf\xe9 au lait\n", (), "line 1: not UTF-8"),
        (b"q1\tfine\nq2\t\xff\xfe\n", (), "line 2: not UTF-8"),
        (b"q1\tnul\x00byte\n", (), "NUL byte"),
        (b"q1 no tab\n", (), "expected id<TAB>query"),
        (b"", (), "no queries in it"),
        (b"# only a comment\n\n", (), "no queries in it"),
        (b"\xef\xbb\xbf\xef\xbb\xbfq1\tdouble mark\n", (), "must be letters"),
        (b"q1\tfine\n", ("--parallel", "0"), "--parallel 0"),
        (b"q1\tfine\n", ("--parallel", "-2"), "--parallel -2"),
    ],
)
def test_bad_input_gets_one_clear_line(
    sample_repo: Path, tmp_path: Path, content: bytes, flags: tuple[str, ...], needle: str
) -> None:
    queries = tmp_path / "q.txt"
    queries.write_bytes(content)
    done = batch(*batch_args(sample_repo, queries, tmp_path / "out", "--endpoint", "http://127.0.0.1:9/v1", *flags)[1:])
    assert done.returncode == 2
    assert needle in done.stderr and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [done.stderr.strip()]


@pytest.mark.slow
def test_bad_paths_get_one_clear_line(sample_repo: Path, tmp_path: Path) -> None:
    queries = write_queries(tmp_path / "q.txt", 1)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # reading it would block for ever
    cases = [
        (batch_args(tmp_path / "nowhere", queries, tmp_path / "o1"), "--root"),
        (batch_args(sample_repo, tmp_path / "none.txt", tmp_path / "o2"), "cannot read it"),
        (batch_args(sample_repo, tmp_path, tmp_path / "o3"), "not a regular file"),
        (batch_args(sample_repo, fifo, tmp_path / "o4"), "not a regular file"),
        (batch_args(sample_repo, queries, queries), "--out"),
        (["", "batch", "--summary", str(tmp_path / "nothing")], "--summary"),
        (["", "batch", "--summary", str(sample_repo)], "no index.jsonl"),
        (["", "batch", "--root", str(sample_repo)], "batch needs --queries, --out"),
    ]
    for args, needle in cases:
        done = batch(*args[1:])
        assert done.returncode == 2, (args, done.stderr)
        assert needle in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
        assert done.stderr.startswith("error:") and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_byte_order_mark_and_crlf_line_ends_are_read_as_editors_mean_them(tmp_path: Path) -> None:
    queries = tmp_path / "q.txt"
    queries.write_bytes("\ufeffq1\tWhere is café defined?\r\nq2\tsecond\r\n".encode())
    assert read_queries(queries) == [("q1", "Where is café defined?"), ("q2", "second")]
