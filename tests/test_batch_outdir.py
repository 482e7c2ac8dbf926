"""Batch writes only inside `--out`: links, second names, FIFOs and directories planted there are never written through.

Every attack puts a victim file outside `--out` and checks, byte for byte, that it is untouched and
that nothing new appeared outside. The command-line runs are real `mcp-loco batch` processes against
a real HTTP endpoint on 127.0.0.1; the claim mechanism is also attacked directly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from batch_helpers import ScriptedEndpoint, batch, batch_args, index_lines, write_queries

from mcp_loco.batch.outdir import OutDir, OutDirError

VICTIM = "precious: must never change\n"


@pytest.fixture
def endpoint() -> Iterator[ScriptedEndpoint]:
    with ScriptedEndpoint(0.02) as ep:
        yield ep


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside --out with a victim file in it."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "victim").write_text(VICTIM)
    return d


def untouched(outside: Path) -> None:
    assert (outside / "victim").read_text() == VICTIM
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


Plant = Callable[[Path, Path], None]


def symlink(name: str, target: str = "victim") -> Plant:
    return lambda out, outside: (out / name).symlink_to(outside / target)


def hardlink(name: str) -> Plant:
    return lambda out, outside: os.link(outside / "victim", out / name)


def fifo(name: str) -> Plant:
    return lambda out, outside: os.mkfifo(out / name)


def directory(name: str) -> Plant:
    return lambda out, outside: (out / name).mkdir()


# The scratch file is batch's own: whatever sits under its name is dropped (never written) and q01 is answered.
SCRATCH_ATTACKS = {
    "partial -> victim": symlink("q01.md.partial"),
    "partial -> new file outside": symlink("q01.md.partial", "created"),
    "partial -> outside dir": symlink("q01.md.partial", "."),
    "partial second name of victim": hardlink("q01.md.partial"),
    "partial is a fifo": fifo("q01.md.partial"),
}

# An answer's name or the index holding something else: refused with a clear message, nothing written through.
REFUSED = {
    "answer -> victim": (symlink("q01.md"), "out/q01.md ", "is a symbolic link, not an answer"),
    "answer -> new file outside": (symlink("q01.md", "created"), "out/q01.md ", "is a symbolic link"),
    "answer is a directory": (directory("q01.md"), "out/q01.md ", "is a directory"),
    "partial is a directory": (directory("q01.md.partial"), "out/q01.md.partial ", "is a directory"),
}

INDEX_ATTACKS = {
    "index -> victim": (symlink("index.jsonl"), "is a symbolic link"),
    "index -> new file outside": (symlink("index.jsonl", "created"), "is a symbolic link"),
    "index second name of victim": (hardlink("index.jsonl"), "a file with 2 names"),
    "index is a directory": (directory("index.jsonl"), "is a directory"),
}


def run(endpoint: ScriptedEndpoint, repo: Path, tmp_path: Path, out: Path) -> tuple[int, str]:
    queries = write_queries(tmp_path / "q.txt", 3)
    done = batch(*batch_args(repo, queries, out, "--endpoint", endpoint.url, "--parallel", "2", "-q")[1:])
    return done.returncode, done.stderr


@pytest.mark.parametrize("plant", SCRATCH_ATTACKS.values(), ids=SCRATCH_ATTACKS.keys())
def test_a_planted_scratch_file_is_never_written_through(
    plant: Plant, endpoint: ScriptedEndpoint, sample_repo: Path, tmp_path: Path, outside: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    plant(out, outside)
    code, stderr = run(endpoint, sample_repo, tmp_path, out)
    untouched(outside)
    assert code == 0, stderr
    assert "3 answered" in stderr and "Traceback" not in stderr
    assert (out / "q01.md").read_text().startswith("# q01: ") and not (out / "q01.md").is_symlink()
    assert not list(out.glob("*.partial"))


@pytest.mark.parametrize(("plant", "where", "needle"), REFUSED.values(), ids=REFUSED.keys())
def test_a_planted_answer_name_fails_that_query_only(
    plant: Plant, where: str, needle: str, endpoint: ScriptedEndpoint, sample_repo: Path, tmp_path: Path, outside: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    plant(out, outside)
    code, stderr = run(endpoint, sample_repo, tmp_path, out)
    untouched(outside)
    assert code == 1 and "2 answered" in stderr and "1 failed" in stderr, stderr
    assert "Traceback" not in stderr
    failed = [r for r in index_lines(out) if r["status"] == "failed"]
    assert [r["id"] for r in failed] == ["q01"]
    assert where in failed[0]["error"] and needle in failed[0]["error"] and "remove it" in failed[0]["error"]


@pytest.mark.parametrize(("plant", "needle"), INDEX_ATTACKS.values(), ids=INDEX_ATTACKS.keys())
def test_a_planted_index_stops_the_run_before_any_work(
    plant: Plant, needle: str, endpoint: ScriptedEndpoint, sample_repo: Path, tmp_path: Path, outside: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    plant(out, outside)
    code, stderr = run(endpoint, sample_repo, tmp_path, out)
    untouched(outside)
    assert code == 2 and "Traceback" not in stderr
    assert stderr.startswith("error:") and "index.jsonl" in stderr and needle in stderr, stderr
    assert endpoint.requests == 0 and not list(out.glob("*.md"))


def test_a_summary_never_reads_through_a_planted_index(tmp_path: Path, outside: Path) -> None:
    (outside / "victim").write_text('{"id": "x", "status": "answered"}\n')
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.jsonl").symlink_to(outside / "victim")
    done = batch("batch", "--summary", str(out))
    assert done.returncode == 2 and "is a symbolic link" in done.stderr and "Traceback" not in done.stderr


# ---- the mechanism, attacked directly ----------------------------------------------------------------


def test_the_folder_is_held_by_descriptor_when_out_is_swapped_for_a_link(tmp_path: Path, outside: Path) -> None:
    out = tmp_path / "out"
    with OutDir(out) as folder:
        index = folder.open_index()
        # Mid-run, --out is moved away and a link to the outside put in its place.
        out.rename(tmp_path / "moved")
        out.symlink_to(outside)
        claim = folder.claim("q1")
        assert claim is not None
        with claim:
            claim.commit("answer\n")
        index.append('{"id": "q1"}')
        index.close()
    untouched(outside)
    assert (tmp_path / "moved/q1.md").read_text() == "answer\n"
    assert (tmp_path / "moved/index.jsonl").read_text() == '{"id": "q1"}\n'


def test_a_claim_excludes_every_other_claim_and_a_dead_runs_scratch_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OutDir(out) as one, OutDir(out) as two:
        held = one.claim("q1")
        assert held is not None
        assert two.claim("q1") is None  # another run (another open file) holds it
        assert one.claim("q1") is None  # and so does this run's own second attempt
        held.release()
        assert not (out / "q1.md.partial").exists()  # a query let go leaves no scratch file
        (out / "q2.md.partial").write_text("half an answer from a run that died\n")
        taken = two.claim("q2")
        assert taken is not None
        with taken:
            taken.commit("whole\n")
        assert (out / "q2.md").read_text() == "whole\n"
        assert one.claim("q2") is None  # answered: nothing to claim
        assert one.answered("q2") and not one.answered("q1")


def test_a_link_swapped_in_for_the_answer_during_the_run_is_replaced_not_followed(
    tmp_path: Path, outside: Path
) -> None:
    out = tmp_path / "out"
    with OutDir(out) as folder:
        claim = folder.claim("q1")
        assert claim is not None
        (out / "q1.md").symlink_to(outside / "victim")  # planted while the query is explored
        with claim:
            claim.commit("answer\n")
    untouched(outside)
    assert (out / "q1.md").read_text() == "answer\n" and not (out / "q1.md").is_symlink()


def test_an_answer_name_that_is_a_link_is_refused_at_claim(tmp_path: Path, outside: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "q1.md").symlink_to(outside / "victim")
    with OutDir(out) as folder:
        with pytest.raises(OutDirError, match="symbolic link, not an answer"):
            folder.claim("q1")
        assert not folder.answered("q1")
    untouched(outside)
