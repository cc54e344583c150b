"""
microphone_node: sounddevice (PortAudio) capture published as llmos_ros/msg/AudioChunk.

Publishes (relative names, remappable; system-default (reliable) QoS per REP 2003, overridable
with qos_overrides./microphone/audio.publisher.*):
  microphone/audio  llmos_ros/msg/AudioChunk: `chunk_frames` frames (chunk_s * sample_rate) of
                    `channels` interleaved float32 samples in [-1, 1]
  /diagnostics      diagnostic_msgs/DiagnosticArray: rate, overflows, clock drift

Stamps: the capture time of each chunk's first sample. At the first PortAudio block the stream
clock (time_info.currentTime) is mapped once to the ROS clock, and the first sample is placed at
its ADC time (time_info.inputBufferAdcTime) on that mapping. From then on stamps advance by the
sample count, so consecutive chunks are exactly contiguous: stamp[k+1] - stamp[k] =
chunk_frames / sample_rate. PortAudio's variable blocks are re-chunked into exact chunk sizes; no
sample is lost or repeated between chunks. After an input overflow (samples lost by the device)
the chunk in progress is published short, and the stamps are re-anchored to the overflowing
block's ADC time on the same mapping; overflows are counted in diagnostics and logged.

A device that does not exist (or cannot capture at the requested settings) is a start-up error:
the node logs one line that names the input devices there are and exits with status 1.
"""
from __future__ import annotations

import queue
import threading
import time

import numpy as np
from rclpy.node import Node

from llmos_ros.errors import ConfigError
from llmos_ros.kinds.audio import AudioFrame
from llmos_ros.nodes import convert
from llmos_ros.nodes import diagnostics as diag
from llmos_ros.nodes.qos import QosEvents, create_sensor_publisher
from llmos_ros.nodes.runtime import Param, declare_parameters, run_node

AUDIO_TOPIC = 'microphone/audio'
SAMPLE_FORMATS = {'int16': 32768.0, 'int32': 2147483648.0, 'float32': 1.0}  # -> scale to [-1, 1]
LOG_EVERY_S = 5.0

PARAMETERS = {
    'device': Param('', "PortAudio input device: index, or (part of) its name; '' = system "
                    'default', dynamic=True),
    'sample_rate': Param(16000, "Hz; 0 = the device's default rate", (0, 768000)),
    'channels': Param(1, 'channels to capture (interleaved in each chunk)', (1, 64)),
    'chunk_s': Param(0.1, 'length of one AudioChunk in seconds (used when chunk_frames is 0)',
                     (0.001, 10.0)),
    'chunk_frames': Param(0, 'length of one AudioChunk in frames; overrides chunk_s when > 0',
                          (0, 1048576)),
    'sample_format': Param('int16', 'capture format (published as float32)',
                           constraints='int16 | int32 | float32'),
    'block_frames': Param(0, 'PortAudio block size; 0 lets PortAudio choose', (0, 1048576)),
    'frame_id': Param('microphone', 'header.frame_id of the chunks'),
    'diagnostics_period_s': Param(1.0, 'period of /diagnostics', (0.01, 3600.0)),
}


def input_devices() -> list[dict]:
    """PortAudio's input devices: index, name, host API, channels, default rate."""
    import sounddevice as sd
    apis = sd.query_hostapis()
    return [{'index': i, 'name': d['name'], 'hostapi': apis[d['hostapi']]['name'],
             'channels': d['max_input_channels'], 'rate': d['default_samplerate']}
            for i, d in enumerate(sd.query_devices()) if d['max_input_channels'] > 0]


def describe_devices(devices: list[dict]) -> str:
    """One line listing input devices, for error messages."""
    if not devices:
        return 'PortAudio finds no input device at all (no sound card, ALSA or PulseAudio input)'
    return 'input devices: ' + '; '.join(
        f"{d['index']} '{d['name']}' ({d['hostapi']}, {d['channels']} ch, {d['rate']:g} Hz)"
        for d in devices)


def resolve_device(device: str) -> dict:
    """The input device for a `device` parameter: '' (default), an index, or part of a name."""
    try:
        import sounddevice as sd
    except OSError as exc:  # libportaudio missing
        raise ConfigError(f'cannot load PortAudio ({exc}); install it, e.g. '
                          'apt-get install libportaudio2') from None
    devices = input_devices()
    text = str(device).strip()
    if text == '':
        index = sd.default.device[0]
        if index is None or index < 0:
            raise ConfigError(f'no default audio input device; {describe_devices(devices)}')
        match = [d for d in devices if d['index'] == index]
    elif text.lstrip('-').isdigit():
        match = [d for d in devices if d['index'] == int(text)]
    else:
        match = [d for d in devices if d['name'] == text] or \
            [d for d in devices if text.lower() in d['name'].lower()]
    if len(match) > 1:
        raise ConfigError(f'audio input device {text!r} is ambiguous; give its index or full '
                          f'name; {describe_devices(match)}')
    if not match:
        raise ConfigError(f'no audio input device {text!r}; {describe_devices(devices)}')
    return match[0]


class MicrophoneNode(Node):
    NODE_NAME = 'llmos_microphone'

    def __init__(self, **kwargs):
        super().__init__(self.NODE_NAME, **kwargs)
        # device:=2 arrives as an integer, device:=fakemic as a string: accept both.
        p = declare_parameters(self, PARAMETERS)
        self.frame_id = str(p['frame_id'])
        self.channels = int(p['channels'])
        self.sample_format = str(p['sample_format'])
        if self.sample_format not in SAMPLE_FORMATS:
            raise ConfigError(f'parameter sample_format is {self.sample_format!r}; expected one '
                              f'of {", ".join(SAMPLE_FORMATS)}')
        if self.channels < 1:
            raise ConfigError(f'parameter channels is {self.channels}; expected >= 1')
        self.device = resolve_device(p['device'])
        self.sample_rate = int(p['sample_rate']) or int(self.device['rate'])
        self.chunk_frames = int(p['chunk_frames']) or int(round(float(p['chunk_s']) *
                                                                self.sample_rate))
        if self.sample_rate <= 0 or self.chunk_frames <= 0:
            raise ConfigError(f'sample_rate ({self.sample_rate}) and the chunk length '
                              f'({self.chunk_frames} frames) must be > 0')
        import sounddevice as sd
        try:
            sd.check_input_settings(device=self.device['index'], channels=self.channels,
                                    dtype=self.sample_format, samplerate=self.sample_rate)
        except (sd.PortAudioError, ValueError) as exc:
            raise ConfigError(f"audio input device {self.device['index']} "
                              f"'{self.device['name']}' cannot capture {self.channels} ch "
                              f'{self.sample_format} at {self.sample_rate} Hz: {exc}') from None

        from llmos_ros.msg import AudioChunk
        self.qos_events = QosEvents(self)
        self._pub = create_sensor_publisher(self, AudioChunk, AUDIO_TOPIC, events=self.qos_events)
        self.tracker = diag.RateTracker()
        self.counts = {'overflows': 0, 'chunks': 0, 'short_chunks': 0, 'frames': 0}
        self.clock_drift_ms = float('nan')
        self._scale = SAMPLE_FORMATS[self.sample_format]
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0
        self._frames_in = 0  # frames received since the start (index of the next frame)
        self._anchor = None  # (frame index, ROS ns of that frame)
        self._offset_ns = None  # ROS ns - PortAudio stream time ns
        self._last_overflow_log = -1e9
        self._worker = threading.Thread(target=self._work, name='microphone_chunks', daemon=True)
        self._worker.start()
        self._diagnostics = diag.DiagnosticsPublisher(self, self._statuses,
                                                      float(p['diagnostics_period_s']))
        try:
            self._stream = sd.InputStream(device=self.device['index'],
                                          samplerate=self.sample_rate, channels=self.channels,
                                          dtype=self.sample_format,
                                          blocksize=int(p['block_frames']),
                                          callback=self._callback)
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            self._stop.set()
            raise ConfigError(f"cannot open audio input device {self.device['index']} "
                              f"'{self.device['name']}': {exc}") from None
        self.get_logger().info(
            f"capturing from {self.device['index']} '{self.device['name']}' "
            f'({self.device["hostapi"]}): {self.channels} ch {self.sample_format} at '
            f'{self.sample_rate} Hz, chunks of {self.chunk_frames} frames on {AUDIO_TOPIC}')

    # --- PortAudio thread: copy and hand over, nothing else --------------------------------------
    def _callback(self, indata, frames, time_info, status) -> None:
        now_ns = self.get_clock().now().nanoseconds
        self._queue.put((indata.copy(), time_info.inputBufferAdcTime, time_info.currentTime,
                         bool(status.input_overflow), now_ns))

    # --- worker thread: stamps, re-chunking, publishing ------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._take(*item)
            except Exception as exc:
                if self._stop.is_set() or not self.context.ok():
                    return  # shutting down: the publisher may already be gone
                self.get_logger().error(f'audio chunk dropped: {exc}')

    def _take(self, data, adc_s: float, current_s: float, overflow: bool, now_ns: int) -> None:
        frames = data.shape[0]
        if self._offset_ns is None and current_s > 0:
            self._offset_ns = now_ns - int(round(current_s * 1e9))
        adc_ns = self._stream_to_ros(adc_s, current_s, frames, now_ns)
        if overflow:
            self.counts['overflows'] += 1
            self.tracker.drop('overflow')
            now = time.monotonic()
            if now - self._last_overflow_log > LOG_EVERY_S:
                self._last_overflow_log = now
                self.get_logger().warning(
                    f"input overflow: samples lost ({self.counts['overflows']} so far); the "
                    'chunk in progress is published short and stamps restart from the device '
                    'clock')
            self._flush()
        if self._anchor is None or overflow:
            self._anchor = (self._frames_in, adc_ns)
        else:
            self.clock_drift_ms = (adc_ns - self._stamp_ns(self._frames_in)) / 1e6
        self._pending.append(data)
        self._pending_frames += frames
        self._frames_in += frames
        self.counts['frames'] += frames
        while self._pending_frames >= self.chunk_frames:
            block = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._publish(block[:self.chunk_frames])
            rest = block[self.chunk_frames:]
            self._pending = [rest] if len(rest) else []
            self._pending_frames = len(rest)

    def _stream_to_ros(self, adc_s: float, current_s: float, frames: int, now_ns: int) -> int:
        """ROS time of this block's first sample: its ADC time on the stream-to-ROS mapping."""
        if self._offset_ns is not None and adc_s > 0:
            return int(round(adc_s * 1e9)) + self._offset_ns
        # A host API without timing information: the block ended about now.
        return now_ns - int(round(frames * 1e9 / self.sample_rate))

    def _stamp_ns(self, frame_index: int) -> int:
        first_index, first_ns = self._anchor
        return first_ns + (frame_index - first_index) * 10**9 // self.sample_rate

    def _flush(self) -> None:
        """Publish the frames waiting for a full chunk (before a gap in the input)."""
        if self._pending_frames:
            self._publish(np.concatenate(self._pending))
            self.counts['short_chunks'] += 1
        self._pending, self._pending_frames = [], 0

    def _publish(self, block: np.ndarray) -> None:
        # `block` starts the pending frames, which end at the newest frame received.
        stamp_ns = self._stamp_ns(self._frames_in - self._pending_frames)
        samples = block.reshape(-1).astype(np.float32)
        if self._scale != 1.0:
            samples /= np.float32(self._scale)
        self._pub.publish(convert.frame_msg(AudioFrame(stamp_ns, self.sample_rate, self.channels,
                                                       samples, self.frame_id)))
        self.counts['chunks'] += 1
        self.tracker.tick(stamp_ns=stamp_ns)

    # --- diagnostics, shutdown -------------------------------------------------------------------
    def _statuses(self):
        expected = self.sample_rate / self.chunk_frames
        rate = self.tracker.rate()
        values = {'device': f"{self.device['index']} {self.device['name']}",
                  'sample_rate': self.sample_rate, 'channels': self.channels,
                  'chunk_frames': self.chunk_frames, 'expected_rate_hz': f'{expected:.2f}',
                  **self.tracker.values(), **self.counts, **self.qos_events.values(),
                  'clock_drift_ms': f'{self.clock_drift_ms:.3f}'}
        if self.counts['overflows']:
            level, message = diag.WARN, f"{self.counts['overflows']} input overflows"
        else:
            level = diag.rate_level(rate, expected)
            message = 'capturing' if level == diag.OK else \
                f'chunk rate {rate:.1f} Hz below {expected:.1f} Hz'
        return [diag.make_status(f'{self.get_name()}: microphone', self.device['name'], values,
                                 level, message)]

    def destroy_node(self):
        """Stop the stream and the worker, then destroy the node."""
        self._stop.set()
        stream = getattr(self, '_stream', None)
        if stream is not None:
            closer = threading.Thread(target=_close_stream, args=(stream,), daemon=True)
            closer.start()
            closer.join(timeout=3.0)  # a stalled device must not hang the shutdown
            self._stream = None
        worker = getattr(self, '_worker', None)
        if worker is not None:
            worker.join(timeout=3.0)
        if getattr(self, '_diagnostics', None) is not None:
            self._diagnostics.destroy()
            self._diagnostics = None
        return super().destroy_node()


def _close_stream(stream) -> None:
    try:
        stream.stop()
        stream.close()
    except Exception:  # already shutting down; a PortAudio error here changes nothing
        pass


def main(args=None):
    return run_node(MicrophoneNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
