"""What the job page draws: durations in words and the loss curve as inline SVG points."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CHART_WIDTH = 640
CHART_HEIGHT = 200
CHART_PAD = 36


def duration(seconds: float | None) -> str:
    """``75`` -> "1 min 15 s"; None -> "—"."""
    if seconds is None or math.isnan(seconds):
        return "—"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class LossChart:
    width: int
    height: int
    train_points: str  # "x,y x,y ..." for an SVG polyline
    val_points: list[tuple[float, float, float]]  # (x, y, value) circles
    top_label: str
    bottom_label: str
    steps: int


def loss_chart(
    train: Sequence[tuple[int, float]], validation: Sequence[tuple[int, float]], *, total_steps: int
) -> LossChart | None:
    """Scale (step, loss) pairs into the chart box; None before the first step."""
    if not train:
        return None
    values = [loss for _, loss in train] + [loss for _, loss in validation]
    top, bottom = max(values), min(0.0, min(values))
    span_y = (top - bottom) or 1.0
    span_x = max(total_steps, train[-1][0], 2) - 1

    def x(step: int) -> float:
        return round(CHART_PAD + (step - 1) / span_x * (CHART_WIDTH - 2 * CHART_PAD), 1)

    def y(loss: float) -> float:
        return round(CHART_PAD / 2 + (top - loss) / span_y * (CHART_HEIGHT - CHART_PAD), 1)

    return LossChart(
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        train_points=" ".join(f"{x(step)},{y(loss)}" for step, loss in train),
        val_points=[(x(step), y(loss), loss) for step, loss in validation],
        top_label=f"{top:.2f}",
        bottom_label=f"{bottom:.2f}",
        steps=span_x + 1,
    )
