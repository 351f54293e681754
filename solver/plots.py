"""PNG plots for the report: accuracy against the per-problem time budget, seconds per problem.

Pure drawing: the figures come in as numbers (`solver.report` computes them, the budget curve by
policy replay). One line per run. Uses matplotlib's object API with the Agg canvas (no pyplot,
no display, no global state), so it runs headless and from threads.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_SIZE_IN = (7.0, 4.5)
_STYLES = [("-", 2.2), ("--", 1.8), (":", 2.4), ("-.", 1.6)]  # overlapping runs stay visible
_DPI = 80  # about 560 x 320 pixels: small enough for the docs


def plot_accuracy_vs_budget(curves: dict[str, tuple[list[float], list[float | None]]], path: str | Path) -> Path:
    """x: seconds allowed per problem; y: accuracy had every problem been cut there. A curve is
    (budgets, accuracies), a step function holding each value until the next budget; every
    curve is drawn on to the largest budget of all."""
    figure, axes = _figure()
    right_s = max((max(xs) for xs, _ in curves.values() if xs), default=0.0)
    for number, (name, (xs, ys)) in enumerate(curves.items()):
        points = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if points:
            points.append((right_s, points[-1][1]))
            axes.plot(*zip(*points), drawstyle="steps-post", label=name, **_style(number))
    axes.set(xlabel="time budget per problem (s)", ylabel="accuracy", ylim=(-0.02, 1.02), title="Accuracy against time budget")
    return _save(figure, axes, path)


def plot_seconds_per_problem(seconds: dict[str, dict[str, float]], path: str | Path) -> Path:
    """One line per run over the problems (in first-seen order); y: seconds the problem took."""
    problem_ids = list(dict.fromkeys(pid for per_run in seconds.values() for pid in per_run))
    figure, axes = _figure()
    for number, (name, per_run) in enumerate(seconds.items()):
        xs = [i for i, pid in enumerate(problem_ids) if pid in per_run]
        axes.plot(xs, [per_run[problem_ids[i]] for i in xs], marker="o", markersize=4, label=name, **_style(number))
    if len(problem_ids) <= 30:
        axes.set_xticks(range(len(problem_ids)), problem_ids, rotation=60, fontsize=7)
    axes.set(xlabel="problem", ylabel="seconds", title="Seconds per problem")
    axes.set_ylim(bottom=0)
    return _save(figure, axes, path)


def _figure():
    figure = Figure(figsize=_SIZE_IN, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.grid(alpha=0.3)
    return figure, axes


def _style(number: int) -> dict:
    linestyle, linewidth = _STYLES[number % len(_STYLES)]
    return {"linestyle": linestyle, "linewidth": linewidth}


def _save(figure: Figure, axes, path: str | Path) -> Path:
    if axes.get_lines():
        figure.legend(fontsize=7, loc="outside lower center", ncols=2, frameon=False)
    path = Path(path)
    figure.savefig(path, format="png")
    return path
