"""The real small model as a slow machine's stand-in (one thread, a repository with a large file, budgets of
8 to 30 s): every call ends within its budget plus a few seconds, with a report the model wrote."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from trees import write_tree

from mcp_loco.config import Settings
from mcp_loco.explore.agent import Explorer, Progress
from mcp_loco.model.backends.llama_cpp import LlamaModel

pytestmark = [pytest.mark.model, pytest.mark.slow]

FILES_ONLY = "The model did not write a report"
GRACE_S = 4.0
"""What a call may run past its budget: the last token, the citation checks, a busy shared machine."""


@pytest.fixture(scope="module")
def one_thread_model(small_model_path: Path) -> Iterator[tuple[LlamaModel, Settings]]:
    s = Settings()
    s.model.path = str(small_model_path)
    s.model.temperature = 0.0
    s.llama.n_ctx = 8192
    s.llama.n_threads = s.llama.n_threads_batch = 1
    s.agent.task_depth = 0
    model = LlamaModel(small_model_path, s.llama)
    yield model, s
    model.close()


REPO = {
    "README.md": "# app\n\nHandlers and their config.\n",
    "src/app/config.py": "import tomllib\n\n\ndef load_config(path):\n    with open(path, 'rb') as f:\n        return tomllib.load(f)\n",
}


@pytest.fixture(scope="module")
def large_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One repository for every budget, so calls after the first find the system prompt in the model's cache."""
    root = write_tree(tmp_path_factory.mktemp("slow") / "repo", REPO)
    (root / "src/app/registry.py").write_text(
        "".join(f"def handler_{i}(request):\n    return load_config('h{i}.toml')['h{i}']\n\n" for i in range(2500))
    )
    return root


@pytest.mark.parametrize("budget", [30.0, 15.0, 8.0])
def test_every_call_ends_in_budget_with_the_models_report(
    one_thread_model: tuple[LlamaModel, Settings], large_repo: Path, budget: float
) -> None:
    model, settings = one_thread_model
    explorer = Explorer(model, settings)
    beats: list[float] = []

    def progress(_: Progress) -> None:
        beats.append(time.monotonic())

    question = f"What does {large_repo}/src/app/registry.py define? Read it."
    started = time.monotonic()
    try:
        result: Any = explorer.explore(large_repo, question, deadline_s=budget, progress=progress)
    finally:
        explorer.close()
    took = time.monotonic() - started
    assert took <= budget + GRACE_S, (took, result.turns, result.stop_reason)
    assert result.report.strip() and not result.report.startswith(FILES_ONLY), result.report
    # Progress kept coming (a line per turn and at least every 5 s while the model reads or writes).
    gaps = [b - a for a, b in zip([started, *beats], [*beats, started + took], strict=True)]
    assert max(gaps) < 5.0 + GRACE_S, gaps
