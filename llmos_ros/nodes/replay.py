"""
llmos-replay: publish a rosbag2 bag's messages live, at recorded timing, without rosbag2.

    llmos-replay BAG [--rate 1.0] [--loop] [--clock] [--topics T ...] [--remap OLD:=NEW ...]
                     [--start-offset S] [--delay S] [--wait-for-subscribers N] [--skip-gaps S]
                     [--qos reliable|sensor] [--quiet] [--ros-args ...]

For machines without `ros2 bag play` (rosbag2); with rosbag2 installed the equivalent is
`ros2 bag play BAG --clock` and nodes started with `-p use_sim_time:=true`.

- Bags: rosbag2 folders, .mcap or .db3 files (read with the `rosbags` library). The stored CDR
  bytes are published as they are (rclpy `publish(bytes)`): no per-field copying, and header
  stamps are never changed.
- Timing: messages go out in log-time order (the time the recorder received them), each at
  `start + (log time - bag start) / rate` on the monotonic clock; `--start-offset S` skips the
  first S seconds of the bag; `--loop` plays it again from there until Ctrl-C.
- Gaps: by default a gap in the bag is waited through (a line is printed for gaps over 10 s);
  `--skip-gaps S` shortens every gap longer than S seconds (bag time) to S. Header stamps are
  never changed, so the nodes see the stamps jump, as with the recording.
- Empty bags, or selected topics without messages: one line, exit 2.
- `--clock`: rosgraph_msgs/Clock on /clock at `--clock-hz` (default 100) following bag time, for
  nodes run with `use_sim_time:=true` (bag time jumps back when a loop restarts).
- Topics: the bag's names with the leading slash removed, so they resolve in the node's
  namespace: `--ros-args -r __ns:=/robot` plays /camera/image_raw on /robot/camera/image_raw.
  `--remap /camera/image_raw:=cam` renames one topic (a NEW starting with '/' is absolute);
  ROS remapping (`--ros-args -r camera/image_raw:=cam`) works too. /clock is always absolute.
- QoS: reliable, volatile, keep last 100 (like `ros2 bag play`), so a reliable or best-effort
  subscriber gets every message it can keep up with; transient local when the bag recorded the
  topic's publisher as transient local (latched topics). `--qos sensor`: best effort instead.
- Start: `--wait-for-subscribers N` waits until every replayed topic (and /clock) has N matched
  subscriptions, then `--delay S` waits S more seconds (as `ros2 bag play --delay`).
- Message types must be importable (`<package>.msg`); topics of other types are skipped with a
  warning and counted in the summary.

Prints progress (unless --quiet) and a summary: messages per topic, skipped topics, the achieved
rate factor (bag seconds played / wall seconds) and the largest lag behind schedule; the last
stdout line is the summary as JSON. Exit status: 0 done (or stopped with Ctrl-C), 1 ROS failure
(bad --ros-args, rclpy errors), 2 user error (bad option, missing, corrupt or truncated bag,
nothing to replay); errors are one line on stderr, without a traceback.
"""
from __future__ import annotations

import argparse
from collections import Counter
import itertools
import json
from pathlib import Path
import signal
import sys
import time

from llmos_ros.core.bags import norm_topic
from llmos_ros.errors import BagError, LlmosError
from llmos_ros.nodes.convert import message_class, time_msg

EXIT_OK = 0
EXIT_ROS_ERROR = 1
EXIT_USER_ERROR = 2
DEFAULT_DEPTH = 100
PROG = 'llmos-replay'


class UsageError(LlmosError):
    """A bad option value."""


def parse_args(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.strip().splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog='\n'.join(__doc__.strip().splitlines()[5:]))
    p.add_argument('bag', help='rosbag2 folder, .mcap or .db3 file')
    p.add_argument('--rate', type=float, default=1.0, help='playback speed factor (default 1)')
    p.add_argument('--loop', action='store_true', help='play again from the start, until Ctrl-C')
    p.add_argument('--clock', action='store_true', help='publish bag time on /clock')
    p.add_argument('--clock-hz', type=float, default=100.0, help='/clock rate (default 100)')
    p.add_argument('--topics', nargs='+', metavar='T', help='replay only these bag topics')
    p.add_argument('--remap', nargs='+', default=[], metavar='OLD:=NEW',
                   help='publish bag topic OLD on NEW')
    p.add_argument('--start-offset', type=float, default=0.0, metavar='S',
                   help='skip the first S seconds of the bag')
    p.add_argument('--delay', type=float, default=0.0, metavar='S',
                   help='wait S seconds after the publishers are up, before playing')
    p.add_argument('--wait-for-subscribers', type=int, default=0, metavar='N',
                   help='before playing, wait until every replayed topic has N subscriptions')
    p.add_argument('--skip-gaps', type=float, default=0.0, metavar='S',
                   help='shorten gaps in the bag longer than S seconds to S (0: off)')
    p.add_argument('--qos', choices=('reliable', 'sensor'), default='reliable',
                   help='reliable keep-last-100 (default) or best-effort sensor-data QoS')
    p.add_argument('--quiet', action='store_true', help='no progress lines')
    args = p.parse_args(argv)
    if not args.rate > 0:
        p.error(f'--rate must be > 0, got {args.rate:g}')
    if not args.clock_hz > 0:
        p.error(f'--clock-hz must be > 0, got {args.clock_hz:g}')
    for name in ('start_offset', 'delay', 'wait_for_subscribers', 'skip_gaps'):
        if getattr(args, name) < 0:
            p.error(f'--{name.replace("_", "-")} must be >= 0')
    return args


def parse_remaps(items) -> dict[str, str]:
    """{absolute bag topic: output name} from OLD:=NEW items."""
    remaps = {}
    for item in items:
        old, sep, new = item.partition(':=')
        if not sep or not old.strip() or not new.strip().strip('/'):
            raise UsageError(f'--remap expects OLD:=NEW, got {item!r}')
        remaps[norm_topic(old)] = new.strip()
    return remaps


def _resolve_path(path) -> Path:
    p = Path(path)
    if p.is_dir() and not (p / 'metadata.yaml').is_file():
        files = [f for f in p.iterdir() if f.suffix in ('.mcap', '.db3')]
        if len(files) == 1:
            return files[0]
    return p


def _latched(conn) -> bool:
    profiles = getattr(getattr(conn, 'ext', None), 'offered_qos_profiles', None) or []
    for qos in profiles if isinstance(profiles, (list, tuple)) else []:
        durability = getattr(qos, 'durability', None)
        if getattr(durability, 'name', str(durability)) == 'TRANSIENT_LOCAL':
            return True
    return False


class BagSource:
    """A bag opened for raw reading: connections, and (topic, log_ns, cdr bytes) in log order."""

    def __init__(self, path):
        from llmos_ros.core.bags import bag_info
        self.path = path
        self.info = bag_info(path)  # BagError: missing, not a bag, corrupt or truncated
        from rosbags.rosbag2 import Reader
        self._reader_cls = Reader
        reader = self._open()
        try:
            self.connections = list(reader.connections)
        finally:
            reader.close()

    def _open(self):
        reader = self._reader_cls(_resolve_path(self.path))
        try:
            reader.open()
        except Exception as exc:  # noqa: BLE001 - rosbags raises many kinds on bad files
            raise BagError(f'cannot open bag {self.path}: {type(exc).__name__}: {exc}') from None
        return reader

    def messages(self, topics: set[str], start_ns: int):
        """Yield (topic, log_ns, cdr) of `topics` with log time >= start_ns."""
        reader = self._open()
        n = 0
        try:
            conns = [c for c in reader.connections if c.topic in topics]
            try:
                for conn, log_ns, raw in reader.messages(connections=conns, start=start_ns):
                    n += 1
                    yield conn.topic, int(log_ns), bytes(raw)
            except Exception as exc:  # noqa: BLE001
                raise BagError(f'bag {self.path} is corrupt or truncated: failed after {n} '
                               f'messages read: {type(exc).__name__}: {exc}') from None
        finally:
            reader.close()


class Player:
    """Publishers for the replayed topics and the timing loop."""

    def __init__(self, node, source: BagSource, args, log):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        from llmos_ros.nodes.qos import overridable
        self.node, self.source, self.args, self.log = node, source, args, log
        remaps = parse_remaps(args.remap)
        bag_topics = {c.topic: c.msgtype for c in source.connections}
        wanted = set(bag_topics)
        if args.topics:
            wanted = {norm_topic(t) for t in args.topics}
            missing = sorted(wanted - set(bag_topics))
            if missing:
                log(f'warning: not in the bag, ignored: {", ".join(missing)}', err=True)
            wanted &= set(bag_topics)
        for old in sorted(set(remaps) - set(bag_topics)):
            log(f'warning: --remap {old}: not a topic of the bag', err=True)
        counts = source.info['counts']
        if wanted and not any(counts.get(t, 0) for t in wanted):
            raise UsageError(f'nothing to replay: {source.path} holds no messages on the '
                             f'selected topics')
        self.skipped: dict[str, dict] = {}
        self.publishers: dict[str, object] = {}
        self.names: dict[str, str] = {}
        reliability = (ReliabilityPolicy.BEST_EFFORT if args.qos == 'sensor'
                       else ReliabilityPolicy.RELIABLE)
        for topic in sorted(wanted):
            msg_type = bag_topics[topic]
            try:
                cls = message_class(msg_type)
            except ValueError:
                self.skipped[topic] = {'type': msg_type, 'messages': int(counts.get(topic, 0)),
                                       'reason': 'message type not installed'}
                log(f'warning: skipping {topic}: message type {msg_type} cannot be imported '
                    f'({counts.get(topic, 0)} messages)', err=True)
                continue
            latched = any(_latched(c) for c in source.connections if c.topic == topic)
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=DEFAULT_DEPTH,
                             reliability=reliability,
                             durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                                         else DurabilityPolicy.VOLATILE))
            name = remaps.get(topic, topic.lstrip('/'))
            self.publishers[topic] = node.create_publisher(cls, name, qos,
                                                           qos_overriding_options=overridable())
            self.names[topic] = self.publishers[topic].topic_name
        if args.start_offset > self.bag_span_s():
            log(f'warning: --start-offset {args.start_offset:g} s is past the end of the bag '
                f'({self.bag_span_s():.3f} s): nothing to play', err=True)
        if not self.publishers:
            raise UsageError(f'nothing to replay from {source.path}: '
                             + ('no topic of a known message type' if wanted
                                else 'none of the --topics are in the bag'))
        self.clock_pub = None
        if args.clock:
            from rosgraph_msgs.msg import Clock
            self.clock_pub = node.create_publisher(
                Clock, '/clock', QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.published: Counter = Counter()
        self.clock_count = 0
        self.passes = 0
        self.max_lag_s = 0.0
        self.bag_played_s = 0.0
        self.wall_s = 0.0
        self.gaps_skipped_s = 0.0

    # ---------------------------------------------------------------------------------------------
    def wait_for_subscribers(self, n: int) -> None:
        pubs = dict(self.publishers)
        if self.clock_pub is not None:
            pubs['/clock'] = self.clock_pub
        shown = 0.0
        started = time.monotonic()
        while True:
            missing = [t for t, p in pubs.items() if p.get_subscription_count() < n]
            if not missing:
                return
            waited = time.monotonic() - started
            if waited - shown >= 5.0 or shown == 0.0:
                shown = max(waited, 1e-9)
                self.log(f'waiting for {n} subscriber(s) on {", ".join(missing)}')
            time.sleep(0.02)

    def _publish_clock(self, stamp_ns: int) -> None:
        from rosgraph_msgs.msg import Clock
        self.clock_pub.publish(Clock(clock=time_msg(stamp_ns)))
        self.clock_count += 1

    def play_once(self) -> None:
        """One pass over the bag from start + start_offset."""
        rate = self.args.rate
        start_ns = int(self.source.info['start_ns'] + self.args.start_offset * 1e9)
        tick = 1.0 / self.args.clock_hz
        # Open the bag and fetch the first message before the clock starts, so it is on time.
        messages = self.source.messages(set(self.publishers), start_ns)
        first = next(messages, None)
        if first is None:
            self.passes += 1
            return
        messages = itertools.chain([first], messages)
        t0 = time.monotonic()
        next_tick = t0
        next_progress = t0 + 1.0
        last_ns = start_ns
        last_wall = t0
        skipped_ns = 0  # bag time cut out of long gaps (--skip-gaps)

        def bag_now(now):
            return start_ns + skipped_ns + int((now - t0) * rate * 1e9)

        try:
            for topic, log_ns, raw in messages:
                skipped_ns += self._gap_cut(last_ns, log_ns)
                due = t0 + (log_ns - start_ns - skipped_ns) * 1e-9 / rate
                while True:
                    now = time.monotonic()
                    if self.clock_pub is not None and now >= next_tick:
                        self._publish_clock(min(bag_now(now), max(log_ns, start_ns)))
                        next_tick += tick
                        if next_tick < now:  # fell behind: no bursts of stale ticks
                            next_tick = now + tick
                        continue
                    if now >= due:
                        break
                    wake = due if self.clock_pub is None else min(due, next_tick)
                    time.sleep(max(0.0, wake - now))
                self.publishers[topic].publish(raw)
                now = time.monotonic()
                self.max_lag_s = max(self.max_lag_s, now - due)
                self.published[topic] += 1
                last_ns, last_wall = log_ns, now
                if now >= next_progress and not self.args.quiet:
                    next_progress = now + 1.0
                    self.log(f'[{PROG}] pass {self.passes + 1}: bag time '
                             f'{(log_ns - self.source.info["start_ns"]) * 1e-9:.1f} / '
                             f'{self.bag_span_s():.1f} s, {sum(self.published.values())} messages')
            if self.clock_pub is not None:
                self._publish_clock(last_ns)
            self.passes += 1
        finally:  # also when interrupted: the summary counts what was played
            self.bag_played_s += (last_ns - start_ns - skipped_ns) * 1e-9
            self.gaps_skipped_s += skipped_ns * 1e-9
            self.wall_s += last_wall - t0

    def _gap_cut(self, last_ns: int, log_ns: int) -> int:
        """Nanoseconds of the gap before `log_ns` to skip (--skip-gaps); logs long gaps."""
        gap_s = (log_ns - last_ns) * 1e-9
        limit = self.args.skip_gaps
        if limit > 0 and gap_s > limit:
            self.log(f'[{PROG}] skipping {gap_s - limit:.1f} s of a {gap_s:.1f} s gap in the bag')
            return int(round((gap_s - limit) * 1e9))
        if gap_s > 10.0:
            self.log(f'[{PROG}] the bag has a {gap_s:.1f} s gap here: waiting through it '
                     f'(--skip-gaps S shortens gaps to S)', err=True)
        return 0

    def bag_span_s(self) -> float:
        return (self.source.info['end_ns'] - self.source.info['start_ns']) * 1e-9

    def flush(self, timeout_s: float = 5.0) -> None:
        """Let reliable subscribers acknowledge what they were sent before the node goes."""
        from rclpy.duration import Duration
        if self.args.qos == 'sensor':
            return
        deadline = time.monotonic() + timeout_s
        for pub in list(self.publishers.values()) + [self.clock_pub]:
            left = deadline - time.monotonic()
            if pub is None or left <= 0:
                continue
            try:
                pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))
            except Exception:  # noqa: BLE001 - best effort; some RMWs do not support it
                return

    def summary(self, interrupted: bool) -> dict:
        return {'bag': str(self.source.path),
                'published': {self.names[t]: self.published[t] for t in sorted(self.publishers)},
                'total': int(sum(self.published.values())),
                'skipped': self.skipped,
                'passes': self.passes, 'interrupted': interrupted,
                'rate': self.args.rate,
                'bag_seconds': round(self.bag_played_s, 6),
                'wall_seconds': round(self.wall_s, 6),
                'achieved_rate': (round(self.bag_played_s / self.wall_s, 4)
                                  if self.wall_s > 0 else None),
                'max_lag_ms': round(self.max_lag_s * 1e3, 3),
                'gaps_skipped_s': round(self.gaps_skipped_s, 6),
                'clock_messages': self.clock_count}


def split_ros_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """
    (our arguments, ROS arguments): each `--ros-args ... [--]` section goes to rclpy.

    Done here rather than with rclpy's remove_ros_args, which would also take `--remap OLD:=NEW`
    items for (deprecated) ROS remapping rules.
    """
    plain, ros, inside = [], [], False
    for item in argv:
        if item == '--ros-args':
            inside = True
            ros.append(item)
        elif inside and item == '--':
            inside = False
            ros.append(item)
        else:
            (ros if inside else plain).append(item)
    return plain, ros


def _log(text: str, err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    """Entry point of `llmos-replay`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    plain, ros_args = split_ros_args(argv)
    args = parse_args(plain)  # argparse exits 2 on bad options
    try:
        parse_remaps(args.remap)
        source = BagSource(args.bag)
        if not source.info['message_count']:
            raise UsageError(f'nothing to replay: {args.bag} holds no messages')
    except LlmosError as exc:
        print(f'{PROG}: error: {exc}', file=sys.stderr)
        return EXIT_USER_ERROR

    try:
        import rclpy
        from rclpy.signals import SignalHandlerOptions
    except ImportError:
        print(f'{PROG}: error: rclpy is not available: source your ROS 2 setup first',
              file=sys.stderr)
        return EXIT_ROS_ERROR
    from llmos_ros.nodes.runtime import use_dds_profile
    use_dds_profile()
    context = rclpy.context.Context()
    try:
        rclpy.init(args=[PROG] + ros_args, context=context,
                   signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # noqa: BLE001 - malformed --ros-args: rclpy raises RCLError
        print(f'{PROG}: error: {exc}', file=sys.stderr)
        return EXIT_ROS_ERROR
    previous = signal.signal(signal.SIGTERM, _sigterm)
    node, player, code, interrupted = None, None, EXIT_OK, False
    try:
        node = rclpy.create_node('llmos_replay', context=context)
        player = Player(node, source, args, _log)
        if args.wait_for_subscribers:
            player.wait_for_subscribers(args.wait_for_subscribers)
        if args.delay:
            time.sleep(args.delay)
        if not args.quiet:
            _log(f'[{PROG}] playing {args.bag} ({player.bag_span_s():.2f} s, '
                 f'{len(player.publishers)} topics) at rate {args.rate:g}'
                 + (', looping' if args.loop else ''))
        while True:
            before = sum(player.published.values())
            player.play_once()
            if not args.loop or sum(player.published.values()) == before:
                break  # an empty pass (--start-offset past the end) would loop forever
        player.flush()
    except KeyboardInterrupt:
        interrupted = True
    except LlmosError as exc:
        print(f'{PROG}: error: {exc}', file=sys.stderr)
        code = EXIT_USER_ERROR
    except Exception as exc:  # noqa: BLE001 - rclpy errors (e.g. invalid topic names)
        print(f'{PROG}: error: {type(exc).__name__}: {exc}', file=sys.stderr)
        code = EXIT_ROS_ERROR
    finally:
        signal.signal(signal.SIGTERM, previous)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
    if player is not None:
        summary = player.summary(interrupted)
        if not args.quiet or code != EXIT_OK:
            per_topic = ', '.join(f'{t}: {n}' for t, n in summary['published'].items())
            _log(f'[{PROG}] published {summary["total"]} messages in {summary["passes"]} '
                 f'pass(es) ({per_topic}); achieved rate {summary["achieved_rate"]} '
                 f'(requested {args.rate:g}), max lag {summary["max_lag_ms"]} ms'
                 + (f'; skipped {len(summary["skipped"])} topic(s) of unknown types'
                    if summary['skipped'] else ''))
        print(json.dumps(summary), flush=True)
    return code


if __name__ == '__main__':
    sys.exit(main())
