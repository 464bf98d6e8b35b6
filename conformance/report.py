"""`Report`: the rows of a conformance run (check, measured, expected, tolerance, passed), as a table or JSON."""

import json
import math
from dataclasses import asdict, dataclass, field


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.3g}"
    return str(value)


@dataclass(frozen=True)
class Row:
    """One check: what was measured, what the contract expects, the tolerance allowed, and the verdict."""

    check: str
    measured: object
    expected: object
    tolerance: object
    passed: bool
    note: str = ""


@dataclass
class Report:
    """The outcome of `check_sampler` / `check_scheduler` / `check_schedule` / `check_loss`.

    `.passed` is True when every row passed (and there is at least one row); `.rows` are `Row`s; `str(report)` is
    a readable table; `.to_json()` a JSON document with the subject and every row.
    """

    subject: str
    rows: list[Row] = field(default_factory=list)

    def add(self, check, measured, expected, tolerance, passed, note="") -> Row:
        row = Row(str(check), measured, expected, tolerance, bool(passed), str(note))
        self.rows.append(row)
        return row

    def fail(self, check, problem, expected="", note="") -> Row:
        """A failing row that names a problem (an exception, a bad shape, a NaN) instead of a measurement."""
        return self.add(check, problem, expected, "", False, note)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if not r.passed]

    def failed_checks(self) -> list[str]:
        """Names of the failing checks (the part of a row's `check` before any parenthesis)."""
        return sorted({r.check.split(" (")[0] for r in self.failed})

    def to_json(self) -> str:
        def plain(v):
            if isinstance(v, float) and not math.isfinite(v):
                return str(v)
            if isinstance(v, (str, int, float, bool)) or v is None:
                return v
            return str(v)

        rows = [{k: plain(v) for k, v in asdict(r).items()} for r in self.rows]
        return json.dumps({"subject": self.subject, "passed": self.passed, "rows": rows}, indent=1)

    def __str__(self) -> str:
        head = ("check", "measured", "expected", "tolerance", "result")
        body = [
            (r.check, _fmt(r.measured), _fmt(r.expected), _fmt(r.tolerance), "pass" if r.passed else "FAIL")
            for r in self.rows
        ]
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
        widths = [min(w, 60) for w in widths]

        def line(cells):
            return "| " + " | ".join(str(c)[:w].ljust(w) for c, w in zip(cells, widths)) + " |"

        out = [
            f"{self.subject}: {'PASSED' if self.passed else 'FAILED'} "
            f"({len(self.rows) - len(self.failed)}/{len(self.rows)} checks)",
            line(head),
            "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        ]
        out += [line(b) for b in body]
        notes = [f"- {r.check}: {r.note}" for r in self.rows if r.note]
        return "\n".join(out + notes)

    __repr__ = __str__
