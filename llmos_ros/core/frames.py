"""
Plain, ROS-free records of one sensor message each: what they share.

Each modality kind (llmos_ros.kinds) defines the records of the messages it reads as frozen
dataclasses derived from `Frame`, and converts them to and from messages
(`kinds.frame_from_msg`, `kinds.frame_message`); rclpy and rosbags messages have the same field
names, so one conversion serves both. Everything downstream (sync, preprocessing, models) sees
only records. The label stream (std_msgs/String) is not a modality and has no record.
"""
from __future__ import annotations

from llmos_ros.errors import InputError

STRING = 'std_msgs/msg/String'
LABEL_TOPIC = 'episode/label'  # optional label stream of the input contract (STRING), relative


class Frame:
    """Base of the frame records: every record has `stamp_ns` and `frame_id` fields."""

    stamp_ns: int
    frame_id: str

    @property
    def end_ns(self) -> int:
        """Latest instant the frame covers: its stamp (a record spanning time overrides it)."""
        return self.stamp_ns


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (either flavour) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_fields(msg) -> tuple[int, str]:
    """(stamp in ns, frame id) of a message's std_msgs/Header (either flavour)."""
    return stamp_to_ns(msg.header.stamp), str(msg.header.frame_id)


def check_limit(what: str, value: int, limit: int) -> None:
    """InputError('too_large') when `value` is above `limit` (a message checked before a copy)."""
    if value > limit:
        raise InputError('too_large', f'{what} {value} is above the limit {limit}')
