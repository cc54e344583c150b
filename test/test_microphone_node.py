"""
microphone_node over real PortAudio and DDS, with an ALSA `file` capture device.

The ALSA `file` plugin reads its `infile` as the captured signal. A regular file is read as fast as
the CPU allows (not real time) and, at its end, ALSA repeats stale data; so the infile here is a
FIFO: capture blocks until the test writes. A feeder writes silence at about real time (short
reads: ALSA pads them with stale silence) until chunks arrive, then pauses; the whole signal is
written in one write that fits in the pipe, so every read the plugin makes of it is complete and
bit-exact; then the feeder resumes until the node has stopped.
"""
import fcntl
import os
import signal
import subprocess
import threading
import time

from helpers import python_cmd, python_env, spin_until
import numpy as np
import pytest

pytestmark = pytest.mark.ros

RATE, CHANNELS, CHUNK = 16000, 2, 1600
F_SETPIPE_SZ = 1031


def asound_conf(tmp_path, infile) -> str:
    """ALSA config with a capture device `fakemic`: 16 kHz stereo S16_LE read from `infile`."""
    conf = tmp_path / 'asound.conf'
    conf.write_text(
        f'pcm.wavfile {{ type file slave.pcm "null" file "/dev/null" infile "{infile}" '
        'format "raw" }\n'
        f'pcm.fakemic {{ type plug slave {{ pcm "wavfile" format S16_LE rate {RATE} '
        f'channels {CHANNELS} }} }}\n')
    return f'/usr/share/alsa/alsa.conf:{conf}'


def start_microphone(tmp_path, name, alsa_path, *params) -> subprocess.Popen:
    args = ['--ros-args']
    for p in params:
        args += ['-p', p]
    out = open(tmp_path / f'{name}.log', 'w')
    return subprocess.Popen(python_cmd('llmos_ros.nodes.microphone_node', *args),
                            env=python_env(ALSA_CONFIG_PATH=alsa_path),
                            stdout=out, stderr=subprocess.STDOUT)


def log_text(tmp_path, name) -> str:
    return (tmp_path / f'{name}.log').read_text()


def test_signal_bit_exact_and_contiguous(tmp_path, rclpy_context):
    """Published samples equal the signal, no gap or overlap; stamps exactly contiguous."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from llmos_ros.msg import AudioChunk

    rng = np.random.default_rng(5)
    signal_i16 = rng.integers(-32768, 32768, size=(RATE * 3 // 2, CHANNELS), dtype=np.int16)
    signal_i16[0] = (12345, -12345)  # a first frame that stale or missing data cannot fake
    fifo = tmp_path / 'mic.fifo'
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR)  # never blocks; keeps the FIFO open for ALSA's probes
    fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)
    payload = np.concatenate([signal_i16, np.zeros((RATE // 2, CHANNELS), np.int16)]).tobytes()
    assert len(payload) <= fcntl.fcntl(fd, 1032)  # F_GETPIPE_SZ: one write, read whole

    node = Node('microphone_test_listener', context=rclpy_context)
    chunks = []
    node.create_subscription(AudioChunk, 'microphone/audio', chunks.append,
                             QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    stop_feeding, paused = threading.Event(), threading.Event()

    def feed_silence():  # ~real time, so PortAudio keeps running while the test waits
        silence = bytes(4 * 320)
        while not stop_feeding.wait(0.02):
            if not paused.is_set():
                os.write(fd, silence)

    feeder = threading.Thread(target=feed_silence, daemon=True)
    feeder.start()
    proc = start_microphone(
        tmp_path, 'mic', asound_conf(tmp_path, fifo), 'device:=fakemic',
        f'sample_rate:={RATE}', f'channels:={CHANNELS}', 'chunk_s:=0.1', 'frame_id:=mic_test',
        'qos_overrides./microphone/audio.publisher.reliability:=reliable',
        'qos_overrides./microphone/audio.publisher.depth:=500')
    n_values = signal_i16.size

    def received_signal():
        values = np.concatenate([np.asarray(c.samples, np.float32) for c in chunks])
        nonzero = np.flatnonzero(values)
        return len(nonzero) and len(values) - nonzero[0] >= n_values

    try:
        # Chunks of silence arrive: the node's publisher has matched this subscription too.
        assert spin_until(node, lambda: len(chunks) >= 2, 30.0, executor), \
            log_text(tmp_path, 'mic')
        paused.set()
        spin_until(node, lambda: False, 0.3, executor)  # ALSA drains the silence, then waits
        os.write(fd, payload)  # the whole signal, at once
        assert spin_until(node, received_signal, 30.0, executor), \
            f'{len(chunks)} chunks; ' + log_text(tmp_path, 'mic')
        paused.clear()
        spin_until(node, lambda: False, 0.3, executor)
    finally:
        paused.clear()
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(15)
        finally:
            stop_feeding.set()
            if proc.poll() is None:
                proc.kill()
            feeder.join()
            os.close(fd)
            executor.shutdown()
            node.destroy_node()
    log = log_text(tmp_path, 'mic')
    assert rc == 0 and 'Traceback' not in log, log
    assert 'overflow' not in log

    assert {(c.sample_rate, c.channels, c.header.frame_id) for c in chunks} == \
        {(RATE, CHANNELS, 'mic_test')}
    assert all(len(c.samples) == CHUNK * CHANNELS for c in chunks), 'chunks of chunk_s exactly'
    samples = np.concatenate([np.asarray(c.samples, np.float32) for c in chunks])
    start = int(np.flatnonzero(samples)[0])  # silence before the signal, then the signal
    assert start % CHANNELS == 0
    expected = signal_i16.reshape(-1).astype(np.float32) / 32768.0
    assert np.array_equal(samples[start:start + expected.size], expected), \
        'not bit-exact, or a gap/overlap between chunks'

    stamps = np.array([c.header.stamp.sec * 10**9 + c.header.stamp.nanosec for c in chunks])
    spacing_error = np.abs(np.diff(stamps) - CHUNK * 10**9 // RATE)
    print(f'\nmicrophone: {len(chunks)} chunks, stamp spacing error max {spacing_error.max()} ns '
          f'(chunk {CHUNK / RATE * 1e3:.0f} ms); first stamp {stamps[0] / 1e9:.3f} s vs '
          f'now {time.time():.3f} s')
    assert spacing_error.max() == 0
    # Capture time is ROS (system) time of the capture, not of the burst delivery.
    assert abs(stamps[0] / 1e9 - time.time()) < 60


def test_missing_device_lists_devices(tmp_path):
    """A device that does not exist: one error line naming the input devices, exit status 1."""
    raw = tmp_path / 'silence.raw'
    raw.write_bytes(bytes(4 * RATE))
    proc = start_microphone(tmp_path, 'missing', asound_conf(tmp_path, raw),
                            'device:=no_such_mic')
    assert proc.wait(30) == 1, log_text(tmp_path, 'missing')
    log = log_text(tmp_path, 'missing')
    assert "no audio input device 'no_such_mic'; input devices: " in log, log
    assert "'fakemic' (ALSA, " in log and "'wavfile' (ALSA, " in log
    assert 'Traceback' not in log
