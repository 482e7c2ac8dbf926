"""Batch mode: a file of `id<TAB>query` lines in, one markdown answer per query out, several explorations at once.

Queries are taken in file order by `parallel` worker threads, each with its own explorer on a slot of
the model pool (in-process llama instances, or one HTTP client whose conversations each stick to an
endpoint). A failed query is recorded and the run goes on; Ctrl-C stops every exploration and keeps
the answers already written.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import structlog
from tqdm import tqdm

from mcp_loco.batch import index
from mcp_loco.batch.outdir import Index, OutDir
from mcp_loco.batch.queries import read_queries
from mcp_loco.config import Settings
from mcp_loco.errors import Cancelled, ConfigError, LocoError
from mcp_loco.explore.agent import Explorer
from mcp_loco.explore.report import ExploreResult
from mcp_loco.model.pool import Instances

log = structlog.get_logger("mcp_loco.batch")
_TICK_S = 0.1
_STOP_WAIT_S = 30.0
"""After Ctrl-C, how long the explorations get to let go of their models (they stop within about a second)."""


@dataclass
class Summary:
    """What a batch run did."""

    answered: int = 0
    skipped: int = 0
    elsewhere: int = 0
    failed: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    def line(self) -> str:
        """One summary line."""
        other = f"{self.elsewhere} left to another run on the same --out, " if self.elsewhere else ""
        stopped = " (interrupted: the answers written so far are kept)" if self.interrupted else ""
        return (
            f"batch: {self.answered} answered, {self.skipped} skipped (already answered), {other}"
            f"{self.failed} failed, in {self.seconds:.1f}s{stopped}"
        )


def render_answer(qid: str, query: str, result: ExploreResult) -> str:
    """The markdown file for one answer."""
    unverified = sum(1 for c in result.citations if not c.verified)
    return (
        f"# {qid}: {query}\n\n{result.report.rstrip()}\n\n---\n"
        f"_mcp-loco: {result.turns} turns, stop: {result.stop_reason}, {len(result.citations)} citations "
        f"({unverified} unverified), {result.elapsed_s:.1f}s_\n"
    )


def _endpoint(explorer: Explorer, slot: int) -> str:
    """Where the exploration ran: the HTTP endpoint of its conversation, or the in-process slot."""
    last = getattr(explorer.model, "last_endpoint", None)
    url = last() if callable(last) else None
    return str(url) if url else f"in-process:{slot}"


class _Run:
    """The shared state of one run: the queue, the counts, the stop flag."""

    def __init__(self, settings: Settings, root: Path, out: OutDir, idx: Index, todo: list[tuple[str, str]]) -> None:
        self.settings, self.root, self.out, self.index = settings, root, out, idx
        self.queue = deque(todo)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.summary = Summary()
        self.running = 0

    def next(self) -> tuple[str, str] | None:
        """The next query in file order, or None when none is left or the run stops."""
        with self.lock:
            return self.queue.popleft() if self.queue and not self.stop.is_set() else None

    def count(self, what: str, delta: int = 1) -> None:
        """Add to a count of the summary (or to the explorations running)."""
        with self.lock:
            if what == "running":
                self.running += delta
            else:
                setattr(self.summary, what, getattr(self.summary, what) + delta)

    def work(self, explorer: Explorer, slot: int) -> None:
        """One worker: take queries in order until none are left or the run stops."""
        while (item := self.next()) is not None:
            qid, query = item
            try:
                self.one(explorer, slot, qid, query)
            except Cancelled:
                return
            except Exception as e:  # a fault of this query (or of the disk) must not end the other workers
                self.count("failed")
                log.exception("query failed", id=qid, error=str(e))

    def one(self, explorer: Explorer, slot: int, qid: str, query: str) -> None:
        """Claim, explore, write and index one query (Cancelled goes up when the run stops)."""
        started = time.time()
        try:
            claim = self.out.claim(qid)
        except LocoError as e:
            self.fail(qid, query, str(e), started, "")  # nothing was sent anywhere
            return
        if claim is None:
            self.count("elsewhere")
            return
        with claim:
            self.count("running")
            try:
                result = explorer.explore(self.root, query, cancel=self.stop)
            except LocoError as e:
                if isinstance(e, Cancelled) and self.stop.is_set():
                    raise
                self.fail(qid, query, str(e), started, _endpoint(explorer, slot))
                return
            except Exception as e:
                log.exception("exploration crashed", id=qid)
                self.fail(
                    qid, query, f"the exploration failed: {type(e).__name__}: {e}", started, _endpoint(explorer, slot)
                )
                return
            finally:
                self.count("running", -1)
            try:
                claim.commit(render_answer(qid, query, result))
            except OSError as e:  # a full disk or a folder made read-only: this answer is lost, say why
                self.fail(qid, query, f"writing {qid}.md failed: {e.strerror}", started, _endpoint(explorer, slot))
                return
        record = index.answer_record(
            qid, query, result, started=started, ended=time.time(), endpoint=_endpoint(explorer, slot)
        )
        self.index.append(index.line(record))
        self.count("answered")

    def fail(self, qid: str, query: str, error: str, started: float, endpoint: str) -> None:
        """Record a failed query in the log and the index; the run goes on."""
        log.error("query failed", id=qid, error=error)
        record = index.failure_record(qid, query, error, started=started, ended=time.time(), endpoint=endpoint)
        self.index.append(index.line(record))
        self.count("failed")


def _check_root(root: Path) -> Path:
    if not root.is_dir():
        raise ConfigError(f"--root {root}: not an existing directory; give the directory the queries are about")
    return root.resolve()


def run_batch(
    settings: Settings,
    root: Path,
    queries: Path,
    out: Path,
    *,
    parallel: int | None = None,
    show_progress: bool = True,
) -> Summary:
    """Answer every query not yet answered in `out`, `parallel` at once (default: server.parallel)."""
    n = parallel if parallel is not None else settings.server.parallel
    if n < 1:
        raise ConfigError(f"--parallel {n}: give 1 or more explorations at once")
    items = read_queries(queries)
    root = _check_root(root)
    t0 = time.monotonic()
    with OutDir(out) as folder:
        idx = folder.open_index()  # before any work: a bad index is said at once
        try:
            todo = [(q, text) for q, text in items if not folder.answered(q)]
            run = _Run(settings, root, folder, idx, todo)
            run.summary.skipped = len(items) - len(todo)
            if todo:
                _explore_all(run, settings, min(n, len(todo)), show_progress)
            run.summary.seconds = time.monotonic() - t0
            return run.summary
        finally:
            idx.close()


def _explore_all(run: _Run, settings: Settings, n: int, show_progress: bool) -> None:
    """Load `n` slots, run a worker on each, and follow them until done or Ctrl-C."""
    instances = Instances(settings)
    explorers: list[Explorer] = []
    threads: list[threading.Thread] = []
    total = len(run.queue)
    try:
        for _ in range(n):  # every slot loaded before any work starts: a load error stops the run cleanly
            explorers.append(Explorer(instances.load(), settings))
        with tqdm(total=total, desc="batch", unit="q", file=sys.stderr, disable=not show_progress) as bar:
            for slot, explorer in enumerate(explorers, 1):
                t = threading.Thread(target=run.work, args=(explorer, slot), name=f"loco-batch-{slot}", daemon=True)
                t.start()
                threads.append(t)
            log.info("batch started", parallel=n, queries=total)
            _follow(run, threads, bar)
    except KeyboardInterrupt:
        run.summary.interrupted = True
        log.warning("interrupted: stopping every exploration, keeping the answers written")
    finally:
        run.stop.set()
        deadline = time.monotonic() + _STOP_WAIT_S
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for e in explorers:
            e.close()
        instances.close_all()


def _follow(run: _Run, threads: list[threading.Thread], bar: tqdm[None]) -> None:
    """Wait for the workers, keeping the progress bar current (joins time out so Ctrl-C gets through)."""
    shown = ""
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(_TICK_S)
        s = run.summary
        state = f"answered {s.answered}, failed {s.failed}, running {run.running}"
        if state != shown:  # redraw on change only: a captured stderr gets a line per event, not per tick
            shown = state
            bar.set_postfix_str(state, refresh=False)
            bar.update(s.answered + s.failed + s.elsewhere - bar.n)
            bar.refresh()
