"""
llmos-demo: the whole live path on the built-in simulated sensors, no robot needed.

1. writes a bag of the simulated scene (once; reused),
2. trains a small model on it with llmos-train (once; reused),
3. runs the simulated source and perception_node (the launch file's graph, embedded runner)
   and prints a live summary every second: latent rate, stamp-to-receipt latency,
   contributing modalities, and the cross-modal prediction error of camera and taxels.

    llmos-demo [--duration S] [--workdir DIR] [--retrain] [--record DIR]

`--record DIR` also writes inputs, latents, predictions, debug images and diagnostics into an
MCAP bag at DIR (opens in Foxglove; `ros2 bag play DIR` or `llmos-replay DIR` replays it).
"""
from __future__ import annotations

import argparse
from collections import deque
import json
from pathlib import Path
import sys
import threading
import time

import numpy as np

from llmos_ros.core.frames import stamp_to_ns
from llmos_ros.errors import LlmosError

DEFAULT_WORKDIR = Path.home() / '.cache' / 'llmos_ros' / 'demo'


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='llmos-demo', description=__doc__.split('\n\n')[0])
    p.add_argument('--duration', type=float, default=30.0,
                   help='seconds to run live (0: until Ctrl-C)')
    p.add_argument('--workdir', type=Path, default=DEFAULT_WORKDIR,
                   help=f'bag, model and logs (default {DEFAULT_WORKDIR})')
    p.add_argument('--bag-seconds', type=float, default=300.0, help='simulated training data')
    p.add_argument('--steps', type=int, default=800,
                   help='training steps of the demo model (its own budget: a few minutes)')
    p.add_argument('--retrain', action='store_true', help='write a new bag and train again')
    p.add_argument('--record', type=Path, metavar='DIR',
                   help='record inputs and outputs into a new MCAP bag at DIR')
    return p.parse_args(argv)


def prepare(args) -> Path:
    """The bag and model of the demo, made once."""
    import shutil

    from llmos_ros.sim.make_bag import write_bag
    from llmos_ros.train import main as train_main
    bag, model = args.workdir / 'sim_bag', args.workdir / 'model.pt'
    if args.retrain:
        shutil.rmtree(bag, ignore_errors=True)
        model.unlink(missing_ok=True)
    if not (bag / 'metadata.yaml').exists():
        shutil.rmtree(bag, ignore_errors=True)
        print(f'[demo] simulating {args.bag_seconds:.0f} s of sensor data into {bag}', flush=True)
        write_bag(bag, args.bag_seconds, seed=1)
    if not model.exists():
        print(f'[demo] training {model} ({args.steps} steps)', flush=True)
        code = train_main(['--bag', str(bag), '--out', str(model), '--steps', str(args.steps)])
        if code:
            raise LlmosError('training failed')
    else:
        print(f'[demo] reusing {model} (--retrain to train again)', flush=True)
    return model


class Summary:
    """Subscribes to the outputs and the inputs; prints one line a second."""

    def __init__(self, node):
        from diagnostic_msgs.msg import DiagnosticArray  # noqa: F401
        from sensor_msgs.msg import Image

        from llmos_ros.msg import LatentState, TactileArray
        from llmos_ros.nodes.qos import create_sensor_subscription, overridable
        self.node = node
        self.lock = threading.Lock()
        self.latents: deque = deque(maxlen=2000)  # (receipt ns, stamp ns, modalities)
        self.modality_stamps: dict[int, dict[str, int]] = {}
        self.inputs: dict[str, dict[int, np.ndarray]] = {'camera': {}, 'tactile': {}}
        self.errors: dict[str, deque] = {'camera': deque(maxlen=50), 'tactile': deque(maxlen=50)}
        node.create_subscription(LatentState, 'llmos/latent', self.on_latent, 50,
                                 qos_overriding_options=overridable())
        create_sensor_subscription(node, Image, 'camera/image_raw',
                                   lambda m: self.on_input('camera', m))
        create_sensor_subscription(node, TactileArray, 'tactile/array',
                                   lambda m: self.on_input('tactile', m))
        node.create_subscription(Image, 'llmos/prediction/camera',
                                 lambda m: self.on_prediction('camera', m), 10,
                                 qos_overriding_options=overridable())
        node.create_subscription(TactileArray, 'llmos/prediction/tactile',
                                 lambda m: self.on_prediction('tactile', m), 10,
                                 qos_overriding_options=overridable())

    @staticmethod
    def _array(kind: str, msg) -> np.ndarray:
        if kind == 'camera':
            return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, -1)
        return np.asarray(msg.values, np.float32).reshape(msg.rows, msg.cols, msg.channels)

    def on_latent(self, msg):
        now = self.node.get_clock().now().nanoseconds
        stamp = stamp_to_ns(msg.header.stamp)
        with self.lock:
            self.latents.append((now, stamp, tuple(msg.modalities)))
            self.modality_stamps[stamp] = {m: stamp_to_ns(s) for m, s in
                                           zip(msg.modalities, msg.modality_stamps)}
            while len(self.modality_stamps) > 300:
                self.modality_stamps.pop(next(iter(self.modality_stamps)))

    def on_input(self, kind, msg):
        with self.lock:
            frames = self.inputs[kind]
            frames[stamp_to_ns(msg.header.stamp)] = self._array(kind, msg)
            while len(frames) > 300:
                frames.pop(next(iter(frames)))

    def on_prediction(self, kind, msg):
        """Mean absolute error against the input the prediction stands for (never seen by it)."""
        pred = self._array(kind, msg).astype(np.float32)
        with self.lock:
            used = self.modality_stamps.get(stamp_to_ns(msg.header.stamp), {}).get(kind)
            actual = self.inputs[kind].get(used)
        if actual is not None and actual.shape == pred.shape:
            self.errors[kind].append(float(np.abs(pred - actual.astype(np.float32)).mean()))

    def line(self, window_s: float = 1.0) -> str:
        now = self.node.get_clock().now().nanoseconds
        with self.lock:
            recent = [x for x in self.latents if x[0] >= now - window_s * 1e9]
            errors = {k: (np.mean(v) if v else float('nan')) for k, v in self.errors.items()}
        if not recent:
            return 'waiting for /llmos/latent ...'
        latency = np.array([(r - s) / 1e6 for r, s, _ in recent])
        mods = ','.join(recent[-1][2])
        return (f'latent {len(recent) / window_s:5.1f} Hz | stamp->receipt p50 '
                f'{np.percentile(latency, 50):5.1f} ms p99 {np.percentile(latency, 99):5.1f} ms |'
                f' modalities {mods:<22} | prediction MAE camera {errors["camera"]:5.1f}/255 '
                f'taxels {errors["tactile"]:.3f}')


def run_live(model: Path, duration: float, record: Path | None = None) -> dict:
    import rclpy
    from rclpy.node import Node

    from llmos_ros.nodes.runner import Runner, graph_from_arguments
    from llmos_ros.nodes.runtime import use_dds_profile
    use_dds_profile()
    rclpy.init(args=['llmos_demo'])
    runner = Runner(graph_from_arguments({'model': str(model), 'start_sim': 'true'}))
    watcher = Node('llmos_demo_summary')
    summary = Summary(watcher)
    recorder = None
    if record is not None:
        from llmos_ros.nodes.recorder import BagRecorder
        recorder = BagRecorder(watcher, record)
        print(f'[demo] recording into {record}', flush=True)
    runner.executor.add_node(watcher)
    runner.start()
    lines = []
    try:
        end = time.monotonic() + (duration if duration > 0 else float('inf'))
        while time.monotonic() < end and rclpy.ok():
            time.sleep(1.0)
            lines.append(summary.line())
            print(f'[demo] {lines[-1]}', flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        runner.executor.remove_node(watcher)
        runner.stop()
        recorded = recorder.close() if recorder is not None else None
        watcher.destroy_node()
        rclpy.try_shutdown()
    result = {'latents': len(summary.latents), 'last': lines[-1] if lines else ''}
    if recorded is not None:
        result['recorded'] = {'bag': str(record), 'messages': recorded}
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        args.workdir.mkdir(parents=True, exist_ok=True)
        model = prepare(args)
        if args.record is not None and args.record.exists():
            raise LlmosError(f'--record {args.record}: it exists already; give a new folder')
        result = run_live(model, args.duration, args.record)
    except LlmosError as exc:
        print(f'llmos-demo: error: {exc}', file=sys.stderr)
        return 2
    print(json.dumps({'model': str(model), **result}))
    return 0 if result['latents'] else 1


if __name__ == '__main__':
    sys.exit(main())
