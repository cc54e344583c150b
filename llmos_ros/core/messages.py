"""
Frames, stamps and output fields as ROS messages: one field mapping for rclpy and rosbags.

The nodes publish rclpy messages; the bag writer and the offline evaluation write rosbags
messages. Both libraries use the same type names and field names and differ in two things only,
which a `Flavour` names: where the class of a type name comes from, and what an array field takes
(rclpy: `array.array`, filled from the bytes at once, since it copies numpy arrays value by
value; rosbags: numpy arrays). `nodes/convert.py` holds the rclpy flavour, `core/bags.py` the
rosbags one. Every message is built with all its fields as keyword arguments (rosbags classes
have no defaults). The other direction, message -> frame, is `core.frames.frame_from_msg`, and
Time -> nanoseconds is `core.frames.stamp_to_ns`. ROS-free: the classes come from the flavour.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from llmos_ros.core.frames import (
    AUDIO_CHUNK,
    COMPRESSED_IMAGE,
    IMAGE,
    TACTILE_ARRAY,
    WRENCH_STAMPED,
    AudioFrame,
    CompressedFrame,
    Frame,
    ImageFrame,
    TactileFrame,
    WrenchFrame,
)

TIME = 'builtin_interfaces/msg/Time'
HEADER = 'std_msgs/msg/Header'
VECTOR3 = 'geometry_msgs/msg/Vector3'
WRENCH = 'geometry_msgs/msg/Wrench'
LATENT_STATE = 'llmos_ros/msg/LatentState'
SURPRISE = 'llmos_ros/msg/Surprise'
NS = 1_000_000_000


@dataclass(frozen=True)
class Flavour:
    """How one library builds messages (see the module doc)."""

    message_class: Callable[[str], Any]  # 'pkg/msg/Type' -> class
    array: Callable[[np.ndarray], Any]  # flat, contiguous numpy array -> array field value


def time_message(stamp_ns: int, flavour: Flavour):
    """builtin_interfaces/msg/Time of integer nanoseconds (non-negative nanosec, as ROS has it)."""
    sec, nanosec = divmod(int(stamp_ns), NS)
    return flavour.message_class(TIME)(sec=sec, nanosec=nanosec)


def header(stamp_ns: int, frame_id: str, flavour: Flavour):
    """std_msgs/msg/Header."""
    return flavour.message_class(HEADER)(stamp=time_message(stamp_ns, flavour),
                                         frame_id=str(frame_id))


def _array(values, dtype, flavour: Flavour):
    return flavour.array(np.ascontiguousarray(values, dtype=dtype).ravel())


def frame_message(frame: Frame, flavour: Flavour) -> tuple[str, Any]:
    """A frame record as (type name, message) of its contract type; TypeError for others."""
    head = header(frame.stamp_ns, frame.frame_id, flavour)
    if isinstance(frame, ImageFrame):
        return IMAGE, flavour.message_class(IMAGE)(
            header=head, height=int(frame.height), width=int(frame.width),
            encoding=str(frame.encoding), is_bigendian=int(bool(frame.is_bigendian)),
            step=int(frame.step), data=_array(frame.data, np.uint8, flavour))
    if isinstance(frame, CompressedFrame):
        return COMPRESSED_IMAGE, flavour.message_class(COMPRESSED_IMAGE)(
            header=head, format=str(frame.format), data=_array(frame.data, np.uint8, flavour))
    if isinstance(frame, AudioFrame):
        return AUDIO_CHUNK, flavour.message_class(AUDIO_CHUNK)(
            header=head, sample_rate=int(frame.sample_rate), channels=int(frame.channels),
            samples=_array(frame.samples, np.float32, flavour))
    if isinstance(frame, TactileFrame):
        return TACTILE_ARRAY, flavour.message_class(TACTILE_ARRAY)(
            header=head, rows=int(frame.rows), cols=int(frame.cols),
            channels=int(frame.channels), values=_array(frame.values, np.float32, flavour))
    if isinstance(frame, WrenchFrame):
        vector = flavour.message_class(VECTOR3)
        fx, fy, fz, tx, ty, tz = (float(v) for v in frame.values)
        wrench = flavour.message_class(WRENCH)(force=vector(x=fx, y=fy, z=fz),
                                               torque=vector(x=tx, y=ty, z=tz))
        return WRENCH_STAMPED, flavour.message_class(WRENCH_STAMPED)(header=head, wrench=wrench)
    raise TypeError(f'not a frame record: {type(frame).__name__}')


def latent_state_message(fields: dict, flavour: Flavour):
    """LatentState of `PerceptionEngine.latent_fields` (or a belief's; msg/LatentState.msg)."""
    return flavour.message_class(LATENT_STATE)(
        header=header(fields['stamp_ns'], fields['frame_id'], flavour),
        model_id=str(fields['model_id']), fusion=str(fields['fusion']),
        mean=_array(fields['mean'], np.float32, flavour),
        std=_array(fields['std'], np.float32, flavour),
        shared_dim=int(fields['shared_dim']), private_dim=int(fields['private_dim']),
        private_modalities=list(fields['private_modalities']),
        modalities=list(fields['modalities']),
        modality_stamps=[time_message(t, flavour) for t in fields['modality_stamps_ns']],
        modality_ages=_array(fields.get('modality_ages', []), np.float32, flavour),
        modality_weights=_array(fields.get('modality_weights', []), np.float32, flavour))


def surprise_message(fields: dict, flavour: Flavour):
    """Surprise of `llmos_ros.temporal.TemporalTracker.surprise_fields` (msg/Surprise.msg)."""
    return flavour.message_class(SURPRISE)(
        header=header(fields['stamp_ns'], fields['frame_id'], flavour),
        model_id=str(fields['model_id']), modalities=list(fields['modalities']),
        scores=_array(fields['scores'], np.float32, flavour),
        tail_probabilities=_array(fields['tail_probabilities'], np.float32, flavour))
