"""camera_node over real DDS: reads a video file the test writes, checks frames, rate, stamps."""
import os
import signal
import subprocess
import time

from helpers import python_cmd, python_env, spin_until
import numpy as np
import pytest

pytestmark = pytest.mark.ros

W, H = 64, 48
STEP = 4  # frame index k is encoded as blue = STEP * k in the left half (lossless FFV1)


def write_video(path, n_frames: int, fps: float = 30.0, size=(W, H)) -> str:
    """Lossless video; frame k: left half BGR (STEP*k, 100, 200), right half (0, green(k), 50)."""
    import cv2
    W, H = size  # noqa: N806 - the module's frame size unless given
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'FFV1'), fps, (W, H))
    assert writer.isOpened()
    for k in range(n_frames):
        frame = np.zeros((H, W, 3), np.uint8)
        frame[:, :W // 2] = (STEP * k, 100, 200)
        frame[:, W // 2:] = (0, green(k), 50)
        writer.write(frame)
    writer.release()
    return str(path)


def green(k: int) -> int:
    return (10 * k) % 250


def frame_index(pixel_blue: float) -> int:
    return int(round(float(pixel_blue) / STEP))


class Listener:
    """Test-side node: collects raw and compressed images and diagnostics, over real DDS."""

    def __init__(self, context, reliable_raw=False):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        from llmos_ros.nodes.qos import sensor_qos
        self.node = Node('camera_test_listener', context=context)
        from sensor_msgs.msg import CameraInfo
        self.raw, self.compressed, self.diagnostics, self.info = [], [], [], []
        self.node.create_subscription(CameraInfo, 'camera/camera_info',
                                      lambda m: self.info.append(m), sensor_qos(200))
        raw_qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE) \
            if reliable_raw else sensor_qos(200)
        self.node.create_subscription(Image, 'camera/image_raw',
                                      lambda m: self.raw.append((time.monotonic(), m)), raw_qos)
        self.node.create_subscription(CompressedImage, 'camera/image_raw/compressed',
                                      lambda m: self.compressed.append(m), sensor_qos(200))
        self.node.create_subscription(DiagnosticArray, '/diagnostics',
                                      lambda m: self.diagnostics.extend(m.status), 10)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)

    def spin_until(self, predicate, timeout_s):
        return spin_until(self.node, predicate, timeout_s, executor=self.executor)

    def camera_values(self) -> dict:
        for status in reversed(self.diagnostics):
            if status.name.endswith(': camera'):
                return {kv.key: kv.value for kv in status.values}
        return {}

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


def start_camera(tmp_path, name: str, *params: str) -> subprocess.Popen:
    args = ['--ros-args']
    for p in params:
        args += ['-p', p]
    out = open(tmp_path / f'{name}.log', 'w')
    return subprocess.Popen(python_cmd('llmos_ros.nodes.camera_node', *args), env=python_env(),
                            stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen, sig=signal.SIGINT, timeout=10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def log_text(tmp_path, name: str) -> str:
    return (tmp_path / f'{name}.log').read_text()


def test_file_raw_and_compressed(tmp_path, rclpy_context):
    """Every frame of a file, in order, raw (rgb8) and JPEG; rate near fps; stamps increasing."""
    import cv2
    n = 60
    video = write_video(tmp_path / 'v.avi', n)
    listener = Listener(rclpy_context, reliable_raw=True)
    # 15 fps: 4 s of video, so endpoint discovery (seconds on a loaded machine; frames before
    # it are not published) leaves most frames to check.
    proc = start_camera(tmp_path, 'cam', f'source:={video}', 'fps:=15.0', 'frame_id:=cam_test',
                        'qos_overrides./camera/image_raw.publisher.reliability:=reliable',
                        'qos_overrides./camera/image_raw.publisher.depth:=50')
    try:
        def last_seen():
            return listener.raw and frame_index(listener.raw[-1][1].data[2]) == n - 1
        assert listener.spin_until(last_seen, 30.0), (
            log_text(tmp_path, 'cam'), {k: v for k, v in listener.camera_values().items()
                                        if k.startswith(('published', 'qos'))},
            len(listener.compressed), len(listener.info))
        listener.spin_until(lambda: False, 0.5)  # nothing after the end of the file (no loop)
        assert frame_index(listener.raw[-1][1].data[2]) == n - 1
        assert proc.poll() is None, 'the node stays up after the end of the file'
        listener.spin_until(lambda: listener.camera_values().get('state') == 'end_of_file', 3.0)
        values = listener.camera_values()
    finally:
        rc = stop(proc)
        listener.close()
    log = log_text(tmp_path, 'cam')
    assert rc == 0, log
    assert 'Traceback' not in log
    assert values.get('state') == 'end_of_file', values

    msgs = [m for _, m in listener.raw]
    indices = [frame_index(m.data[2]) for m in msgs]
    # Frames published before the listener matched are gone (volatile); the rest arrive in order.
    assert indices == list(range(indices[0], n)), indices
    # (none is lost after that: the order check above; enough remain to measure the rate)
    assert len(indices) >= 15, f'only {len(indices)} of {n} frames received'
    first = msgs[0]
    assert (first.encoding, first.width, first.height, first.step) == ('rgb8', W, H, 3 * W)
    assert first.header.frame_id == 'cam_test'
    image = np.frombuffer(bytes(first.data), np.uint8).reshape(H, W, 3)
    k = indices[0]
    assert (image[:, :W // 2] == (200, 100, STEP * k)).all()  # RGB of BGR (STEP*k, 100, 200)
    assert (image[:, W // 2:] == (50, green(k), 0)).all()
    stamps = np.array([m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in msgs])
    assert (np.diff(stamps) > 0).all()
    stamp_rate = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9)
    arrivals = np.array([t for t, _ in listener.raw])
    arrival_rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    print(f'\ncamera: requested 15.0 fps, stamps {stamp_rate:.2f} fps, '
          f'arrivals {arrival_rate:.2f} fps over {len(stamps)} frames')
    assert 10.0 < stamp_rate < 20.0
    assert 10.0 < arrival_rate < 22.5

    # Compressed: image_transport's format string, the same stamps, decodable JPEG content.
    assert len(listener.compressed) >= len(msgs) * 0.8
    jpeg = listener.compressed[-1]
    assert jpeg.format == 'rgb8; jpeg compressed bgr8'
    assert jpeg.header.frame_id == 'cam_test'
    raw_stamps = set(stamps.tolist())
    assert all(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec in raw_stamps
               for m in listener.compressed)
    decoded = cv2.imdecode(np.frombuffer(bytes(jpeg.data), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (H, W, 3)
    assert np.abs(decoded[H // 2, W // 4].astype(int) - (STEP * (n - 1), 100, 200)).max() <= 8


def test_loop_mono_sigterm_and_restart(tmp_path, rclpy_context):
    """loop:=true wraps without a gap; mono8 only; SIGTERM exits 0; a second start works too."""
    n = 12
    video = write_video(tmp_path / 'short.avi', n)
    listener = Listener(rclpy_context)
    params = (f'source:={video}', 'loop:=true', 'fps:=60.0', 'encoding:=mono8',
              'publish_compressed:=false')
    for run, sig in (('first', signal.SIGTERM), ('second', signal.SIGINT)):
        listener.raw.clear()
        proc = start_camera(tmp_path, run, *params)
        try:
            assert listener.spin_until(lambda: len(listener.raw) >= 2 * n + 5, 30.0), \
                log_text(tmp_path, run)
        finally:
            rc = stop(proc, sig)
        assert rc == 0, log_text(tmp_path, run)
        assert 'Traceback' not in log_text(tmp_path, run)
        msgs = [m for _, m in listener.raw]
        assert {m.encoding for m in msgs} == {'mono8'}
        assert not listener.compressed
        gray = [int(m.data[W - 1]) for m in msgs]  # mono8 of BGR (0, green(k), 50)
        expected = [0.587 * green(k) + 0.299 * 50 for k in range(n)]
        indices = [int(np.argmin([abs(g - e) for e in expected])) for g in gray]
        steps = [(b - a) % n for a, b in zip(indices, indices[1:])]
        assert steps.count(1) >= len(steps) - 2, indices  # consecutive across the wrap
        assert indices.count(0) >= 2, 'the file was not looped'
    listener.close()


def test_stream_reconnects(tmp_path, rclpy_context):
    """A URL source that is missing is retried; it streams once it appears, and again after EOF."""
    late = tmp_path / 'late.avi'
    listener = Listener(rclpy_context)
    proc = start_camera(tmp_path, 'url', f'source:=file://{late}', 'reconnect_period_s:=0.2',
                        'diagnostics_period_s:=0.2', 'publish_compressed:=false')
    try:
        assert listener.spin_until(
            lambda: listener.camera_values().get('state') == 'disconnected', 20.0), \
            log_text(tmp_path, 'url')
        assert not listener.raw
        write_video(tmp_path / 'tmp.avi', 10, fps=50.0)
        os.rename(tmp_path / 'tmp.avi', late)  # the device "comes back"
        assert listener.spin_until(
            lambda: int(listener.camera_values().get('reconnects', 0)) >= 2, 20.0), \
            log_text(tmp_path, 'url')
        assert len(listener.raw) >= 10
    finally:
        rc = stop(proc)
        listener.close()
    log = log_text(tmp_path, 'url')
    assert rc == 0 and 'Traceback' not in log, log
    assert 'cannot open camera source' in log


def test_user_errors_exit_cleanly(tmp_path):
    """A missing file or a bad encoding: one clear error line, exit status 1, no traceback."""
    cases = {'missing': ('source:=/nonexistent/video.avi',),
             'encoding': (f'source:={write_video(tmp_path / "e.avi", 2)}', 'encoding:=yuv'),
             'calibration': (f'source:={tmp_path / "e.avi"}',
                             f'camera_info_url:=file://{_calibration(tmp_path, drop="P")}'),
             'range': (f'source:={tmp_path / "e.avi"}', 'jpeg_quality:=0'),
             }
    procs = {name: start_camera(tmp_path, name, *params) for name, params in cases.items()}
    for name, proc in procs.items():
        assert proc.wait(30) == 1, log_text(tmp_path, name)
    missing, encoding = log_text(tmp_path, 'missing'), log_text(tmp_path, 'encoding')
    assert "video file '/nonexistent/video.avi' does not exist" in missing
    assert "parameter encoding is 'yuv'; expected one of rgb8, bgr8, mono8" in encoding
    assert 'Traceback' not in missing + encoding
    calibration = log_text(tmp_path, 'calibration')
    assert 'field projection_matrix is missing' in calibration, calibration
    assert 'jpeg_quality out of range' in log_text(tmp_path, 'range')


CAL_K = [60.0, 0.0, 32.0, 0.0, 61.0, 24.0, 0.0, 0.0, 1.0]


def _calibration(tmp_path, drop: str = '') -> str:
    """A camera_calibration_parsers YAML file for a W x H camera (without `drop`'s matrix)."""
    lines = [f'image_width: {W}', f'image_height: {H}', 'camera_name: test_cam',
             f'camera_matrix: {{rows: 3, cols: 3, data: {CAL_K}}}',
             'distortion_model: plumb_bob',
             'distortion_coefficients: {rows: 1, cols: 5, data: [0.1, -0.2, 0.0, 0.0, 0.05]}',
             'rectification_matrix: {rows: 3, cols: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}']
    if drop != 'P':
        lines.append('projection_matrix: {rows: 3, cols: 4, data: '
                     '[60, 0, 32, 0, 0, 61, 24, 0, 0, 0, 1, 0]}')
    path = tmp_path / f'calibration{drop}.yaml'
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


def test_camera_info(tmp_path, rclpy_context):
    """camera_info beside every image: same stamp and optical frame; calibrated or not."""
    video = write_video(tmp_path / 'v.avi', 10)
    listener = Listener(rclpy_context)
    for name, params in (('uncalibrated', ()),
                         ('calibrated', (f'camera_info_url:={_calibration(tmp_path)}',))):
        listener.raw.clear()
        listener.info.clear()
        proc = start_camera(tmp_path, name, f'source:={video}', 'loop:=true',
                            'publish_compressed:=false', *params)
        try:
            assert listener.spin_until(lambda: len(listener.info) >= 5 and
                                       len(listener.raw) >= 5, 20.0), log_text(tmp_path, name)
        finally:
            assert stop(proc) == 0, log_text(tmp_path, name)
        info = listener.info[-1]
        assert info.header.frame_id == 'camera_optical_frame'
        assert listener.raw[-1][1].header.frame_id == 'camera_optical_frame'
        assert (info.width, info.height) == (W, H)
        image_stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for _, m in listener.raw}
        assert (info.header.stamp.sec, info.header.stamp.nanosec) in image_stamps
        if name == 'uncalibrated':
            assert list(info.k) == [0.0] * 9 and list(info.d) == []
        else:
            assert list(info.k) == CAL_K
            assert info.distortion_model == 'plumb_bob'
            assert list(info.d) == pytest.approx([0.1, -0.2, 0.0, 0.0, 0.05])
            assert list(info.p)[:3] == [60.0, 0.0, 32.0]
    listener.close()


def test_large_images_reach_a_best_effort_subscriber(tmp_path, rclpy_context):
    """
    640x480 rgb8 (900 KiB) at 10 Hz from the node's reliable publisher: nearly all arrive.

    With Fast DDS defaults (512 KiB shared-memory segment) only a few of 50 did; the nodes load
    config/fastdds.xml (larger segment and socket buffers) unless a profile is configured.
    """
    n = 40
    video = write_video(tmp_path / 'big.avi', n, size=(640, 480))
    listener = Listener(rclpy_context)  # best effort, as perception_node subscribes
    proc = start_camera(tmp_path, 'big', f'source:={video}', 'fps:=10.0',
                        'publish_compressed:=false')
    try:
        def last_seen():
            return listener.raw and frame_index(listener.raw[-1][1].data[2]) == n - 1
        listener.spin_until(last_seen, 30.0)
        listener.spin_until(lambda: False, 0.3)
    finally:
        assert stop(proc) == 0, log_text(tmp_path, 'big')
    indices = [frame_index(m.data[2]) for _, m in listener.raw]
    assert indices, log_text(tmp_path, 'big')
    sent = n - indices[0]  # frames from the first one this subscriber matched
    assert listener.raw[0][1].width == 640
    print(f'\n640x480 rgb8 at 10 Hz, best-effort subscriber: {len(indices)} of {sent} received')
    assert len(indices) >= 0.9 * sent, indices
