"""
Plain, ROS-free records of one sensor message each.

Both rclpy messages and rosbags-decoded messages have the same field names, so `frame_from_msg`
works on either (duck typing); everything downstream (sync, preprocessing, models) sees only these.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmos_ros.errors import InputError

# Size limits, checked on the message header before any copy or decode (InputError 'too_large'):
MAX_IMAGE_PIXELS = 4096 * 4096  # raw or compressed (declared size); 4K UHD fits
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # raw image data (4096 x 4096 rgba8 = 64 MiB)
MAX_COMPRESSED_BYTES = 16 * 1024 * 1024
MAX_AUDIO_VALUES = 4 * 1024 * 1024  # samples x channels of one chunk (and see preprocess)
MAX_TAXEL_VALUES = 1024 * 1024

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
AUDIO_CHUNK = 'llmos_ros/msg/AudioChunk'
TACTILE_ARRAY = 'llmos_ros/msg/TactileArray'
WRENCH_STAMPED = 'geometry_msgs/msg/WrenchStamped'
STRING = 'std_msgs/msg/String'
LABEL_TOPIC = 'episode/label'  # optional label stream of the input contract (STRING), relative


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (either flavour) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass(frozen=True)
class ImageFrame:
    stamp_ns: int
    encoding: str
    height: int
    width: int
    step: int
    is_bigendian: bool
    data: np.ndarray  # uint8, flat, as in the message
    frame_id: str = ''


@dataclass(frozen=True)
class CompressedFrame:
    stamp_ns: int
    format: str  # e.g. 'jpeg', 'png', 'rgb8; jpeg compressed bgr8'
    data: np.ndarray  # uint8, flat
    frame_id: str = ''


@dataclass(frozen=True)
class AudioFrame:
    stamp_ns: int  # capture time of the first sample
    sample_rate: int
    channels: int
    samples: np.ndarray  # float32, flat, interleaved
    frame_id: str = ''

    @property
    def n_frames(self) -> int:
        return int(self.samples.size // max(self.channels, 1))

    @property
    def end_ns(self) -> int:
        """Stamp just after the last sample (start of the next chunk)."""
        if self.sample_rate <= 0:
            return self.stamp_ns
        return self.stamp_ns + int(round(self.n_frames * 1e9 / self.sample_rate))


@dataclass(frozen=True)
class TactileFrame:
    stamp_ns: int
    rows: int
    cols: int
    channels: int
    values: np.ndarray  # float32, flat, row-major, channel fastest
    frame_id: str = ''


@dataclass(frozen=True)
class WrenchFrame:
    stamp_ns: int
    values: np.ndarray  # float32 (6,): force x, y, z (N), torque x, y, z (N m)
    frame_id: str = ''


Frame = ImageFrame | CompressedFrame | AudioFrame | TactileFrame | WrenchFrame


def frame_end_ns(frame: Frame) -> int:
    """Latest instant a frame covers: end of the last sample for audio, the stamp otherwise."""
    return frame.end_ns if isinstance(frame, AudioFrame) else frame.stamp_ns


def check_size(msg_type: str, msg) -> None:
    """InputError('too_large') when a message is beyond the MAX_* limits (no copy made)."""
    def refuse(what: str, value: int, limit: int) -> None:
        raise InputError('too_large', f'{what} {value} is above the limit {limit}')

    if msg_type == IMAGE:
        pixels = int(msg.height) * int(msg.width)
        if pixels > MAX_IMAGE_PIXELS:
            refuse(f'image {msg.width}x{msg.height}: pixels', pixels, MAX_IMAGE_PIXELS)
        if len(msg.data) > MAX_IMAGE_BYTES:
            refuse('image data bytes', len(msg.data), MAX_IMAGE_BYTES)
    elif msg_type == COMPRESSED_IMAGE and len(msg.data) > MAX_COMPRESSED_BYTES:
        refuse('compressed image bytes', len(msg.data), MAX_COMPRESSED_BYTES)
    elif msg_type == AUDIO_CHUNK and len(msg.samples) > MAX_AUDIO_VALUES:
        refuse('audio chunk values', len(msg.samples), MAX_AUDIO_VALUES)
    elif msg_type == TACTILE_ARRAY and len(msg.values) > MAX_TAXEL_VALUES:
        refuse('taxel values', len(msg.values), MAX_TAXEL_VALUES)


def frame_from_msg(msg_type: str, msg) -> Frame:
    """
    Convert an rclpy or rosbags message of a contract input type into a frame record.

    Raises InputError('too_large') before copying an oversized message (`check_size`), and
    ValueError for a type that is not a contract input.
    """
    check_size(msg_type, msg)
    stamp = stamp_to_ns(msg.header.stamp)
    frame_id = str(msg.header.frame_id)
    if msg_type == IMAGE:
        data = np.frombuffer(bytes(msg.data), np.uint8)
        return ImageFrame(stamp, str(msg.encoding), int(msg.height), int(msg.width),
                          int(msg.step), bool(msg.is_bigendian), data, frame_id)
    if msg_type == COMPRESSED_IMAGE:
        return CompressedFrame(stamp, str(msg.format), np.frombuffer(bytes(msg.data), np.uint8),
                               frame_id)
    if msg_type == AUDIO_CHUNK:
        return AudioFrame(stamp, int(msg.sample_rate), int(msg.channels),
                          np.asarray(msg.samples, dtype=np.float32).ravel(), frame_id)
    if msg_type == TACTILE_ARRAY:
        return TactileFrame(stamp, int(msg.rows), int(msg.cols), int(msg.channels),
                            np.asarray(msg.values, dtype=np.float32).ravel(), frame_id)
    if msg_type == WRENCH_STAMPED:
        f, t = msg.wrench.force, msg.wrench.torque
        return WrenchFrame(stamp, np.array([f.x, f.y, f.z, t.x, t.y, t.z], np.float32), frame_id)
    raise ValueError(f'not a sensor input type of the contract: {msg_type}')
