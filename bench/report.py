"""Repeated measurements, their medians, and the one markdown table a bench run prints.

>>> m = Measurement("x", "jobs/s")
>>> for seconds in (2.0, 1.0, 4.0): m.add(100, seconds)
>>> m.value, m.seconds
(50.0, 2.0)
>>> base = Measurement("y", "jobs/s")
>>> for seconds in (4.0, 4.0, 4.0): base.add(100, seconds)
>>> row = Row(m, target=Target(2.0), baseline=base)
>>> row.ratio, row.result
(2.0, 'PASS')
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

__all__ = ["Measurement", "Target", "Row", "render"]


@dataclass
class Measurement:
    """One thing measured ``repeat`` times; its value is the median of the repeats.

    ``unit`` is ``jobs/s`` (``n / seconds``; higher is better), or ``ms`` / ``MB`` (``value`` given
    directly; lower is better).
    """

    name: str
    unit: str
    samples: list[tuple[int, float, float]] = field(default_factory=list)  # (n, seconds, value)
    notes: set[str] = field(default_factory=set)  # how it was measured, when not the usual way

    def add(self, n: int, seconds: float, value: float | None = None) -> None:
        """Record one repeat: ``n`` jobs in ``seconds``; ``value`` defaults to the rate."""
        self.samples.append((n, seconds, n / seconds if value is None else value))

    def _median_sample(self) -> tuple[int, float, float]:
        ordered = sorted(self.samples, key=lambda s: s[2])
        return ordered[(len(ordered) - 1) // 2]  # the lower median: an actual run, not an average

    @property
    def value(self) -> float:
        """The median of the repeats' values."""
        return statistics.median(s[2] for s in self.samples)

    @property
    def n(self) -> int:
        """Jobs (or requests) in the median run."""
        return self._median_sample()[0]

    @property
    def seconds(self) -> float:
        """Seconds of the median run."""
        return self._median_sample()[1]

    def spread(self) -> str:
        """Every repeat's value, in the order run."""
        return ", ".join(_number(s[2]) for s in self.samples)


@dataclass(frozen=True)
class Target:
    """A goal from the issue: a value compared with ``bound`` (``>=`` for speed-ups, ``<=`` for costs)."""

    bound: float
    op: str = ">="

    def met(self, value: float) -> bool:
        """True when ``value`` meets the goal."""
        return value >= self.bound if self.op == ">=" else value <= self.bound


@dataclass
class Row:
    """One line of the table: a measurement, what it is compared with, and the goal if there is one.

    ``ratio`` compares this row with ``baseline`` (for rates: how many times faster). Runs are
    paired: run *i* of the row was measured next to run *i* of its baseline, so the ratio is the
    median of the per-run ratios, which a slow drift of the machine's load cancels out of. The
    target judges the ratio when there is a baseline, else the measured value itself.
    """

    measurement: Measurement
    section: str = ""
    baseline_name: str = ""
    baseline: Measurement | None = None
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """The median of the paired per-run ratios (or of the medians, if the run counts differ)."""
        if self.baseline is None:
            return None
        ours = [s[2] for s in self.measurement.samples]
        theirs = [s[2] for s in self.baseline.samples]
        if len(ours) == len(theirs) and all(theirs):
            return statistics.median(a / b for a, b in zip(ours, theirs))
        return self.measurement.value / self.baseline.value if self.baseline.value else None

    @property
    def result(self) -> str:
        """PASS / FAIL against the target, or empty."""
        if self.target is None:
            return ""
        value = self.ratio if self.baseline is not None else self.measurement.value
        if value is None:
            return "n/a"
        return "PASS" if self.target.met(value) else "FAIL"


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _ratio(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def render(rows: list[Row]) -> str:
    """The markdown table."""
    head = ["section", "row", "n", "seconds", "value (median of runs)", "runs", "ratio (paired runs)", "target", "result"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        m = row.measurement
        ratio = f"{_ratio(row.ratio)}x {row.baseline_name}" if row.ratio is not None else ""
        target = ""
        if row.target is not None:
            target = f"{row.target.op} {row.target.bound:g}" + ("x" if row.baseline is not None else f" {m.unit}")
        notes = [row.note, *sorted(m.notes)]
        name = m.name + "".join(f" ({note})" for note in notes if note)
        cells = [row.section, name, str(m.n), f"{m.seconds:.3f}", f"{_number(m.value)} {m.unit}", m.spread(),
                 ratio, target, row.result]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
