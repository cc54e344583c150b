"""
One input frame in, ready sample sets out: the step every consumer of sensor data shares.

Training datasets, offline evaluation and the live node all call `pair`, so a frame is validated
and paired the same way everywhere.
"""
from __future__ import annotations

from collections import Counter

from llmos_ros.core.frames import Frame
from llmos_ros.core.preprocess import Preprocessor
from llmos_ros.core.sync import SampleSet, Synchronizer
from llmos_ros.errors import InputError


def pair(preprocessor: Preprocessor, synchronizer: Synchronizer, name: str, frame: Frame,
         drops: Counter) -> list[SampleSet]:
    """
    Validate `frame` (cheap checks, no decoding) and push it to the synchronizer.

    A bad frame is counted in `drops` as '<name>/<reason>' and kept out of every window, so it
    never spoils later samples; its InputError is re-raised for the caller to log. Returns the
    sample sets that became ready.
    """
    try:
        preprocessor.validate(frame)
    except InputError as exc:
        drops[f'{name}/{exc.reason}'] += 1
        raise
    reason = synchronizer.push(name, frame)
    if reason:
        drops[f'{name}/{reason}'] += 1
    return synchronizer.pop_ready()
