"""
Kind 'taxels': tactile taxel arrays (llmos_ros/TactileArray), in sensor units.

With a window (`window_s` > 0, default 0.32 s), the frames stamped in [t - window_s, t) on the
`grid_hz` grid (llmos_ros.kinds.grid), shape (channels, steps, rows * cols), taxels in
row-major order; with `window_s: 0`, the newest frame, (rows, cols, channels) -> (channels,
rows, cols). Predictions are published as TactileArrays in sensor units (of a window: its
newest step). Bad input raises InputError 'type', 'size', 'nan', 'empty' or 'too_large'. Drawn
as a heat map of channel 0.

Default window 0.32 s: slip, vibration and texture show within a few hundred milliseconds of
contact; 32 steps of the 100 Hz grid suit sensors of 100 Hz (one frame a step) to 1 kHz (ten
frames averaged a step).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from llmos_ros.core.frames import Frame, check_limit, header_fields
from llmos_ros.core.messages import Flavour, array_field, header
from llmos_ros.errors import InputError
from llmos_ros.kinds.grid import GridKind

if TYPE_CHECKING:
    from llmos_ros.config import ModalityConfig

TACTILE_ARRAY = 'llmos_ros/msg/TactileArray'
MAX_TAXEL_VALUES = 1024 * 1024  # of one message, checked before a copy ('too_large')


@dataclass(frozen=True)
class TactileFrame(Frame):
    """One llmos_ros/TactileArray."""

    stamp_ns: int
    rows: int
    cols: int
    channels: int
    values: np.ndarray  # float32, flat, row-major, channel fastest
    frame_id: str = ''


class TaxelKind(GridKind):
    """Taxel arrays (module doc)."""

    name = 'taxels'
    message_types = (TACTILE_ARRAY,)
    frame_types = (TactileFrame,)
    prediction_type = TACTILE_ARRAY
    reference_rank = 1
    noun = 'taxel'

    def frame_from_msg(self, msg_type: str, msg: Any) -> Frame:
        """A TactileArray, its values as float32."""
        check_limit('taxel values', len(msg.values), MAX_TAXEL_VALUES)
        stamp, frame_id = header_fields(msg)
        return TactileFrame(stamp, int(msg.rows), int(msg.cols), int(msg.channels),
                            np.asarray(msg.values, dtype=np.float32).ravel(), frame_id)

    def frame_message(self, frame: Frame, flavour: Flavour) -> tuple[str, Any]:
        """A TactileArray."""
        return TACTILE_ARRAY, flavour.message_class(TACTILE_ARRAY)(
            header=header(frame.stamp_ns, frame.frame_id, flavour), rows=int(frame.rows),
            cols=int(frame.cols), channels=int(frame.channels),
            values=array_field(frame.values, np.float32, flavour))

    def frame_shape(self, mod: ModalityConfig) -> tuple[int, ...]:
        """(channels, rows, cols)."""
        return (mod.channels, mod.rows, mod.cols)

    def frame_values(self, mod: ModalityConfig, fr: Frame) -> np.ndarray:
        """Type, size (as configured) and finiteness; (channels, rows, cols) float32."""
        if not isinstance(fr, TactileFrame):
            raise InputError('type', f'expected a taxel array, got {type(fr).__name__}')
        rows, cols, ch = int(fr.rows), int(fr.cols), int(fr.channels)
        vals = np.asarray(fr.values, dtype=np.float32).ravel()
        if vals.size != rows * cols * ch:
            raise InputError('size', f'taxel array holds {vals.size} values, expected rows {rows}'
                             f' x cols {cols} x channels {ch} = {rows * cols * ch}')
        if (rows, cols, ch) != (mod.rows, mod.cols, mod.channels):
            raise InputError('size', f'taxel array is {rows}x{cols}x{ch}, the model expects '
                             f'{mod.rows}x{mod.cols}x{mod.channels}')
        if not np.isfinite(vals).all():
            raise InputError('nan', 'taxel array holds NaN or inf values')
        return np.ascontiguousarray(vals.reshape(rows, cols, ch).transpose(2, 0, 1))

    def inverse(self, mod: ModalityConfig, array: np.ndarray) -> np.ndarray:
        """(channels, rows, cols); of a window, its newest step."""
        return self.newest_step(mod, array).reshape(self.frame_shape(mod))

    def prediction_frame(self, mod: ModalityConfig, raw: np.ndarray, stamp_ns: int,
                         frame_id: str, iterations: int = 4) -> Frame:
        """A TactileArray (rows, cols, channels) in sensor units."""
        values = np.ascontiguousarray(raw.transpose(1, 2, 0))
        return TactileFrame(stamp_ns, *values.shape, values.ravel(), frame_id)

    def frames_picture(self, frames: Sequence[Frame]) -> np.ndarray:
        """Channel 0 of the newest frame, (rows, cols)."""
        fr = frames[-1]
        return np.asarray(fr.values, np.float64).reshape(fr.rows, fr.cols, fr.channels)[..., 0]

    def role(self, topic: str) -> str:
        """Taxel arrays are 'tactile'."""
        return 'tactile'

    def from_topic(self, msg_type: str, frame: Frame) -> dict:
        """The array size of the first frame."""
        return {'rows': int(frame.rows), 'cols': int(frame.cols),
                'channels': int(frame.channels)}
