"""
Records and output fields as rclpy messages: the rclpy flavour of `llmos_ros.core.messages`.

The field mapping lives in core/messages.py and is shared with the bag writer (rosbags); this
module only says where rclpy classes come from and how an array field is filled.
"""
from __future__ import annotations

import array
import importlib

import numpy as np

from llmos_ros import kinds
from llmos_ros.config import ModalityConfig
from llmos_ros.core import messages


def message_class(msg_type: str):
    """
    The rclpy class of a type name: 'pkg/msg/Type' (as bags store it) or 'pkg/Type'.

    ValueError names the type when it is malformed or its package is not installed.
    """
    parts = str(msg_type).split('/')
    if len(parts) == 2:
        parts = [parts[0], 'msg', parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f'message type {msg_type!r} is not of the form pkg/msg/Type')
    try:
        return getattr(importlib.import_module(f'{parts[0]}.{parts[1]}'), parts[2])
    except (ImportError, AttributeError) as exc:
        raise ValueError(f'message type {msg_type} cannot be imported: {exc}') from None


def _array(values: np.ndarray):
    """An rclpy array field: array.array from the bytes (rclpy copies numpy value by value)."""
    return array.array(values.dtype.char, values.tobytes())


RCLPY = messages.Flavour(message_class, _array)


def time_msg(stamp_ns: int):
    """builtin_interfaces/msg/Time of integer nanoseconds."""
    return messages.time_message(stamp_ns, RCLPY)


def prediction_type(mod: ModalityConfig):
    """Message class a modality's prediction is published as (its kind's `prediction_type`)."""
    return message_class(kinds.of(mod).prediction_type)


def latent_state(fields: dict):
    """LatentState from `PerceptionEngine.latent_fields` (see msg/LatentState.msg)."""
    return messages.latent_state_message(fields, RCLPY)


def surprise(fields: dict):
    """Surprise from `llmos_ros.temporal.surprise_fields` (see msg/Surprise.msg)."""
    return messages.surprise_message(fields, RCLPY)


def frame_msg(frame):
    """A core frame record as the rclpy message of its contract type."""
    return kinds.frame_message(frame, RCLPY)[1]
