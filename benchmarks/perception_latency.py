"""
End-to-end latency and rate of the live path on the simulated sensors.

    python benchmarks/perception_latency.py [--duration 60] [--model model.pt] [--no-predictions]

Starts sim_source_node (camera 30 Hz, taxels 100 Hz, audio 16 kHz in 20 ms chunks) and
perception_node as separate processes, as a deployment runs them, and subscribes here to the
inputs and to llmos/latent. Latency is input stamp -> receipt of the LatentState (the sample
stamp is the camera frame's capture stamp, so this includes pairing, preprocessing, inference,
publishing and DDS delivery). Without --model, a small model is trained first on a simulated bag.

Breakdown, per latent (this process sees the inputs as the node does, on the same host):
`transport_in` camera stamp -> this process's receipt of that frame (sim publish + DDS);
`pairing_wait` that receipt -> receipt of the last other input the sample needed (a taxel frame
stamped at or after t - slop_s, an audio chunk ending at or after it; the synchroniser's rule);
`node_and_out` the rest, up to the latent's receipt (the node's queue, preprocessing, model,
publish, DDS out). The node's own figure (last input callback -> publish, `/diagnostics`
latency_p50/p99_ms) splits the last part. `--torch-threads` and `--backend` (torch |
onnxruntime) set the node's parameters of those names.
The last line is a JSON object.
"""
import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def make_model(workdir: Path) -> Path:
    from llmos_ros.sim.make_bag import write_bag
    from llmos_ros.train import main as train_main
    bag, model = workdir / 'bag', workdir / 'model.pt'
    write_bag(bag, 60.0, seed=5, progress=False)
    if train_main(['--bag', str(bag), '--out', str(model), '--steps', '200', '--quiet']):
        raise SystemExit('training failed')
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--duration', type=float, default=60.0)
    p.add_argument('--warmup', type=float, default=5.0, help='seconds not measured at start')
    p.add_argument('--model', type=Path)
    p.add_argument('--no-predictions', action='store_true')
    p.add_argument('--torch-threads', type=int, default=1, help="the node's torch_threads")
    p.add_argument('--backend', default='torch', help="the node's backend: torch | onnxruntime")
    args = p.parse_args(argv)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_DOMAIN_ID', str(150 + os.getpid() % 50))
    model = args.model or make_model(Path(tempfile.mkdtemp(prefix='llmos_latency_')))

    from diagnostic_msgs.msg import DiagnosticArray
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from llmos_ros.msg import AudioChunk, LatentState, TactileArray
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH',
                                                                                  '')]))
    perception = subprocess.Popen(
        [sys.executable, '-m', 'llmos_ros.nodes.perception_node', '--ros-args',
         '-p', f'model_path:={model}',
         '-p', f'publish_predictions:={"false" if args.no_predictions else "true"}',
         '-p', f'torch_threads:={args.torch_threads}', '-p', f'backend:={args.backend}'],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2.0)
    sim = subprocess.Popen([sys.executable, '-m', 'llmos_ros.nodes.sim_source_node'], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rclpy.init()
    node = Node('llmos_latency_benchmark')
    latents, inputs = [], {'camera': [], 'audio': [], 'tactile': []}  # inputs: (receipt, end)
    node_figures = {}
    node.create_subscription(LatentState, 'llmos/latent', lambda m: latents.append(
        (time.time_ns(), _ns(m.header.stamp), len(m.modalities))), 100)
    for name, kind, topic in (('camera', Image, 'camera/image_raw'),
                              ('audio', AudioChunk, 'microphone/audio'),
                              ('tactile', TactileArray, 'tactile/array')):
        node.create_subscription(kind, topic, lambda m, n=name: inputs[n].append(
            (time.time_ns(), _end_ns(m))), qos_profile_sensor_data)
    node.create_subscription(DiagnosticArray, '/diagnostics',
                             lambda m: node_figures.update(_node_latency(m)), 10)
    cpu0 = {}
    try:
        start = time.monotonic()
        while time.monotonic() - start < args.warmup + args.duration:
            rclpy.spin_once(node, timeout_sec=0.05)
            if not cpu0 and time.monotonic() - start >= args.warmup:
                cpu0 = {'t': time.time_ns(), 'cpu': _cpu_seconds(perception.pid)}
        cpu1 = _cpu_seconds(perception.pid)
    finally:
        for proc in (sim, perception):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                print(f'{proc.args[2]} ignored SIGTERM for 15 s: killed', file=sys.stderr)
                proc.kill()
                proc.wait()
        node.destroy_node()
        rclpy.try_shutdown()
    t0 = cpu0['t']
    measured = [(r, s, n) for r, s, n in latents if r >= t0]
    if not measured:
        print('no latent states received', file=sys.stderr)
        return 1
    lat_ms = np.array([(r - s) / 1e6 for r, s, _ in measured])
    span = (measured[-1][0] - t0) / 1e9
    rates = {n: sum(1 for t, _ in v if t >= t0) / span for n, v in inputs.items()}
    parts = breakdown(measured, inputs, slop_ns=int(0.02 * 1e9))
    thirds = np.array_split(lat_ms, 3)
    result = {
        'duration_s': round(span, 1), 'latents': len(measured),
        'latent_rate_hz': round(len(measured) / span, 2),
        'input_rates_hz': {k: round(v, 2) for k, v in rates.items()},
        'latent_over_camera_rate': round(len(measured) / span / max(rates['camera'], 1e-9), 3),
        'latency_ms': {q: round(float(np.percentile(lat_ms, int(q[1:]))), 2)
                       for q in ('p50', 'p90', 'p99')} | {'max': round(float(lat_ms.max()), 2)},
        'latency_p50_ms_by_third': [round(float(np.median(t)), 2) for t in thirds],
        'all_modalities_fraction': round(float(np.mean([n == 3 for *_, n in measured])), 3),
        'perception_cpu_fraction': round((cpu1 - cpu0['cpu']) / span, 3),
        'predictions': not args.no_predictions, 'cpus': os.cpu_count(),
        'torch_threads': args.torch_threads, 'backend': args.backend,
        'breakdown_ms': {k: _percentiles(v) for k, v in parts.items()},
        'node_latency_ms': node_figures,
    }
    print(f"latent {result['latent_rate_hz']} Hz for camera {result['input_rates_hz']['camera']}"
          f" Hz (taxels {result['input_rates_hz']['tactile']} Hz, audio chunks "
          f"{result['input_rates_hz']['audio']} Hz); latency p50 {result['latency_ms']['p50']} "
          f"ms, p99 {result['latency_ms']['p99']} ms; p50 by thirds "
          f"{result['latency_p50_ms_by_third']} (a growing backlog would rise)")
    for k, v in result['breakdown_ms'].items():
        print(f'  {k:13s} p50 {v["p50"]:6.2f}  p90 {v["p90"]:6.2f}  p99 {v["p99"]:6.2f} ms')
    print(f'  node (last input callback -> publish, its /diagnostics): {node_figures}')
    print(json.dumps(result))
    return 0


def _end_ns(msg) -> int:
    """Stamp of a frame; for an audio chunk, the end of its last sample."""
    end = _ns(msg.header.stamp)
    if hasattr(msg, 'sample_rate') and msg.sample_rate:
        end += int(round(len(msg.samples) / max(1, msg.channels) * 1e9 / msg.sample_rate))
    return end


def _node_latency(msg) -> dict:
    for status in msg.status:
        values = {kv.key: kv.value for kv in status.values}
        if 'latency_p50_ms' in values:
            return {'p50': float(values['latency_p50_ms']), 'p99': float(values['latency_p99_ms'])}
    return {}


def _percentiles(values) -> dict:
    a = np.asarray(values, float)
    if not a.size:
        return {'p50': float('nan'), 'p90': float('nan'), 'p99': float('nan')}
    return {q: round(float(np.percentile(a, int(q[1:]))), 2) for q in ('p50', 'p90', 'p99')}


def breakdown(latents, inputs, slop_ns: int) -> dict[str, list[float]]:
    """Per latent (receipt, stamp t, _): transport_in, pairing_wait, node_and_out in ms."""
    arrays = {n: np.array(v, np.int64).reshape(-1, 2) for n, v in inputs.items()}
    cam = {int(end): int(r) for r, end in arrays['camera']}
    out = {'transport_in': [], 'pairing_wait': [], 'node_and_out': []}
    for receipt, t, _ in latents:
        if t not in cam:
            continue
        ready = cam[t]
        for name in ('audio', 'tactile'):
            got = arrays[name]
            covering = got[got[:, 1] >= t - slop_ns]
            if covering.size:
                ready = max(ready, int(covering[:, 0].min()))
        out['transport_in'].append((cam[t] - t) / 1e6)
        out['pairing_wait'].append((ready - cam[t]) / 1e6)
        out['node_and_out'].append((receipt - ready) / 1e6)
    return out


def _cpu_seconds(pid: int) -> float:
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


if __name__ == '__main__':
    sys.exit(main())
