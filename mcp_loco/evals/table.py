"""The eval report as text tables (terminal) or markdown tables (docs/measured.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mcp_loco.evals.metrics import ExploreMetrics, Ratio, TurnMetrics
from mcp_loco.evals.runner import EvalReport

CARD = {
    "presence": "100% (65/65)",
    "first_tool": "65.6% (40/61)",
    "json_validity": "100% (76/76)",
    "argument_syntax": "100% (76/76)",
}
"""LocoOperator-4B's published figures (seed 000), for comparison."""
FORCE_NOTE = (
    "(`force` alone forces the first turn's call with a schema-free JSON grammar: any tool name, any arguments.)"
)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """Columns padded to fit; the first left-aligned, the rest right-aligned."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        cells = [str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *[line(r) for r in rows]])


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def turn_table(report: EvalReport, markdown: bool = False) -> str:
    """The model card's metrics per variant, with the card's own figures beside them."""
    names = [n for n in report.variants if n in report.turn_metrics]
    ms = [report.turn_metrics[n] for n in names]

    def row(title: str, get: Callable[[TurnMetrics], str], card: str = "") -> list[str]:
        return [title, *[get(m) for m in ms], card]

    def ratio(key: str) -> Callable[[TurnMetrics], str]:
        def get(m: TurnMetrics) -> str:
            value = getattr(m, key)
            assert isinstance(value, Ratio)
            return value.show()

        return get

    rows = [
        row("tool call presence alignment", ratio("presence"), CARD["presence"]),
        row("first tool type match", ratio("first_tool"), CARD["first_tool"]),
        row("JSON validity", ratio("json_validity"), CARD["json_validity"]),
        row("argument syntax correctness", ratio("argument_syntax"), CARD["argument_syntax"]),
        row("completion tokens / turn", lambda m: _num(m.completion_tokens / m.samples if m.samples else None)),
        row("seconds / turn (median)", lambda m: _num(m.seconds_median, "{:.2f}")),
        row("samples (errors)", lambda m: f"{m.samples} ({m.errors})"),
    ]
    return table(["metric", *names, "card: LocoOperator-4B"], rows, markdown)


def tools_table(report: EvalReport, markdown: bool = False) -> str:
    """Tool distribution: reference vs each variant (and the card's model)."""
    names = [n for n in report.variants if n in report.turn_metrics]
    ms = [report.turn_metrics[n] for n in names]
    reference = ms[0].reference_tools if ms else {}
    tools = list(reference)
    for m in ms:
        tools += [t for t in m.model_tools if t not in tools]
    rows = [[t, str(reference.get(t, 0)), *[str(m.model_tools.get(t, 0)) for m in ms]] for t in tools]
    rows.append(["total", str(sum(reference.values())), *[str(sum(m.model_tools.values())) for m in ms]])
    return table(["tool", "reference", *names], rows, markdown)


def explore_table(report: EvalReport, markdown: bool = False) -> str:
    """Exploration metrics per variant."""
    names = [n for n in report.explore_variants if n in report.explore_metrics]
    ms = [report.explore_metrics[n] for n in names]

    def row(title: str, get: Callable[[ExploreMetrics], str]) -> list[str]:
        return [title, *[get(m) for m in ms]]

    rows = [
        row("expected files cited, verified", lambda m: m.recall.show()),
        row("expected files shown by a tool", lambda m: m.examined.show()),
        row("citations verified", lambda m: m.verified.show()),
        row("quotes verified (in the file)", lambda m: m.quotes_verified.show()),
        row("quotes at the cited lines", lambda m: m.quotes_in_place.show()),
        row("answered within budget", lambda m: m.answered.show()),
        row("turns (mean)", lambda m: _num(m.turns_mean)),
        row("prompt tokens sent (mean)", lambda m: _num(m.prompt_tokens_mean, "{:.0f}")),
        row("prompt tokens evaluated (mean)", lambda m: _num(m.prompt_tokens_evaluated_mean, "{:.0f}")),
        row("completion tokens (mean)", lambda m: _num(m.completion_tokens_mean, "{:.0f}")),
        row("seconds (median)", lambda m: _num(m.seconds_median)),
        row("questions (errors)", lambda m: f"{m.questions} ({m.errors})"),
    ]
    return table(["metric", *names], rows, markdown)


def questions_table(report: EvalReport, variant: str) -> str:
    """One line per question for one variant."""
    rows = []
    for r in report.explorations:
        if r.variant != variant:
            continue
        if r.score is None:
            rows.append([r.id, "error", "", "", "", r.error[:60]])
            continue
        s = r.score
        missed = ", ".join(e for e in s.expected if e not in s.cited_expected)
        rows.append(
            [
                r.id,
                f"{len(s.cited_expected)}/{len(s.expected)}",
                str(s.turns),
                s.stop_reason,
                f"{s.seconds:.1f}",
                missed,
            ]
        )
    return table(["question", "cited", "turns", "stop", "seconds", "not cited"], rows)


def render_report(report: EvalReport) -> str:
    """Everything for the terminal."""
    out = [f"model: {report.model}", f"root: {report.root}", f"settings: {report.settings}"]
    if report.turn_metrics:
        n = max(m.samples + m.errors for m in report.turn_metrics.values())
        out += ["", f"Turn-level metrics ({n} samples)", turn_table(report)]
        if "force" in report.turn_metrics:
            out.append(FORCE_NOTE)
        out += ["", "Tool distribution", tools_table(report)]
    if report.explore_metrics:
        n = max(m.questions + m.errors for m in report.explore_metrics.values())
        out += ["", f"Exploration ({n} question{'s' if n != 1 else ''})", explore_table(report)]
        if "force" in report.variants and "force" not in report.explore_variants:
            out.append("(no `force` column: the agent forces the first call only under the grammar)")
        first = report.explore_variants[0]
        out += ["", f"Per question [{first}]", questions_table(report, first)]
    return "\n".join(out) + "\n"
