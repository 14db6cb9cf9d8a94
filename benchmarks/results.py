"""The results of one run, indexed by what they measured, and how numbers are shown."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from .bandwidth import floor_ms
from .job import Job
from .workload import NetSpec

__all__ = ["MIB", "Results", "fmt_ms", "fmt_mib", "fmt_x", "ratio", "pow10"]

MIB = 2**20


def fmt_ms(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def fmt_mib(b: float | None) -> str:
    if b is None:
        return "–"
    v = b / MIB
    return f"{v:.1f}" if abs(v) >= 10 or v == 0 else f"{v:.3g}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def fmt_x(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}×"


def pow10(T: int) -> str:
    s = str(T)
    if s.startswith("1") and set(s[1:]) == {"0"}:
        return "10" + str(len(s) - 1).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return s


def _median_record(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """The record with the median extra memory (the lower of the two middle ones if even);
    failed or skipped records only if nothing was measured."""
    ok = sorted((r for r in rs if Results.ok(r)), key=lambda r: r["extra_bytes"])
    return ok[(len(ok) - 1) // 2] if ok else rs[0]


def _merge_rounds(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """One speed record from the processes of every round: ms/step is the median over all their
    measured sequences, ``ms_per_step_all`` holds them all (the min–max shown), ``rounds`` how
    many processes measured it; the rest is the first measured process's."""
    ok = [r for r in rs if Results.ok(r)]
    if not ok:
        return rs[0]
    times = [t for r in ok for t in r["ms_per_step_all"]]
    return {**ok[0], "ms_per_step": statistics.median(times), "ms_per_step_all": times,
            "rounds": len(ok)}  # fmt: skip


class Results:
    """The results of one run, indexed by what they measured."""

    def __init__(self, results: Iterable[dict[str, Any]]) -> None:
        self.all = list(results)
        self.bandwidth: dict[str, Any] | None = None
        self.speed: dict[tuple[NetSpec, str], dict[str, Any]] = {}
        self.speed_rounds: dict[tuple[NetSpec, str], list[dict[str, Any]]] = {}
        #: (method, T) -> the median process of those measured (by extra bytes); every
        #: process's record in ``memory_all``
        self.memory: dict[tuple[str, int], dict[str, Any]] = {}
        self.memory_all: dict[tuple[str, int], list[dict[str, Any]]] = {}
        #: (network, method) -> the aten-operation count (:mod:`.ops`)
        self.ops: dict[tuple[NetSpec, str], dict[str, Any]] = {}
        speed_all: dict[tuple[NetSpec, str], list[dict[str, Any]]] = {}
        for r in self.all:
            job = Job.from_dict(r["job"])
            if job.kind == "bandwidth":
                self.bandwidth = r
            elif job.kind == "speed":
                speed_all.setdefault((NetSpec.from_dict(job.net), job.method), []).append(r)
            elif job.kind == "ops":
                self.ops[(NetSpec.from_dict(job.net), job.method)] = r
            else:
                self.memory_all.setdefault((job.method, job.steps), []).append(r)
        for key, rs in self.memory_all.items():
            self.memory[key] = _median_record(rs)
        #: (network, method) -> one record over every round of processes (:func:`_merge_rounds`)
        self.speed = {key: _merge_rounds(rs) for key, rs in speed_all.items()}
        #: (network, method) -> every process's record, in the order of the rounds
        self.speed_rounds = speed_all

    @staticmethod
    def ok(r: dict[str, Any] | None) -> bool:
        """Whether a result exists and was measured (not skipped, not failed)."""
        return r is not None and "skipped" not in r and "error" not in r

    @classmethod
    def value(cls, r: dict[str, Any] | None, key: str) -> Any:
        """``r[key]`` of a measured result, else None."""
        return r.get(key) if r is not None and cls.ok(r) else None

    def ms(self, net: NetSpec, method: str) -> float | None:
        return self.value(self.speed.get((net, method)), "ms_per_step")

    def paired(self, net: NetSpec, a: str, b: str) -> tuple[float, float, float] | None:
        """(median, min, max) over the rounds of the ratio of method a's step to method b's,
        each round's processes paired (they ran close together in time); None if unmeasured.

        A single round gives its one ratio three times.
        """
        ra, rb = self.speed_rounds.get((net, a), []), self.speed_rounds.get((net, b), [])
        rs = [
            x["ms_per_step"] / y["ms_per_step"]
            for x, y in zip(ra, rb)
            if self.ok(x) and self.ok(y) and y["ms_per_step"] > 0
        ]
        if not rs:
            return None
        return statistics.median(rs), min(rs), max(rs)

    def aten(self, net: NetSpec, method: str, *, top: bool = False) -> float | None:
        """Aten operations per training step (nested ones included unless ``top``)."""
        key = "aten_top_per_step" if top else "aten_per_step"
        return self.value(self.ops.get((net, method)), key)

    def extra(self, method: str, T: int) -> float | None:
        return self.value(self.memory.get((method, T)), "extra_bytes")

    @property
    def gbps(self) -> float | None:
        return self.value(self.bandwidth, "gbps")

    def floor(self, net: NetSpec, method: str) -> float | None:
        """Bandwidth floor (ms/step) of a method's trace update, if it has traces."""
        nbytes = self.value(self.speed.get((net, method)), "trace_bytes")
        gbps = self.gbps
        return None if nbytes is None or gbps is None else floor_ms(nbytes, gbps)

    def threads(self) -> list[int]:
        return sorted({r["threads"] for r in self.all if "threads" in r})
