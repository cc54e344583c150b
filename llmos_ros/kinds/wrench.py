"""
Kind 'wrench': a force-torque sensor (geometry_msgs/WrenchStamped), in N and N m.

The six axes (force x, y, z, torque x, y, z) are the channels: each is z-scored on its own,
since forces and torques differ by orders of magnitude. With a window (`window_s` > 0, the
default), the frames stamped in [t - window_s, t) on the `grid_hz` grid (llmos_ros.kinds.grid),
shape (6, steps, 1); with `window_s: 0`, the newest frame, (6, 1, 1). Predictions are
published as WrenchStamped (of a window: its newest step). Bad input raises InputError 'type'
or 'nan'. Drawn as the six axes (rows) over time (columns).

Defaults as for taxels, for the same reason: window 0.32 s on the 100 Hz grid (32 steps), which
holds the onset, slip and release of a contact; F/T sensors publish at 100 Hz .. 1 kHz (one
frame a step .. ten averaged). Suggested topic: `force_torque/wrench` (not part of the input
contract: any WrenchStamped topic is found by `llmos-train`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from llmos_ros.core.frames import Frame, header_fields
from llmos_ros.core.messages import Flavour, header
from llmos_ros.errors import InputError
from llmos_ros.kinds.grid import GridKind

if TYPE_CHECKING:
    from llmos_ros.config import ModalityConfig

AXES = 6
WRENCH_STAMPED = 'geometry_msgs/msg/WrenchStamped'
WRENCH = 'geometry_msgs/msg/Wrench'
VECTOR3 = 'geometry_msgs/msg/Vector3'


@dataclass(frozen=True)
class WrenchFrame(Frame):
    """One geometry_msgs/WrenchStamped."""

    stamp_ns: int
    values: np.ndarray  # float32 (6,): force x, y, z (N), torque x, y, z (N m)
    frame_id: str = ''


class WrenchKind(GridKind):
    """Force-torque sensors (module doc)."""

    name = 'wrench'
    message_types = (WRENCH_STAMPED,)
    frame_types = (WrenchFrame,)
    prediction_type = WRENCH_STAMPED
    reference_rank = 3
    noun = 'wrench'
    picture_span_s = 1.0

    def frame_from_msg(self, msg_type: str, msg: Any) -> Frame:
        """The six axes of a WrenchStamped."""
        stamp, frame_id = header_fields(msg)
        f, t = msg.wrench.force, msg.wrench.torque
        return WrenchFrame(stamp, np.array([f.x, f.y, f.z, t.x, t.y, t.z], np.float32), frame_id)

    def frame_message(self, frame: Frame, flavour: Flavour) -> tuple[str, Any]:
        """A WrenchStamped."""
        vector = flavour.message_class(VECTOR3)
        fx, fy, fz, tx, ty, tz = (float(v) for v in frame.values)
        wrench = flavour.message_class(WRENCH)(force=vector(x=fx, y=fy, z=fz),
                                               torque=vector(x=tx, y=ty, z=tz))
        return WRENCH_STAMPED, flavour.message_class(WRENCH_STAMPED)(
            header=header(frame.stamp_ns, frame.frame_id, flavour), wrench=wrench)

    def frame_shape(self, mod: ModalityConfig) -> tuple[int, ...]:
        """(6, 1, 1)."""
        return (AXES, 1, 1)

    def frame_values(self, mod: ModalityConfig, fr: Frame) -> np.ndarray:
        """Type and finiteness; (6, 1, 1) float32."""
        if not isinstance(fr, WrenchFrame):
            raise InputError('type', f'expected a wrench, got {type(fr).__name__}')
        vals = np.asarray(fr.values, dtype=np.float32).reshape(AXES, 1, 1)
        if not np.isfinite(vals).all():
            raise InputError('nan', 'wrench holds NaN or inf values')
        return vals

    def inverse(self, mod: ModalityConfig, array: np.ndarray) -> np.ndarray:
        """The six axes of the newest step, (6,)."""
        return np.ascontiguousarray(self.newest_step(mod, array)[:, 0])

    def prediction_frame(self, mod: ModalityConfig, raw: np.ndarray, stamp_ns: int,
                         frame_id: str, iterations: int = 4) -> Frame:
        """A wrench in N and N m."""
        return WrenchFrame(stamp_ns, np.asarray(raw, np.float32).reshape(AXES), frame_id)

    def picture(self, array: np.ndarray) -> np.ndarray:
        """The six axes (rows) over the window's steps (columns)."""
        return np.asarray(array, np.float64)[:, :, 0]

    def frames_picture(self, frames: Sequence[Frame]) -> np.ndarray:
        """The six axes (rows) of the frames, oldest first (columns)."""
        return np.stack([np.asarray(fr.values, np.float64).reshape(AXES) for fr in frames], 1)
