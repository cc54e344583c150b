"""
Record live topics into a rosbag2 bag (MCAP by default) without rosbag2: `BagRecorder`.

For `llmos-demo --record DIR`: the inputs, latent states, predictions, debug images and
diagnostics, each message logged at its header stamp (the outputs carry their inputs' stamps, so
inputs and outputs line up in Foxglove or `ros2 bag play`). Messages are stored as the CDR bytes
rclpy serializes, which rosbags and rosbag2 read alike.
"""
from __future__ import annotations

from llmos_ros.core.bags import BagWriter
from llmos_ros.core.frames import stamp_to_ns
from llmos_ros.nodes import convert
from llmos_ros.nodes.qos import overridable, reliable_qos, sensor_qos

# topic (relative) -> (message type, sensor data?)
DEMO_TOPICS = {
    'camera/image_raw': ('sensor_msgs/msg/Image', True),
    'microphone/audio': ('llmos_ros/msg/AudioChunk', True),
    'tactile/array': ('llmos_ros/msg/TactileArray', True),
    'episode/label': ('std_msgs/msg/String', False),
    'llmos/latent': ('llmos_ros/msg/LatentState', False),
    'llmos/prediction/camera': ('sensor_msgs/msg/Image', False),
    'llmos/prediction/audio': ('llmos_ros/msg/AudioChunk', False),
    'llmos/prediction/tactile': ('llmos_ros/msg/TactileArray', False),
    'llmos/debug_image': ('sensor_msgs/msg/Image', False),
    '/diagnostics': ('diagnostic_msgs/msg/DiagnosticArray', False),
}


class BagRecorder:
    """Subscribes `node` to `topics` and writes every message into a new bag at `path`."""

    def __init__(self, node, path, topics: dict = DEMO_TOPICS, storage: str = 'mcap'):
        from rclpy.qos import DurabilityPolicy
        from rclpy.serialization import serialize_message
        self._serialize = serialize_message
        self.writer = BagWriter(path, storage=storage)
        self.writer.open()
        self.counts: dict[str, int] = {}
        self._subs = []
        for topic, (msg_type, sensor) in topics.items():
            qos = sensor_qos(50) if sensor else reliable_qos(50)
            if topic == 'episode/label':
                qos.durability = DurabilityPolicy.TRANSIENT_LOCAL  # latched, as published
            self._subs.append(node.create_subscription(
                convert.message_class(msg_type), topic,
                lambda msg, t=topic, m=msg_type: self._write(t, m, msg), qos,
                qos_overriding_options=overridable()))
        self._node = node

    def _write(self, topic: str, msg_type: str, msg) -> None:
        header = getattr(msg, 'header', None)
        stamp_ns = (stamp_to_ns(header.stamp) if header is not None
                    else self._node.get_clock().now().nanoseconds)
        self.writer.write_raw(topic, msg_type, stamp_ns, self._serialize(msg))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> dict:
        """Stop recording and close the bag; returns messages written per topic."""
        for sub in self._subs:
            self._node.destroy_subscription(sub)
        self._subs = []
        self.writer.close()
        return dict(self.counts)
