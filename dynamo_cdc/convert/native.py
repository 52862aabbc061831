"""The optional C extension :mod:`dynamo_cdc.convert._native` (``dynamo_cdc/convert/_native/``),
loaded once, and the count of what it refused.

The install compiles it where a C compiler is; without it every reader takes its reference path
(slower, the same rows). ``DYNAMO_CDC_NATIVE=0`` in the environment turns it off.

Refusals are counted per kind of input (``"export blocks"``, ``"stream responses"``, ...): a
reader calls :func:`took` when the C reader took an input and :func:`refused` (with the reason)
when the input took the reference path. What a process counted is logged once: by the caller
that drains it when a unit of work ends (:func:`drain`, then :func:`log_tally`, as the
snapshot does for its data files), else at the process's exit. A slow path in production is
then one warning a run: ``3 of 120 export blocks took the reference path (...)``.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from types import ModuleType

log = logging.getLogger(__name__)

module: ModuleType | None
try:
    module = importlib.import_module("dynamo_cdc.convert._native")
except ImportError:  # installed where no C compiler was
    module = None

# Whether the readers try the C extension first.
ENABLED = module is not None and os.environ.get("DYNAMO_CDC_NATIVE", "1") != "0"


def off_reason() -> str:
    """Why the C readers are not used (a refusal reason for every input)."""
    return "the C extension is not built" if module is None else "DYNAMO_CDC_NATIVE=0"


@dataclass
class Tally:
    """Inputs of one kind: how many the C reader took, how many took the reference path, why."""

    taken: int = 0
    refused: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.taken + self.refused

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.taken + other.taken, self.refused + other.refused, self.reasons + other.reasons
        )

    def message(self, kind: str) -> str:
        """``N of M <kind> took the reference path (reason: count, ...)``."""
        why = ", ".join(f"{reason}: {n}" for reason, n in self.reasons.most_common())
        return f"{self.refused} of {self.total} {kind} took the reference path ({why})"


_tallies: dict[str, Tally] = {}
_lock = threading.Lock()


def took(kind: str, n: int = 1) -> None:
    """Count ``n`` inputs of ``kind`` the C reader took."""
    with _lock:
        _tallies.setdefault(kind, Tally()).taken += n


def refused(kind: str, reason: str) -> None:
    """Count one input of ``kind`` that took the reference path, and why."""
    with _lock:
        tally = _tallies.setdefault(kind, Tally())
        tally.refused += 1
        tally.reasons[reason] += 1


def counts() -> dict[str, Tally]:
    """What this process counted and has not drained yet, per kind (a copy)."""
    with _lock:
        return {k: Tally(t.taken, t.refused, Counter(t.reasons)) for k, t in _tallies.items()}


def drain(kind: str) -> Tally:
    """What this process counted of ``kind`` since the last drain; the count starts again."""
    with _lock:
        return _tallies.pop(kind, None) or Tally()


def log_tally(kind: str, tally: Tally) -> None:
    """Log a tally once: a warning when some input took the reference path."""
    if tally.refused:
        log.warning("%s", tally.message(kind))
    elif tally.taken:
        log.debug("all %d %s took the C reader", tally.taken, kind)


@atexit.register
def _log_at_exit() -> None:
    for kind, tally in counts().items():
        log_tally(kind, tally)
