"""`mcp-loco eval`: load the sets, run them on the configured model, print the tables, write the JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import structlog

from mcp_loco.config import Settings
from mcp_loco.errors import ConfigError
from mcp_loco.evals.runner import ABLATION, default_root, default_variant, run_eval
from mcp_loco.evals.samples import Question, TurnSample, load_questions, load_turn_samples
from mcp_loco.evals.table import render_report
from mcp_loco.model.backends import load_backend

log = structlog.get_logger("mcp_loco.evals")


def _check_expected(questions: list[Question], root: Path) -> None:
    for q in questions:
        for e in q.expected:
            if not (root / e).is_file():
                log.warning("expected file missing from the root: recall cannot reach 100%", question=q.id, file=e)


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run the eval as the command line asked; returns the exit code."""
    root = Path(args.root).expanduser().resolve() if args.root else default_root()
    if not root.is_dir():
        raise ConfigError(f"--root {root}: not a directory")
    samples: list[TurnSample] = [] if args.explore_only else load_turn_samples(args.samples)
    questions: list[Question] = [] if args.turns_only else load_questions(args.questions)
    if args.limit is not None:
        samples, questions = samples[: args.limit], questions[: args.limit]
    _check_expected(questions, root)
    settings.model.temperature = args.temperature
    variants = list(ABLATION) if args.ablate else [default_variant(settings)]

    def say(message: str) -> None:
        if not args.quiet:
            print(f"[mcp-loco eval] {message}", file=sys.stderr, flush=True)

    say(f"{len(samples)} turn samples, {len(questions)} questions, variants: {', '.join(v.name for v in variants)}")
    model = load_backend(settings)
    try:
        report = run_eval(model, settings, root=root, samples=samples, questions=questions, variants=variants, say=say)
    finally:
        model.close()
    sys.stdout.write(render_report(report))
    if args.out:
        out = Path(args.out).expanduser()
        try:
            out.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"--out {out}: cannot write it ({e.strerror})") from None
        say(f"wrote {out}")
    runs = len(report.turns) + len(report.explorations)
    failed = sum(1 for r in report.turns if r.error) + sum(1 for r in report.explorations if r.error)
    return 1 if runs and failed == runs else 0
