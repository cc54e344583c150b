"""
Causal time windows of instantaneous frames on a time grid; `GridKind` (taxels, wrench).

The frames stamped in [t - window_s, t) are averaged into the `grid_steps(mod)` bins of the
`grid_hz` grid: bin k covers [t - window_s + k dt, t - window_s + (k + 1) dt). An empty bin
holds the bin before it (zero-order hold), empty leading bins the first filled one. Sensors of
any rate map onto the same array: at 100 Hz one frame a bin, at 1 kHz ten averaged.
The window ends where the synchronizer says (`SampleSet.window_end`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from llmos_ros.core.frames import Frame
from llmos_ros.errors import ConfigError, InputError
from llmos_ros.kinds.base import Kind

if TYPE_CHECKING:
    from llmos_ros.config import ModalityConfig


def grid_steps(mod: ModalityConfig) -> int:
    """Time steps of a window: window_s on the grid_hz grid (at least 1)."""
    if mod.grid_hz <= 0:
        raise ConfigError(f'modalities.{mod.name}.grid_hz must be > 0, got {mod.grid_hz}')
    return max(1, int(round(mod.window_s * mod.grid_hz)))


def grid_window(values: Sequence[np.ndarray], stamps_ns: Sequence[int], mod: ModalityConfig,
                stamp_ns: int | None, what: str) -> np.ndarray:
    """
    Frames (each a (channels, n) array) of [t - window_s, t) -> (channels, steps, n) float32.

    t is stamp_ns (None: 1 ns after the newest frame). Frames outside the window are ignored.
    InputError('empty') names `what` (e.g. 'taxel') when no frame is in the window.
    """
    steps = grid_steps(mod)
    t = int(stamp_ns) if stamp_ns is not None else int(max(stamps_ns)) + 1
    span = int(round(mod.window_s * 1e9))
    lo = t - span
    shape = np.shape(values[0]) if len(values) else (0, 0)
    sums = np.zeros((steps,) + tuple(shape), np.float64)
    counts = np.zeros(steps, np.int64)
    for vals, stamp in zip(values, stamps_ns):
        if lo <= stamp < t:
            k = min(steps - 1, (int(stamp) - lo) * steps // span)
            sums[k] += vals
            counts[k] += 1
    filled = np.flatnonzero(counts)
    if filled.size == 0:
        raise InputError('empty', f'modality {mod.name}: no {what} frame in the window')
    out = sums / np.maximum(counts, 1)[:, None, None]
    # zero-order hold: each bin takes the newest filled bin at or before it (the first for
    # leading empties)
    src = np.maximum.accumulate(np.where(counts > 0, np.arange(steps), -1))
    src[src < 0] = filled[0]
    return np.ascontiguousarray(out[src].transpose(1, 0, 2), dtype=np.float32)


class GridKind(Kind):
    """
    A kind of instantaneous frames, each a (channels, n) array, paired as a grid window.

    With `window_s` > 0 (default 0.32 s) the frames of the window on the grid, shape
    (channels, steps, n); with `window_s: 0` the newest frame, `frame_shape`. A subclass gives
    `frame_shape` and `frame_values` (its checked frame), its own `inverse` and `noun` (what
    an error calls one frame).
    """

    default_window_s = 0.32
    noun = 'frame'

    def frame_shape(self, mod: ModalityConfig) -> tuple[int, ...]:
        """Model shape of one frame (no window); its first axis is the channels."""
        raise NotImplementedError

    def frame_values(self, mod: ModalityConfig, frame: Frame) -> np.ndarray:
        """A checked frame as a float32 array of `frame_shape`; InputError if unusable."""
        raise NotImplementedError

    def shape(self, mod: ModalityConfig) -> tuple[int, ...]:
        """(channels, steps, n) with a window, else `frame_shape`."""
        one = self.frame_shape(mod)
        if mod.window_s > 0:
            return (one[0], grid_steps(mod), int(np.prod(one[1:])))
        return one

    def validate(self, mod: ModalityConfig, frame: Frame) -> None:
        """The checks of `frame_values`."""
        self.frame_values(mod, frame)

    def preprocess(self, mod: ModalityConfig, window: Sequence[Frame],
                   stamp_ns: int | None) -> np.ndarray:
        """The window on the grid, or the newest frame (`window_s: 0`)."""
        if mod.window_s <= 0:
            return self.frame_values(mod, window[-1])
        values = [self.frame_values(mod, fr) for fr in window]
        return grid_window([v.reshape(v.shape[0], -1) for v in values],
                           [int(fr.stamp_ns) for fr in window], mod, stamp_ns, self.noun)

    def newest_step(self, mod: ModalityConfig, array: np.ndarray) -> np.ndarray:
        """The newest step of a model array (of a window, its last), (channels, n)."""
        array = np.asarray(array)
        return array[:, -1, :] if mod.window_s > 0 else array.reshape(array.shape[0], -1)
