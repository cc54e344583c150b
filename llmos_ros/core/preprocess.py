"""
Frames -> float32 model arrays: the one preprocessing path of training, offline eval and live.

`Preprocessor(mod_cfg, stats)(window, stamp_ns)` returns an array of `mod_cfg.shape()`: the
modality's kind (llmos_ros.kinds: image, audio, taxels, wrench) turns the paired frames into an
array in raw units, then, when stats are given, it is z-scored per channel. `inverse` undoes
both for publishing predictions. Bad input raises `InputError` with a stable reason: 'encoding',
'size', 'nan', 'sample_rate', 'decode', 'type', 'empty', 'too_large' (limits: core/frames.py
MAX_* and the kind modules).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from llmos_ros import kinds
from llmos_ros.config import ModalityConfig
from llmos_ros.core.frames import Frame
from llmos_ros.errors import InputError

STD_FLOOR = 1e-6  # a channel with a smaller std is not scaled (std stored as 1)


# ---------------------------------------------------------------------------------------------
# stats

def compute_stats(arrays) -> dict[str, list[float]]:
    """
    Per-channel mean and std of model arrays: (N, C, ...) array or a list of (C, ...) arrays.

    Returns {'mean': [C floats], 'std': [C floats]} (plain floats, checkpoint friendly); a
    channel with std below STD_FLOOR gets std 1.
    """
    if isinstance(arrays, np.ndarray):
        a = arrays
    else:
        arrays = list(arrays)
        if not arrays:
            raise ValueError('compute_stats needs at least one array')
        a = np.stack(arrays)
    if a.ndim < 2 or a.shape[0] == 0:
        raise ValueError('compute_stats needs an (N, C, ...) array with N > 0')
    axes = tuple(i for i in range(a.ndim) if i != 1)
    mean = a.mean(axis=axes, dtype=np.float64)
    sq = np.square(a - mean.reshape((1, -1) + (1,) * (a.ndim - 2)).astype(a.dtype))
    std = np.sqrt(sq.mean(axis=axes, dtype=np.float64))
    std = np.where(std < STD_FLOOR, 1.0, std)
    return {'mean': [float(v) for v in mean], 'std': [float(v) for v in std]}


def apply_stats(array: np.ndarray, stats: dict[str, Any] | None,
                batched: bool = False) -> np.ndarray:
    """Z-score a (C, ...) array (or (N, C, ...) with batched) per channel; None: unchanged."""
    if not stats:
        return array
    mean, std = _stat_arrays(stats, array.ndim, 1 if batched else 0)
    return ((array - mean) / std).astype(np.float32, copy=False)


def invert_stats(array: np.ndarray, stats: dict[str, Any] | None,
                 batched: bool = False) -> np.ndarray:
    """Undo `apply_stats`."""
    array = np.asarray(array, np.float32)
    if not stats:
        return array
    mean, std = _stat_arrays(stats, array.ndim, 1 if batched else 0)
    return (array * std + mean).astype(np.float32, copy=False)


def _stat_arrays(stats, ndim: int, c_axis: int):
    mean = np.asarray(stats['mean'], np.float32).ravel()
    std = np.asarray(stats['std'], np.float32).ravel()
    shape = [1] * ndim
    shape[c_axis] = mean.size
    return mean.reshape(shape), std.reshape(shape)



# ---------------------------------------------------------------------------------------------

class Preprocessor:
    """
    Frames of one modality -> float32 array of `mod.shape()`, optionally z-scored.

    `stats` is {'mean': [...], 'std': [...]} for this modality, or a dict of those keyed by
    modality name (as stored in a checkpoint); None leaves the arrays unnormalised.
    """

    def __init__(self, mod: ModalityConfig, stats: dict | None = None):
        self.mod = mod
        self.kind = kinds.of(mod)
        if stats and 'mean' not in stats:
            stats = stats.get(mod.name)
        self.stats = stats or None
        self.shape = tuple(mod.shape())
        if self.stats is not None:
            n = len(np.asarray(self.stats['mean']).ravel())
            if n != self.shape[0]:
                raise ValueError(f'modality {mod.name}: stats for {n} channels, model has '
                                 f'{self.shape[0]}')

    def validate(self, frame: Frame) -> None:
        """
        Cheap checks of one frame before it is paired (no decoding): InputError if unusable.

        The live node and the dataset drop a bad frame here, so it never spoils the windows
        of later samples (an audio window spans many chunks).
        """
        self.kind.validate(self.mod, frame)

    def raw(self, window: Sequence[Frame], stamp_ns: int | None = None) -> np.ndarray:
        """The model array before normalisation."""
        if not window:
            raise InputError('empty', f'modality {self.mod.name}: empty window')
        return self.kind.preprocess(self.mod, window, stamp_ns)

    def __call__(self, window: Sequence[Frame], stamp_ns: int | None = None) -> np.ndarray:
        """
        Preprocess one window (the frames the synchronizer paired for this modality).

        stamp_ns is where the window ends (exclusive), the sample time but for a windowed
        reference (`SampleSet.window_end`): causal. Raises InputError.
        """
        return apply_stats(self.raw(window, stamp_ns), self.stats)

    def inverse(self, array: np.ndarray) -> np.ndarray:
        """
        Model-space array -> raw range, float32 (for publishing predictions; `Kind.inverse`).

        Images come back in [0, 255] (channels, height, width); audio as log-mel; taxels in
        sensor units, (channels, rows, cols) (of a window: its newest step); a wrench as its
        six axes (of a window: its newest step).
        """
        out = invert_stats(np.asarray(array, np.float32), self.stats)
        return self.kind.inverse(self.mod, out).astype(np.float32, copy=False)

    def prediction_frame(self, array: np.ndarray, stamp_ns: int, frame_id: str,
                         iterations: int = 4) -> Frame:
        """A predicted model array as a frame of the kind's prediction type (`inverse` first)."""
        return self.kind.prediction_frame(self.mod, self.inverse(array), stamp_ns, frame_id,
                                          iterations)
