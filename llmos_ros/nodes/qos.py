"""
QoS for sensor streams, shared by every llmos_ros node.

Publishers of sensor data use the sensor-data profile (best effort, keep last, volatile), like
ROS 2 camera and audio drivers, so a slow subscriber never stalls a driver. Subscriptions use the
same profile: a best-effort subscription matches both best-effort and reliable publishers.

Publishers made here accept the standard QoS override parameters (history, depth, reliability),
named after the fully resolved topic, e.g.
    --ros-args -p qos_overrides./camera/image_raw.publisher.reliability:=reliable
"""
from __future__ import annotations

from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions

SENSOR_DEPTH = 5


def sensor_qos(depth: int = SENSOR_DEPTH) -> QoSProfile:
    """The sensor-data profile (best effort, volatile, keep last `depth`)."""
    profile = QoSProfile(**{k: getattr(qos_profile_sensor_data, k)
                            for k in ('history', 'reliability', 'durability')},
                         depth=depth)
    return profile


def overridable() -> QoSOverridingOptions:
    """Allow `qos_overrides.<topic>.<publisher|subscription>.{history,depth,reliability}`."""
    return QoSOverridingOptions.with_default_policies()


def create_sensor_publisher(node, msg_type, topic: str, depth: int = SENSOR_DEPTH):
    """A sensor-data publisher whose QoS parameters can be overridden at start-up."""
    return node.create_publisher(msg_type, topic, sensor_qos(depth),
                                 qos_overriding_options=overridable())


def create_sensor_subscription(node, msg_type, topic: str, callback, depth: int = SENSOR_DEPTH,
                               **kwargs):
    """A sensor-data subscription (matches reliable and best-effort publishers)."""
    return node.create_subscription(msg_type, topic, callback, sensor_qos(depth),
                                    qos_overriding_options=overridable(), **kwargs)
