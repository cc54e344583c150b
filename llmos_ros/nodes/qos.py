"""
QoS for every llmos_ros publisher and subscription, per REP 2003.

- Drivers (camera_node, microphone_node) and the simulated source publish sensor data with the
  system-default profile: reliable, volatile, keep last `DRIVER_DEPTH` (`reliable_qos`).
- Consumers (perception_node) subscribe with the sensor-data profile: best effort, volatile, keep
  last `SENSOR_DEPTH` (`sensor_qos`). A best-effort subscription matches reliable and
  best-effort publishers alike.
- Every publisher and subscription made here accepts the standard QoS override parameters
  (history, depth, reliability), named after the fully resolved topic, e.g.
      --ros-args -p qos_overrides./camera/image_raw.publisher.reliability:=best_effort
      --ros-args -p qos_overrides./camera/image_raw.subscription.reliability:=reliable
  They are read-only: read when the entity is created (a lifecycle node re-reads them at each
  configure; rclpy re-uses an override parameter that is already declared).
- Incompatible QoS (e.g. a best-effort publisher into a subscription overridden to reliable) and
  messages lost on the way (`message_lost`) are counted per topic by a `QosEvents` and logged
  (throttled), so a topic that is silent for a QoS reason says so in the log and in diagnostics.
"""
from __future__ import annotations

from collections import Counter
import threading
import time

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.qos_overriding_options import QoSOverridingOptions

SENSOR_DEPTH = 5
DRIVER_DEPTH = 10
LOG_EVERY_S = 5.0


def sensor_qos(depth: int = SENSOR_DEPTH) -> QoSProfile:
    """The sensor-data profile for subscriptions: best effort, volatile, keep last `depth`."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def reliable_qos(depth: int = DRIVER_DEPTH) -> QoSProfile:
    """The system-default profile drivers publish with (REP 2003): reliable, keep last `depth`."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def overridable() -> QoSOverridingOptions:
    """Allow `qos_overrides.<topic>.<publisher|subscription>.{history,depth,reliability}`."""
    return QoSOverridingOptions.with_default_policies()


class QosEvents:
    """
    Counts of QoS events per topic, logged at most every LOG_EVERY_S per topic and kind.

    Keys of `counts` are '<topic>/<kind>' with kind 'incompatible_qos' (the policy that does not
    match is in the log line) or 'message_lost'. Thread-safe.
    """

    def __init__(self, node):
        self._node = node
        self._lock = threading.Lock()
        self.counts: Counter = Counter()
        self._logged: dict[str, float] = {}

    def incompatible(self, topic: str, side: str, event) -> None:
        """An incompatible QoS event of a publisher or subscription (`side`) on `topic`."""
        from rclpy.qos import qos_policy_name_from_kind
        policy = qos_policy_name_from_kind(event.last_policy_kind)
        other = 'subscriptions' if side == 'publisher' else 'publishers'
        self._count(f'{topic}/incompatible_qos', event.total_count_change,
                    f'{topic}: {side} QoS is incompatible with {event.total_count} {other} '
                    f'(policy {policy}); no messages flow between them. Align the QoS or set '
                    f'qos_overrides.{topic}.{side}.{policy.lower()}')

    def lost(self, topic: str, event) -> None:
        """Messages published but never delivered to a subscription on `topic`."""
        self._count(f'{topic}/message_lost', event.total_count_change,
                    f'{topic}: {event.total_count} messages lost before delivery (large '
                    'messages from a publisher with a small shared-memory segment or socket '
                    'buffer? see config/fastdds.xml)')

    def _count(self, key: str, n: int, text: str) -> None:
        now = time.monotonic()
        with self._lock:
            self.counts[key] += max(int(n), 1)
            due = now - self._logged.get(key, -1e9) >= LOG_EVERY_S
            if due:
                self._logged[key] = now
        if due:
            self._node.get_logger().warning(text)

    def values(self) -> dict:
        """Counts for a diagnostics status: {'qos/<topic>/<kind>': n}."""
        with self._lock:
            return {f'qos/{k}': v for k, v in sorted(self.counts.items())}


def _resolved(node, topic: str) -> str:
    return node.resolve_topic_name(topic)


def create_publisher(node, msg_type, topic: str, qos: QoSProfile, events: QosEvents | None = None,
                     lifecycle: bool = False):
    """A publisher with QoS overrides and incompatible-QoS reporting (lifecycle on request)."""
    from rclpy.event_handler import PublisherEventCallbacks
    callbacks = None
    if events is not None:
        name = _resolved(node, topic)
        callbacks = PublisherEventCallbacks(
            incompatible_qos=lambda e: events.incompatible(name, 'publisher', e))
    create = node.create_lifecycle_publisher if lifecycle else node.create_publisher
    return create(msg_type, topic, qos, qos_overriding_options=overridable(),
                  event_callbacks=callbacks)


def create_subscription(node, msg_type, topic: str, callback, qos: QoSProfile | None = None,
                        events: QosEvents | None = None, **kwargs):
    """A subscription (sensor-data QoS by default) with overrides and QoS event reporting."""
    from rclpy.event_handler import SubscriptionEventCallbacks
    callbacks = None
    if events is not None:
        name = _resolved(node, topic)
        lost = (lambda e: events.lost(name, e)) if _reports_lost_messages() else None
        callbacks = SubscriptionEventCallbacks(
            incompatible_qos=lambda e: events.incompatible(name, 'subscription', e),
            message_lost=lost)
    return node.create_subscription(msg_type, topic, callback, qos or sensor_qos(),
                                    qos_overriding_options=overridable(),
                                    event_callbacks=callbacks, **kwargs)


def _reports_lost_messages() -> bool:
    """Whether the RMW reports message_lost events (rclpy raises for one that does not)."""
    from rclpy.utilities import get_rmw_implementation_identifier
    return get_rmw_implementation_identifier().startswith(
        ('rmw_fastrtps', 'rmw_cyclonedds', 'rmw_connextdds'))


def create_sensor_publisher(node, msg_type, topic: str, depth: int = DRIVER_DEPTH,
                            events: QosEvents | None = None):
    """A driver's sensor publisher: system-default (reliable) QoS, overridable (REP 2003)."""
    return create_publisher(node, msg_type, topic, reliable_qos(depth), events)


def create_sensor_subscription(node, msg_type, topic: str, callback, depth: int = SENSOR_DEPTH,
                               events: QosEvents | None = None, **kwargs):
    """A consumer's sensor subscription: sensor-data (best-effort) QoS, overridable."""
    return create_subscription(node, msg_type, topic, callback, sensor_qos(depth), events,
                               **kwargs)
