"""
Rate, drop and age tracking for diagnostics, without diagnostic_updater.

`RateTracker` counts events (frames received or published) and drops by reason, thread-safe;
`make_status` builds a diagnostic_msgs/DiagnosticStatus; `DiagnosticsPublisher` publishes a
DiagnosticArray on `/diagnostics` (the topic diagnostic_aggregator reads) from a timer.
Status names follow diagnostic_updater: '<node name>: <task>'.
"""
from __future__ import annotations

from collections import Counter, deque
import math
import threading
import time
from typing import Callable, Iterable

WINDOW_S = 5.0
DIAGNOSTICS_TOPIC = '/diagnostics'

# diagnostic_msgs/DiagnosticStatus levels (bytes in the message), usable without importing it.
OK, WARN, ERROR, STALE = 0, 1, 2, 3


class RateTracker:
    """
    Events per second over a sliding window, total count, drops by reason, age of the newest.

    `tick(t)` takes a time.monotonic() value (default: now) and, optionally, the event's ROS stamp
    in ns; `rate()` is the number of events in the last `window_s` divided by the window (or by
    the time since the first event while that is shorter), so it falls to 0 when events stop.
    """

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self.window_s = float(window_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._times: deque = deque()
        self._first: float | None = None
        self.count = 0
        self.drops: Counter = Counter()
        self.last_time: float | None = None
        self.last_stamp_ns: int | None = None

    def tick(self, t: float | None = None, stamp_ns: int | None = None) -> None:
        """Record one event at monotonic time `t` (default now), with its stamp if known."""
        t = self._clock() if t is None else t
        with self._lock:
            if self._first is None:
                self._first = t
            self._times.append(t)
            self.count += 1
            self.last_time = t
            if stamp_ns is not None:
                self.last_stamp_ns = int(stamp_ns)
            self._trim(t)

    def drop(self, reason: str = 'dropped', n: int = 1) -> None:
        """Count `n` dropped events under `reason`."""
        with self._lock:
            self.drops[reason] += n

    @property
    def dropped(self) -> int:
        """Total drops, all reasons."""
        with self._lock:
            return sum(self.drops.values())

    def rate(self, now: float | None = None) -> float:
        """Events per second over the window ending at `now` (monotonic, default now)."""
        now = self._clock() if now is None else now
        with self._lock:
            self._trim(now)
            if self._first is None:
                return 0.0
            since_first = now - self._first
            if since_first < self.window_s:
                n = len(self._times) - 1  # intervals since the first event
                return n / since_first if n > 0 and since_first > 0 else 0.0
            return len(self._times) / self.window_s

    def age_s(self, now: float | None = None) -> float:
        """Seconds since the newest event (monotonic), NaN before the first one."""
        now = self._clock() if now is None else now
        with self._lock:
            return math.nan if self.last_time is None else now - self.last_time

    def stamp_age_s(self, now_ns: int) -> float:
        """`now_ns` (ROS time) minus the newest event's stamp, in s; NaN without a stamp."""
        with self._lock:
            stamp = self.last_stamp_ns
        return math.nan if stamp is None else (now_ns - stamp) / 1e9

    def values(self, now: float | None = None, prefix: str = '') -> dict:
        """Key values for a DiagnosticStatus: count, rate_hz, age_s, drops and drops/<reason>."""
        rate, age = self.rate(now), self.age_s(now)
        with self._lock:
            drops = dict(self.drops)
            count = self.count
        out = {f'{prefix}count': count, f'{prefix}rate_hz': f'{rate:.2f}',
               f'{prefix}age_s': f'{age:.3f}', f'{prefix}drops': sum(drops.values())}
        out.update({f'{prefix}drops/{k}': v for k, v in sorted(drops.items())})
        return out

    def reset(self) -> None:
        """Forget every event and drop."""
        with self._lock:
            self._times.clear()
            self._first = self.last_time = self.last_stamp_ns = None
            self.count = 0
            self.drops.clear()

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()


def make_status(name: str, hardware_id: str, values: dict, level: int = OK, message: str = ''):
    """A diagnostic_msgs/DiagnosticStatus; `values` become KeyValue pairs (str of each value)."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
    status = DiagnosticStatus()
    status.level = bytes([int(level)])
    status.name = name
    status.hardware_id = hardware_id
    status.message = message or ('OK', 'Warning', 'Error', 'Stale')[int(level)]
    status.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
    return status


status = make_status  # short alias


def rate_level(rate: float, expected: float, tolerance: float = 0.2) -> int:
    """OK when `rate` is within `tolerance` (fraction) below `expected` or expected <= 0."""
    if expected <= 0 or rate >= expected * (1.0 - tolerance):
        return OK
    return WARN


class DiagnosticsPublisher:
    """Publishes what `collect()` returns (DiagnosticStatus list) on /diagnostics every period."""

    def __init__(self, node, collect: Callable[[], Iterable], period_s: float = 1.0):
        from diagnostic_msgs.msg import DiagnosticArray
        self._node = node
        self._collect = collect
        self._msg_type = DiagnosticArray
        from llmos_ros.nodes.qos import overridable
        self.publisher = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10,
                                               qos_overriding_options=overridable())
        self.timer = node.create_timer(period_s, self.publish) if period_s > 0 else None

    def publish(self) -> None:
        """Collect and publish one DiagnosticArray now."""
        array = self._msg_type()
        array.header.stamp = self._node.get_clock().now().to_msg()
        array.status = list(self._collect())
        self.publisher.publish(array)

    def destroy(self) -> None:
        """Remove the timer and the publisher from the node."""
        if self.timer is not None:
            self._node.destroy_timer(self.timer)
            self.timer = None
        if self.publisher is not None:
            self._node.destroy_publisher(self.publisher)
            self.publisher = None
