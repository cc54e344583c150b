"""
Typed drop records: what was dropped, of which modality, why.

Every step that can refuse a frame or lose a sample (conversion, validation, pairing,
preprocessing, the model) reports a `Drop`; `pair` returns the ready samples and the drops of
one push as a `PushResult`. Consumers count them in a `DropCounter`, keyed '<modality>/<reason>'
(the keys of /diagnostics, the evaluation report and the training summary), and never
reconstruct drops by diffing counters or parsing error text.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
import threading
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # core.sync imports this module
    from llmos_ros.core.sync import SampleSet


@dataclass(frozen=True)
class Drop:
    """One frame or sample dropped: its modality, a short stable reason key, a readable detail."""

    modality: str  # '' for a drop of no one modality (a sample without any usable input)
    reason: str  # e.g. 'stamp_backwards', 'queue_full', InputError.reason ('size', 'nan')
    detail: str = ''

    @property
    def key(self) -> str:
        """The counter key: '<modality>/<reason>', or the reason alone without a modality."""
        return drop_key(self.modality, self.reason)


def drop_key(modality: str, reason: str) -> str:
    """'<modality>/<reason>', or `reason` when `modality` is ''."""
    return f'{modality}/{reason}' if modality else reason


@dataclass
class PushResult:
    """
    What one pushed frame caused: the samples that became ready and every drop.

    accepted is False when the pushed frame itself was refused (conversion, validation or a
    pairing rule); its drop is then `drops[0]` (`refused`). Other drops are of earlier samples or
    buffered frames that this push evicted (queue_full), each with its own modality.
    """

    samples: list[SampleSet] = field(default_factory=list)
    drops: list[Drop] = field(default_factory=list)
    accepted: bool = True

    @property
    def refused(self) -> Drop | None:
        """The drop of the pushed frame itself, None when it was accepted into pairing."""
        return None if self.accepted else self.drops[0]

    @classmethod
    def refuse(cls, drop: Drop) -> PushResult:
        """The pushed frame was refused: no samples, `drop` is its reason."""
        return cls([], [drop], accepted=False)


class DropCounter:
    """
    Drops counted by '<modality>/<reason>'; thread-safe (a lock inside).

    The live node counts from its executor thread (inputs) and its workers (preprocessing,
    model errors) into one counter; readers take a `snapshot`.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()  # (modality, reason) -> count

    def add(self, drops: Iterable[Drop]) -> None:
        """Count each drop of `drops`."""
        keys = [(d.modality, d.reason) for d in drops]
        if keys:
            with self._lock:
                self._counts.update(keys)

    def snapshot(self) -> dict[str, int]:
        """The counts so far by '<modality>/<reason>', sorted (a copy)."""
        with self._lock:
            return {drop_key(m, r): n for (m, r), n in sorted(self._counts.items())}

    def reasons(self, modality: str) -> dict[str, int]:
        """The counts of one modality by reason, sorted (a copy)."""
        with self._lock:
            return {r: n for (m, r), n in sorted(self._counts.items()) if m == modality}

    def total(self) -> int:
        """All drops counted so far."""
        with self._lock:
            return sum(self._counts.values())
