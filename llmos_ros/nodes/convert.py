"""Conversions between the core's records/arrays and ROS messages (the only rclpy-side glue)."""
from __future__ import annotations

import numpy as np

from llmos_ros.config import Config, ModalityConfig
from llmos_ros.core import frames as F


def message_class(msg_type: str):
    """The rclpy message class of a contract type name such as 'sensor_msgs/msg/Image'."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import String

    from llmos_ros.msg import AudioChunk, LatentState, TactileArray
    classes = {F.IMAGE: Image, F.COMPRESSED_IMAGE: CompressedImage, F.AUDIO_CHUNK: AudioChunk,
               F.TACTILE_ARRAY: TactileArray, F.STRING: String,
               'llmos_ros/msg/LatentState': LatentState,
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
    """Message class a modality's prediction is published as."""
    if mod.kind == 'image':
        return message_class(F.IMAGE)
    if mod.kind == 'audio':
        return message_class(F.AUDIO_CHUNK)
    return message_class(F.TACTILE_ARRAY)


def latent_state(result, stamp, frame_id: str, model_id: str, cfg: Config):
    """LatentState of one inference (see msg/LatentState.msg)."""
    from llmos_ros.msg import LatentState
    msg = LatentState()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.model_id = model_id
    msg.fusion = cfg.model.fusion
    msg.mean = np.asarray(result.mean, np.float32)
    msg.std = np.asarray(result.std, np.float32)
    msg.shared_dim = cfg.model.latent_dim
    if cfg.model.fusion == 'mmvae_plus':
        msg.private_dim = cfg.model.private_dim
        msg.private_modalities = list(cfg.modalities)
    msg.modalities = list(result.modalities)
    msg.modality_stamps = [time_msg(result.stamps_ns[n]) for n in result.modalities]
    return msg


def prediction_msg(mod: ModalityConfig, raw: np.ndarray, stamp, frame_id: str,
                   audio_iterations: int = 4):
    """
    A decoded modality as the message type of its inputs.

    `raw` comes from Preprocessor.inverse: images (C, H, W) in [0, 255], audio a log-mel
    spectrogram (1, n_mels, frames), published as a waveform of the whole window (Griffin-Lim;
    stamped with the sample time, which is the window's end), taxels (C, rows, cols) in sensor
    units.
    """
    if mod.kind == 'image':
        from sensor_msgs.msg import Image
        pixels = np.clip(np.asarray(raw, np.float32) + 0.5, 0, 255).astype(np.uint8)
        pixels = np.ascontiguousarray(pixels.transpose(1, 2, 0))  # (H, W, C)
        msg = Image()
        msg.height, msg.width, channels = (int(v) for v in pixels.shape)
        msg.encoding = 'mono8' if channels == 1 else 'rgb8'
        msg.step = msg.width * channels
        msg.data = pixels.tobytes()
    elif mod.kind == 'audio':
        from llmos_ros.core.preprocess import log_mel_to_waveform
        from llmos_ros.msg import AudioChunk
        msg = AudioChunk()
        msg.sample_rate = int(mod.sample_rate)
        msg.channels = 1
        msg.samples = log_mel_to_waveform(raw, mod, n_iter=audio_iterations)
    else:
        from llmos_ros.msg import TactileArray
        values = np.ascontiguousarray(np.asarray(raw, np.float32).transpose(1, 2, 0))
        msg = TactileArray()
        msg.rows, msg.cols, msg.channels = (int(v) for v in values.shape)
        msg.values = values.ravel()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg
