"""
One input frame in, ready sample sets and drops out: the step every consumer of sensor data shares.

Training datasets, offline evaluation and the live node all call `pair`, so a frame is validated
and paired the same way everywhere, and every drop is reported the same way (`core.drops`).
"""
from __future__ import annotations

from llmos_ros.core.drops import Drop, PushResult
from llmos_ros.core.frames import Frame
from llmos_ros.core.preprocess import Preprocessor
from llmos_ros.core.sync import Synchronizer
from llmos_ros.errors import InputError


def pair(preprocessor: Preprocessor, synchronizer: Synchronizer, name: str,
         frame: Frame) -> PushResult:
    """
    Validate `frame` (cheap checks, no decoding) and push it to the synchronizer.

    A frame that fails validation is refused (a Drop with its InputError reason and message)
    and kept out of every window, so it never spoils later samples. Returns the sample sets that
    became ready and every drop the push caused.
    """
    try:
        preprocessor.validate(frame)
    except InputError as exc:
        return PushResult.refuse(Drop(name, exc.reason, str(exc)))
    pushed = synchronizer.push(name, frame)
    return PushResult(synchronizer.pop_ready(), pushed.drops, pushed.accepted)


class Pairer:
    """`pair` over fixed preprocessors ({modality: Preprocessor}) and one synchronizer."""

    def __init__(self, preprocessors: dict[str, Preprocessor], synchronizer: Synchronizer):
        self.preprocessors = preprocessors
        self.synchronizer = synchronizer

    def push(self, name: str, frame: Frame) -> PushResult:
        """Validate and pair one frame of modality `name` (see `pair`)."""
        prep = self.preprocessors.get(name)
        if prep is None:  # the synchronizer refuses it by name ('unknown_modality')
            return self.synchronizer.push(name, frame)
        return pair(prep, self.synchronizer, name, frame)

    def flush(self) -> PushResult:
        """Every pending sample set (end of a bag) and the drops that emitting them caused."""
        drops = self.synchronizer.flush()
        return PushResult(self.synchronizer.pop_ready(), drops)
