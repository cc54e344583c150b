"""Conversions between the core's records/arrays and ROS messages (the only rclpy-side glue)."""
from __future__ import annotations

import numpy as np

from llmos_ros import kinds
from llmos_ros.config import ModalityConfig
from llmos_ros.core import frames as F


def message_class(msg_type: str):
    """The rclpy message class of a contract type name such as 'sensor_msgs/msg/Image'."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import WrenchStamped
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import String

    from llmos_ros.msg import AudioChunk, LatentState, Surprise, TactileArray
    classes = {F.IMAGE: Image, F.COMPRESSED_IMAGE: CompressedImage, F.AUDIO_CHUNK: AudioChunk,
               F.TACTILE_ARRAY: TactileArray, F.WRENCH_STAMPED: WrenchStamped, F.STRING: String,
               'llmos_ros/msg/LatentState': LatentState, 'llmos_ros/msg/Surprise': Surprise,
               'diagnostic_msgs/msg/DiagnosticArray': DiagnosticArray,
               'rosgraph_msgs/msg/Clock': Clock}
    try:
        return classes[msg_type]
    except KeyError:
        raise ValueError(f'unsupported message type {msg_type}') from None


def time_msg(stamp_ns: int):
    from builtin_interfaces.msg import Time
    return Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def prediction_type(mod: ModalityConfig):
    """Message class a modality's prediction is published as (its kind's `prediction_type`)."""
    return message_class(kinds.of(mod).prediction_type)


def latent_state(fields: dict):
    """LatentState from `PerceptionEngine.latent_fields` (see msg/LatentState.msg)."""
    from llmos_ros.msg import LatentState
    msg = LatentState(model_id=fields['model_id'], fusion=fields['fusion'],
                      shared_dim=int(fields['shared_dim']),
                      private_dim=int(fields['private_dim']),
                      private_modalities=list(fields['private_modalities']),
                      modalities=list(fields['modalities']),
                      modality_stamps=[time_msg(t) for t in fields['modality_stamps_ns']])
    msg.header.stamp = time_msg(fields['stamp_ns'])
    msg.header.frame_id = fields['frame_id']
    msg.mean = fields['mean']
    msg.std = fields['std']
    msg.modality_ages = np.asarray(fields.get('modality_ages', []), np.float32)
    msg.modality_weights = np.asarray(fields.get('modality_weights', []), np.float32)
    return msg


def surprise(fields: dict):
    """Surprise from `llmos_ros.temporal.surprise_fields` (see msg/Surprise.msg)."""
    from llmos_ros.msg import Surprise
    msg = Surprise(model_id=fields['model_id'], modalities=list(fields['modalities']))
    msg.header.stamp = time_msg(fields['stamp_ns'])
    msg.header.frame_id = fields['frame_id']
    msg.scores = np.asarray(fields['scores'], np.float32)
    msg.tail_probabilities = np.asarray(fields['tail_probabilities'], np.float32)
    return msg


def frame_msg(frame):
    """A core frame record as the rclpy message of its contract type."""
    if isinstance(frame, F.ImageFrame):
        msg = message_class(F.IMAGE)(height=frame.height, width=frame.width,
                                     encoding=frame.encoding,
                                     is_bigendian=int(frame.is_bigendian), step=frame.step)
        msg.data = frame.data.tobytes()
    elif isinstance(frame, F.AudioFrame):
        msg = message_class(F.AUDIO_CHUNK)(sample_rate=frame.sample_rate,
                                           channels=frame.channels)
        msg.samples = np.asarray(frame.samples, np.float32)
    elif isinstance(frame, F.TactileFrame):
        msg = message_class(F.TACTILE_ARRAY)(rows=frame.rows, cols=frame.cols,
                                             channels=frame.channels)
        msg.values = np.asarray(frame.values, np.float32)
    elif isinstance(frame, F.WrenchFrame):
        msg = message_class(F.WRENCH_STAMPED)()
        w = msg.wrench
        (w.force.x, w.force.y, w.force.z, w.torque.x, w.torque.y, w.torque.z) = (
            float(v) for v in frame.values)
    else:
        raise TypeError(f'no message for {type(frame).__name__}')
    msg.header.stamp = time_msg(frame.stamp_ns)
    msg.header.frame_id = frame.frame_id
    return msg
