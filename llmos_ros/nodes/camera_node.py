"""
camera_node: OpenCV capture published as the contract's camera topics.

Sources (parameter `source`): a device index ('0'), a device path ('/dev/video0'), a video file
(played at `fps` or the file's own rate; `loop` rewinds it at the end) or a stream URL
('rtsp://...', 'http://...', 'file:///path/video.avi'). Devices and URLs that fail or disappear
are reopened every `reconnect_period_s`; a missing or unreadable video file is a start-up error.

Publishes (relative names, remappable; system-default (reliable) QoS per REP 2003, overridable
with qos_overrides.<topic>.publisher.*):
  camera/image_raw             sensor_msgs/Image, `encoding` rgb8 | bgr8 | mono8
  camera/camera_info           sensor_msgs/CameraInfo, same stamp and frame as each image: from
                               `camera_info_url` (camera_calibration_parsers YAML), or
                               uncalibrated (size only, zero matrices) without one
  camera/image_raw/compressed  sensor_msgs/CompressedImage, JPEG, format as image_transport
                               writes it ('rgb8; jpeg compressed bgr8')
  /diagnostics                 diagnostic_msgs/DiagnosticArray: state, rate, drops, reconnects
Each frame is stamped with the ROS clock when the grab returned. Capture runs on its own thread,
so a slow or blocked device never holds up the executor.
"""
from __future__ import annotations

import os
import threading
import time

from rclpy.node import Node

from llmos_ros.core.calibration import Calibration, load_calibration, uncalibrated
from llmos_ros.errors import ConfigError
from llmos_ros.nodes import diagnostics as diag
from llmos_ros.nodes.qos import QosEvents, create_sensor_publisher
from llmos_ros.nodes.runtime import Param, declare_parameters, run_node

ENCODINGS = ('rgb8', 'bgr8', 'mono8')
RAW_TOPIC = 'camera/image_raw'
INFO_TOPIC = 'camera/camera_info'
COMPRESSED_TOPIC = 'camera/image_raw/compressed'
DEFAULT_FILE_FPS = 30.0
LOG_EVERY_S = 10.0  # repeated warnings (device still missing) are logged this often

PARAMETERS = {
    'source': Param('0', 'device index, /dev/videoN, video file path or stream URL', dynamic=True),
    'width': Param(0, 'requested frame width; 0 (with height 0) keeps the source size; frames '
                   'of another size are resized', (0, 16384)),
    'height': Param(0, 'requested frame height; 0 keeps the source size', (0, 16384)),
    'fps': Param(0.0, 'files: playback rate (0: the file rate); devices: requested rate and '
                 'upper bound', (0.0, 1000.0)),
    'fourcc': Param('', "devices: pixel format to request, e.g. 'MJPG'; '' keeps the driver's"),
    'encoding': Param('rgb8', 'published encoding', constraints='rgb8 | bgr8 | mono8'),
    'frame_id': Param('camera_optical_frame', 'header.frame_id of images and camera_info '
                      '(an optical frame, REP 103: z forward, x right, y down)'),
    'camera_info_url': Param('', 'calibration file (camera_calibration_parsers YAML, file:// '
                             'or a path); empty: an uncalibrated camera_info'),
    'camera_name': Param('camera', 'camera_name expected in the calibration file'),
    'publish_raw': Param(True, 'publish camera/image_raw'),
    'publish_compressed': Param(True, 'publish camera/image_raw/compressed (JPEG)'),
    'jpeg_quality': Param(90, 'JPEG quality of the compressed stream', (1, 100)),
    'loop': Param(False, 'video files: rewind at the end instead of stopping'),
    'reconnect_period_s': Param(1.0, 'devices and URLs: reopen this often after a failure; '
                                '0: never', (0.0, 3600.0)),
    'diagnostics_period_s': Param(1.0, 'period of /diagnostics', (0.01, 3600.0)),
}


def source_kind(source: str) -> str:
    """'index', 'device', 'url' or 'file' for a `source` parameter value."""
    text = source.strip()
    if text.lstrip('-').isdigit():
        return 'index'
    if '://' in text:
        return 'url'
    if text.startswith('/dev/'):
        return 'device'
    return 'file'


def _quiet_opencv() -> None:
    """OpenCV's own warnings would repeat at every reopen attempt; this node logs its own."""
    import cv2
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # older OpenCV without utils.logging
        pass


class CameraNode(Node):
    NODE_NAME = 'llmos_camera'

    def __init__(self, **kwargs):
        super().__init__(self.NODE_NAME, **kwargs)
        # source:=0 arrives as an integer, source:=/dev/video0 as a string: accept both.
        p = declare_parameters(self, PARAMETERS)
        self.source = str(p['source']).strip()
        self.kind = source_kind(self.source)
        self.encoding = str(p['encoding'])
        self.frame_id = str(p['frame_id'])
        self.width, self.height = int(p['width']), int(p['height'])
        self.fps = float(p['fps'])
        self.fourcc = str(p['fourcc'])
        self.jpeg_quality = int(p['jpeg_quality'])
        self.loop = bool(p['loop'])
        self.reconnect_period_s = float(p['reconnect_period_s'])
        self._validate(p)
        self.camera_name = str(p['camera_name'])
        self.calibration = (load_calibration(str(p['camera_info_url']))
                            if p['camera_info_url'] else None)
        self._warned_size = False
        # Files and file:// URLs are read faster than real time: pace them by sleeping. Live
        # devices and network streams deliver at their own rate: grab continuously, skip extras.
        self.paced = self.kind == 'file' or self.source.startswith('file://')

        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        self._image_type, self._compressed_type = Image, CompressedImage
        self._info_type = CameraInfo
        self.qos_events = QosEvents(self)
        self._raw_pub = (create_sensor_publisher(self, Image, RAW_TOPIC, events=self.qos_events)
                         if p['publish_raw'] else None)
        self._jpeg_pub = (create_sensor_publisher(self, CompressedImage, COMPRESSED_TOPIC,
                                                  events=self.qos_events)
                          if p['publish_compressed'] else None)
        self._info_pub = create_sensor_publisher(self, CameraInfo, INFO_TOPIC,
                                                 events=self.qos_events)
        self.tracker = diag.RateTracker()
        self.counts = {'published_raw': 0, 'published_compressed': 0, 'reconnects': 0,
                       'throttled': 0}
        self.state = 'connecting'
        self.actual_fps = 0.0  # as the source reports it
        self.frame_size = (0, 0)
        self._stop = threading.Event()
        _quiet_opencv()
        self._cap = self._open() if self.kind == 'file' else None
        if self.kind == 'file' and self._cap is None:
            raise ConfigError(f'cannot read video file {self.source!r} (not a video OpenCV can '
                              'decode)')
        self._diagnostics = diag.DiagnosticsPublisher(self, self._statuses,
                                                      float(p['diagnostics_period_s']))
        outputs = [t for t, pub in ((RAW_TOPIC, self._raw_pub), (COMPRESSED_TOPIC, self._jpeg_pub))
                   if pub is not None]
        self.get_logger().info(f'camera source {self.source!r} ({self.kind}), encoding '
                               f'{self.encoding}, publishing {", ".join(outputs)}')
        self._thread = threading.Thread(target=self._run, name='camera_capture', daemon=True)
        self._thread.start()

    def _validate(self, p: dict) -> None:
        if not self.source:
            raise ConfigError('parameter source is empty: give a device index, a device path, '
                              'a video file or a stream URL')
        if self.encoding not in ENCODINGS:
            raise ConfigError(f'parameter encoding is {self.encoding!r}; expected one of '
                              f'{", ".join(ENCODINGS)}')
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f'parameter jpeg_quality is {self.jpeg_quality}; expected 1..100')
        if self.width < 0 or self.height < 0 or (self.width > 0) != (self.height > 0):
            raise ConfigError('parameters width and height must both be > 0, or both 0 (keep '
                              f'the source size); got {self.width}x{self.height}')
        if self.fps < 0:
            raise ConfigError(f'parameter fps is {self.fps}; expected >= 0 (0: source rate)')
        if self.fourcc and len(self.fourcc) != 4:
            raise ConfigError(f'parameter fourcc is {self.fourcc!r}; expected 4 characters')
        if not (p['publish_raw'] or p['publish_compressed']):
            raise ConfigError('publish_raw and publish_compressed are both false: nothing to do')
        if self.kind == 'file' and not os.path.isfile(self.source):
            raise ConfigError(f'video file {self.source!r} does not exist (source must be a '
                              'device index, a /dev path, a video file or a URL)')

    # --- capture thread --------------------------------------------------------------------------
    def _open(self):
        import cv2
        target = int(self.source) if self.kind == 'index' else self.source
        cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            cap.release()
            return None
        if self.kind in ('index', 'device'):
            if self.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))
            if self.width > 0:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            if self.fps > 0:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, stamp close to capture
        reported = cap.get(cv2.CAP_PROP_FPS)
        self.actual_fps = reported if reported and reported > 0 else 0.0
        return cap

    def _target_fps(self) -> float:
        if self.fps > 0:
            return self.fps
        if self.paced:
            return self.actual_fps or DEFAULT_FILE_FPS
        return self.actual_fps

    def _run(self) -> None:
        log = self.get_logger()
        last_warning = -1e9
        try:
            while not self._stop.is_set():
                if self._cap is None:
                    self._cap = self._open()
                    if self._cap is None:
                        self.state = 'disconnected'
                        now = time.monotonic()
                        if now - last_warning > LOG_EVERY_S:
                            last_warning = now
                            log.warning(f'cannot open camera source {self.source!r}; retrying '
                                        f'every {self.reconnect_period_s:g} s')
                        if self.reconnect_period_s <= 0 or \
                                self._stop.wait(self.reconnect_period_s):
                            break
                        continue
                    if self.state == 'disconnected':
                        self.counts['reconnects'] += 1
                        log.info(f'camera source {self.source!r} opened again')
                    last_warning = -1e9
                if not self._stream(self._cap):
                    break
        except Exception as exc:  # never die silently: report, stop capturing, keep node alive
            if not self._stop.is_set() and self.context.ok():
                self.state = 'failed'
                log.error(f'camera capture stopped: {exc}')
        finally:
            if self._cap is not None:
                self._cap.release()
                self._cap = None

    def _stream(self, cap) -> bool:
        """Grab and publish until the source ends or fails; False: stop capturing for good."""
        import cv2
        log = self.get_logger()
        self.state = 'streaming'
        period = 1.0 / self._target_fps() if self._target_fps() > 0 else 0.0
        next_due = time.monotonic()
        last_stamp_ns = None
        while not self._stop.is_set():
            if self.paced and period > 0:
                delay = next_due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return False
            ok = cap.grab()
            stamp = self.get_clock().now()
            now = time.monotonic()
            if not ok:
                if self.kind == 'file':
                    if self.loop and cap.set(cv2.CAP_PROP_POS_FRAMES, 0) and cap.grab():
                        stamp, now = self.get_clock().now(), time.monotonic()
                    else:
                        self.state = 'end_of_file'
                        log.info(f'end of video file {self.source!r} (loop is false)')
                        return False
                else:
                    self.tracker.drop('read_failed')
                    self.state = 'disconnected'
                    log.warning(f'camera source {self.source!r} stopped delivering frames; '
                                f'reopening every {self.reconnect_period_s:g} s')
                    cap.release()
                    self._cap = None
                    return self.reconnect_period_s > 0 and \
                        not self._stop.wait(self.reconnect_period_s)
            if period > 0:
                if self.paced:
                    next_due = max(next_due + period, now - period)  # no burst after a stall
                elif now < next_due - 0.5 * period:  # live source faster than fps: skip
                    self.counts['throttled'] += 1
                    continue
                else:
                    next_due = max(next_due + period, now - period)
            ok, frame = cap.retrieve()
            if not ok or frame is None:
                self.tracker.drop('decode_failed')
                continue
            if not self.paced and period > 0 and last_stamp_ns is not None:
                missed = round((stamp.nanoseconds - last_stamp_ns) / 1e9 / period) - 1
                if missed > 0:  # a gap in a live stream: frames lost upstream
                    self.tracker.drop('gap', missed)
            last_stamp_ns = stamp.nanoseconds
            self.tracker.tick(now, stamp.nanoseconds)
            self._publish(frame, stamp)
        return False

    def _publish(self, frame, stamp) -> None:
        import cv2
        if frame.ndim == 3 and frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        if self.width > 0 and (frame.shape[1], frame.shape[0]) != (self.width, self.height):
            frame = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA)
        self.frame_size = (frame.shape[1], frame.shape[0])
        gray = frame.ndim == 2
        if self.encoding == 'mono8':
            source = frame if gray else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        else:
            source = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if gray else frame
        stamp_msg = stamp.to_msg()
        raw_pub, jpeg_pub = self._raw_pub, self._jpeg_pub
        if self._info_pub.get_subscription_count() > 0:
            self._info_pub.publish(self._camera_info(stamp_msg, source.shape[1],
                                                     source.shape[0]))
        if raw_pub is not None and raw_pub.get_subscription_count() > 0:
            image = (cv2.cvtColor(source, cv2.COLOR_BGR2RGB) if self.encoding == 'rgb8'
                     else source)
            msg = self._image_type()
            msg.header.stamp = stamp_msg
            msg.header.frame_id = self.frame_id
            msg.height, msg.width = image.shape[0], image.shape[1]
            msg.encoding = self.encoding
            msg.is_bigendian = 0
            msg.step = image.shape[1] * (1 if image.ndim == 2 else image.shape[2])
            msg.data = image.tobytes()
            raw_pub.publish(msg)
            self.counts['published_raw'] += 1
        if jpeg_pub is not None and jpeg_pub.get_subscription_count() > 0:
            ok, data = cv2.imencode('.jpg', source,
                                    [int(cv2.IMWRITE_JPEG_QUALITY), self.jpeg_quality])
            if not ok:
                self.tracker.drop('jpeg_failed')
                return
            msg = self._compressed_type()
            msg.header.stamp = stamp_msg
            msg.header.frame_id = self.frame_id
            target = 'mono8' if self.encoding == 'mono8' else 'bgr8'
            msg.format = f'{self.encoding}; jpeg compressed {target}'
            msg.data = data.tobytes()
            jpeg_pub.publish(msg)
            self.counts['published_compressed'] += 1

    def _camera_info(self, stamp_msg, width: int, height: int):
        """camera_info for a published frame: the calibration, or an uncalibrated one."""
        cal: Calibration = self.calibration or uncalibrated(width, height, self.camera_name)
        if (cal.width, cal.height) != (width, height) and not self._warned_size:
            self._warned_size = True
            self.get_logger().warning(
                f'calibration is for {cal.width}x{cal.height} but frames are {width}x{height}: '
                'camera_info does not fit the images (set width/height or recalibrate)')
        msg = self._info_type()
        msg.header.stamp = stamp_msg
        msg.header.frame_id = self.frame_id
        msg.width, msg.height = cal.width, cal.height
        msg.distortion_model = cal.distortion_model
        msg.d = list(cal.d)
        msg.k, msg.r, msg.p = list(cal.k), list(cal.r), list(cal.p)
        return msg

    # --- diagnostics, shutdown -------------------------------------------------------------------
    def _statuses(self):
        target = self._target_fps()
        values = {'source': self.source, 'state': self.state,
                  'target_fps': f'{target:.2f}',
                  'frame_size': f'{self.frame_size[0]}x{self.frame_size[1]}',
                  'calibrated': self.calibration is not None,
                  **self.tracker.values(), **self.counts, **self.qos_events.values()}
        rate = self.tracker.rate()
        if self.state in ('disconnected', 'failed', 'connecting'):
            level, message = (diag.ERROR if self.state != 'connecting' else diag.WARN,
                              f'camera {self.state}')
        elif self.state == 'end_of_file':
            level, message = diag.WARN, 'end of video file'
        else:
            level = diag.rate_level(rate, target)
            message = 'streaming' if level == diag.OK else \
                f'rate {rate:.1f} Hz below target {target:.1f} Hz'
        return [diag.make_status(f'{self.get_name()}: camera', self.source, values, level,
                                 message)]

    def destroy_node(self):
        """Stop the capture thread and release the device, then destroy the node."""
        self._stop.set()
        thread = getattr(self, '_thread', None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        if getattr(self, '_diagnostics', None) is not None:
            self._diagnostics.destroy()
            self._diagnostics = None
        return super().destroy_node()


def main(args=None):
    return run_node(CameraNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
