"""llmos-replay over real DDS: every message, in order, equal bytes and stamps; rate; /clock."""
import json
from pathlib import Path
import shutil
import signal
import subprocess
import time

from helpers import python_cmd, python_env, spin_until
import pytest

from llmos_ros.core.bags import BagWriter, read_bag, typestore
from llmos_ros.nodes.replay import main as replay_main
from llmos_ros.sim.make_bag import write_bag

DURATION_S = 2.0
TOPICS = ('/camera/image_raw', '/microphone/audio', '/tactile/array', '/episode/label')


@pytest.fixture(scope='module')
def bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('replay') / 'sim_bag'
    write_bag(path, DURATION_S, seed=3, progress=False)
    return path


def expected_messages(bag_path, topics=None) -> dict:
    """{topic: [(stamp_ns, log_ns, cdr bytes)]} in log order, read straight from the bag."""
    from rosbags.rosbag2 import Reader
    out = {}
    stamps = iter([s for _, _, s, _ in read_bag(bag_path, topics)])
    with Reader(bag_path) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, log_ns, raw in reader.messages(connections=conns):
            out.setdefault(conn.topic, []).append((next(stamps), log_ns, bytes(raw)))
    return out


def start_replay(bag_path, *args) -> subprocess.Popen:
    return subprocess.Popen(python_cmd('llmos_ros.nodes.replay', str(bag_path), *args),
                            env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, restore_signals=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(proc, timeout_s=30.0) -> tuple[int, dict, str]:
    out, err = proc.communicate(timeout=timeout_s)
    assert 'Traceback' not in err, err
    lines = [line for line in out.splitlines() if line.strip()]
    return proc.returncode, json.loads(lines[-1]) if lines else {}, err


class Recorder:
    """Reliable subscriptions that keep every message and its arrival time."""

    def __init__(self, node, topics: dict):
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        self.node = node
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.got = {name: [] for name in topics}
        self.subs = [node.create_subscription(cls, name, self._cb(name), qos)
                     for name, cls in topics.items()]

    def _cb(self, name):
        def callback(msg):
            self.got[name].append((time.monotonic(), msg))
        return callback

    def spin_until(self, predicate, timeout_s: float) -> bool:
        return spin_until(self.node, predicate, timeout_s, executor=self.executor)

    def count(self, name) -> int:
        return len(self.got[name])


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def check_equal(received, expected, cls):
    """Every expected message arrived, in order, equal to the bag's message and stamp."""
    from rclpy.serialization import deserialize_message
    assert len(received) == len(expected)
    for (_, msg), (stamp, _, raw) in zip(received, expected):
        assert msg == deserialize_message(raw, cls)
        if hasattr(msg, 'header'):
            assert stamp_ns(msg) == stamp


@pytest.mark.ros
def test_replay_delivers_every_message_in_order_with_clock(bag, rclpy_context):
    import rclpy
    from rosgraph_msgs.msg import Clock

    from llmos_ros.nodes.convert import message_class
    expected = expected_messages(bag)
    assert set(expected) == set(TOPICS)
    names = {t: t for t in TOPICS}
    names['/tactile/array'] = '/touch'  # --remap
    node = rclpy.create_node('replay_test_sub', context=rclpy_context)
    classes = {names[t]: message_class(_type(bag, t)) for t in TOPICS}
    recorder = Recorder(node, {**classes, '/clock': Clock})
    proc = start_replay(bag, '--clock', '--wait-for-subscribers', '1', '--delay', '0.3',
                        '--remap', '/tactile/array:=/touch')
    try:
        total = {names[t]: len(expected[t]) for t in TOPICS}
        recorder.spin_until(lambda: proc.poll() is not None and all(
            recorder.count(n) >= k for n, k in total.items()), 40.0)
        code, summary, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    assert summary['published'] == total
    assert summary['skipped'] == {}
    for topic in TOPICS:
        check_equal(recorder.got[names[topic]], expected[topic], classes[names[topic]])
    # /clock follows bag time: non-decreasing, within the bag, ending at its last message.
    start = min(v[0][1] for v in expected.values())
    end = max(v[-1][1] for v in expected.values())
    clock = [m.clock.sec * 1_000_000_000 + m.clock.nanosec for _, m in recorder.got['/clock']]
    assert len(clock) == summary['clock_messages']
    assert len(clock) >= 0.5 * 100 * DURATION_S
    assert all(b >= a for a, b in zip(clock, clock[1:]))
    assert start <= clock[0] and clock[-1] == end
    # Ticks are published at about the bag time of their wall time.
    arrivals = [t for t, _ in recorder.got['/clock']]
    slope = (clock[-1] - clock[0]) * 1e-9 / (arrivals[-1] - arrivals[0])
    assert 0.8 < slope < 1.25
    assert 0.9 < summary['achieved_rate'] < 1.1
    node.destroy_node()


def _type(bag_path, topic) -> str:
    from llmos_ros.core.bags import bag_topics
    return bag_topics(bag_path)[topic]


@pytest.mark.ros
def test_replay_rate_two_takes_half_the_time_in_a_namespace(bag, rclpy_context):
    import rclpy
    from sensor_msgs.msg import Image
    expected = expected_messages(bag, ['/camera/image_raw'])['/camera/image_raw']
    node = rclpy.create_node('replay_rate_sub', context=rclpy_context)
    recorder = Recorder(node, {'/robot/camera/image_raw': Image})
    proc = start_replay(bag, '--rate', '2', '--topics', 'camera/image_raw', '--quiet',
                        '--wait-for-subscribers', '1', '--delay', '0.3',
                        '--ros-args', '-r', '__ns:=/robot')
    try:
        recorder.spin_until(lambda: proc.poll() is not None
                   and recorder.count('/robot/camera/image_raw') >= len(expected), 40.0)
        code, summary, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    assert summary['published'] == {'/robot/camera/image_raw': len(expected)}
    got = recorder.got['/robot/camera/image_raw']
    check_equal(got, expected, Image)
    bag_span = (expected[-1][1] - expected[0][1]) * 1e-9
    assert summary['wall_seconds'] == pytest.approx(bag_span / 2, rel=0.1)
    assert summary['achieved_rate'] == pytest.approx(2.0, rel=0.1)
    arrival_span = got[-1][0] - got[0][0]
    assert arrival_span == pytest.approx(bag_span / 2, rel=0.3)
    node.destroy_node()


@pytest.mark.ros
def test_loop_and_start_offset_until_interrupted(bag):
    expected = expected_messages(bag, ['/camera/image_raw'])['/camera/image_raw']
    start = min(v[0][1] for v in expected_messages(bag).values())
    per_pass = sum(1 for _, log, _ in expected if log >= start + 1_000_000_000)
    proc = start_replay(bag, '--loop', '--rate', '10', '--start-offset', '1.0',
                        '--topics', '/camera/image_raw')
    try:
        # interrupt while playing, not while a loaded machine is still starting the process
        deadline = time.monotonic() + 60.0
        while 'playing' not in proc.stdout.readline() and time.monotonic() < deadline:
            assert proc.poll() is None, 'llmos-replay ended before playing'
        time.sleep(2.5)
        proc.send_signal(signal.SIGINT)
        code, summary, err = finish(proc, 15.0)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    assert summary['interrupted'] is True
    assert summary['passes'] >= 2
    n = summary['published']['/camera/image_raw']
    assert per_pass * summary['passes'] <= n < per_pass * (summary['passes'] + 1)


@pytest.mark.ros
def test_unknown_message_types_are_skipped_and_counted(tmp_path):
    from rosbags.typesys import get_types_from_msg
    store = typestore()
    if 'fake_pkg/msg/Thing' not in store.fielddefs:
        store.register(get_types_from_msg('int32 value\n', 'fake_pkg/msg/Thing'))
    path = tmp_path / 'mixed_sqlite3'
    with BagWriter(path, storage='sqlite3') as writer:  # sqlite3 storage too
        for i in range(5):
            t = 1_000_000_000 + i * 10_000_000
            writer.write_label('/chatter', t, f'hello {i}')
            if i < 3:
                writer.write('/fake', 'fake_pkg/msg/Thing', t + 1,
                             store.types['fake_pkg/msg/Thing'](value=i))
    code, summary, err = finish(start_replay(path, '--quiet'))
    assert code == 0, err
    assert 'skipping /fake' in err and 'fake_pkg/msg/Thing' in err
    assert summary['published'] == {'/chatter': 5}
    assert summary['skipped'] == {'/fake': {'type': 'fake_pkg/msg/Thing', 'messages': 3,
                                            'reason': 'message type not installed'}}


def test_missing_corrupt_and_truncated_bags_are_clear_errors(bag, tmp_path, capsys):
    assert replay_main([str(tmp_path / 'nope')]) == 2
    assert 'bag not found' in capsys.readouterr().err
    text = tmp_path / 'notes.txt'
    text.write_text('not a bag')
    assert replay_main([str(text)]) == 2
    assert 'not a bag' in capsys.readouterr().err
    cut = tmp_path / 'cut'
    shutil.copytree(bag, cut)
    mcap = next(cut.glob('*.mcap'))
    data = mcap.read_bytes()
    mcap.write_bytes(data[:len(data) // 2])
    assert replay_main([str(cut)]) == 2
    err = capsys.readouterr().err
    assert 'truncated' in err and 'messages' in err and 'Traceback' not in err
    assert replay_main([str(bag), '--remap', 'no_separator']) == 2
    assert '--remap expects OLD:=NEW' in capsys.readouterr().err


@pytest.mark.ros
def test_topics_not_in_the_bag_give_exit_2(bag, capsys):
    assert replay_main([str(bag), '--topics', '/not/there', '--quiet']) == 2
    err = capsys.readouterr().err
    assert 'not in the bag' in err and 'nothing to replay' in err


def test_empty_bag_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / 'empty'
    with BagWriter(path):
        pass
    code = replay_main([str(path), '--quiet'])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip() == f'llmos-replay: error: nothing to replay: {path} holds no messages'


@pytest.mark.ros
def test_hour_long_gap_is_skipped_with_skip_gaps(tmp_path):
    path = tmp_path / 'gap'
    hour = 3600 * 1_000_000_000
    with BagWriter(path) as writer:
        for i in range(4):
            writer.write_label('/chatter', 1_000_000_000 + i * 10_000_000, f'before {i}')
            writer.write_label('/chatter', 1_000_000_000 + hour + i * 10_000_000, f'after {i}')
    started = time.monotonic()
    code, summary, err = finish(start_replay(path, '--quiet', '--skip-gaps', '0.2'), 60.0)
    assert code == 0, err
    assert time.monotonic() - started < 60.0  # it did not sleep for an hour
    assert summary['published'] == {'/chatter': 8}
    assert 3599.5 < summary['gaps_skipped_s'] < 3600.0
    assert summary['bag_seconds'] < 1.0
