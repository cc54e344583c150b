"""
Stamps, headers and output fields as ROS messages: one field mapping for rclpy and rosbags.

The nodes publish rclpy messages; the bag writer and the offline evaluation write rosbags
messages. Both libraries use the same type names and field names and differ in two things only,
which a `Flavour` names: where the class of a type name comes from, and what an array field takes
(rclpy: `array.array`, filled from the bytes at once, since it copies numpy arrays value by
value; rosbags: numpy arrays). `nodes/convert.py` holds the rclpy flavour, `core/bags.py` the
rosbags one. Every message is built with all its fields as keyword arguments (rosbags classes
have no defaults). Each modality kind maps its frame records with `header` and `array_field`
(`Kind.frame_message`, reached through `kinds.frame_message`; the other direction is
`kinds.frame_from_msg`); Time -> nanoseconds is `core.frames.stamp_to_ns`. ROS-free: the
classes come from the flavour.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

TIME = 'builtin_interfaces/msg/Time'
HEADER = 'std_msgs/msg/Header'
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


def array_field(values, dtype, flavour: Flavour):
    """An array field of `dtype` (flattened) as the flavour takes it."""
    return flavour.array(np.ascontiguousarray(values, dtype=dtype).ravel())


def latent_state_message(fields: dict, flavour: Flavour):
    """LatentState of `PerceptionEngine.latent_fields` (or a belief's; msg/LatentState.msg)."""
    return flavour.message_class(LATENT_STATE)(
        header=header(fields['stamp_ns'], fields['frame_id'], flavour),
        model_id=str(fields['model_id']), fusion=str(fields['fusion']),
        mean=array_field(fields['mean'], np.float32, flavour),
        std=array_field(fields['std'], np.float32, flavour),
        shared_dim=int(fields['shared_dim']), private_dim=int(fields['private_dim']),
        private_modalities=list(fields['private_modalities']),
        modalities=list(fields['modalities']),
        modality_stamps=[time_message(t, flavour) for t in fields['modality_stamps_ns']],
        modality_ages=array_field(fields.get('modality_ages', []), np.float32, flavour),
        modality_weights=array_field(fields.get('modality_weights', []), np.float32, flavour))


def surprise_message(fields: dict, flavour: Flavour):
    """Surprise of `llmos_ros.temporal.TemporalTracker.surprise_fields` (msg/Surprise.msg)."""
    return flavour.message_class(SURPRISE)(
        header=header(fields['stamp_ns'], fields['frame_id'], flavour),
        model_id=str(fields['model_id']), modalities=list(fields['modalities']),
        scores=array_field(fields['scores'], np.float32, flavour),
        tail_probabilities=array_field(fields['tail_probabilities'], np.float32, flavour))
