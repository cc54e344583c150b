"""
Soak: the live path left running, measured minute by minute.

    python benchmarks/soak.py --minutes 10 [--model model.pt] [--no-predictions]

sim_source_node (camera 30 Hz, taxels 100 Hz, audio 16 kHz in 20 ms chunks) and perception_node
(predictions on unless --no-predictions) run as separate processes at full rate; this process
subscribes to llmos/latent and /diagnostics. Every interval (default 60 s) it prints each
process's RSS, the latent rate, latency p50/p99 (input stamp -> receipt of the LatentState) and
drops by reason in that interval. At the end: RSS growth after warm-up (the first interval), the
p50 of the last interval against the first after warm-up (a growing backlog would rise), and the
perception node's own accounting from /diagnostics: per input, received = accepted + refused by
reason; per sample, formed = published + superseded + no usable input (+ at most one in flight).
The last line is a JSON object.
"""
import argparse
from collections import Counter
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perception_latency import ROOT, _cpu_seconds, _ns, make_model  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident set size of a process, MiB."""
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


class Watch:
    """Latents received here and the perception node's latest /diagnostics values."""

    def __init__(self, node):
        from diagnostic_msgs.msg import DiagnosticArray

        from llmos_ros.msg import LatentState
        self.latents = []  # (receipt ns, stamp ns, modalities)
        self.model, self.inputs = {}, {}
        node.create_subscription(LatentState, 'llmos/latent', lambda m: self.latents.append(
            (time.time_ns(), _ns(m.header.stamp), len(m.modalities))), 1000)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._diag, 10)

    def _diag(self, array):
        for status in array.status:
            if not status.name.startswith('llmos_perception'):
                continue
            values = {v.key: v.value for v in status.values}
            if status.name.endswith(': model'):
                self.model = values
            elif 'received' in values:
                self.inputs[status.hardware_id] = values

    def drops(self) -> Counter:
        """Every counted loss so far: drops/<input>/<reason>, superseded, skipped predictions."""
        out = Counter({k: int(v) for k, v in self.model.items() if k.startswith('drops/')})
        for key in ('superseded', 'predictions_skipped', 'no_usable_input'):
            if key in self.model:
                out[key] = int(self.model[key])
        for name, values in self.inputs.items():
            for k, v in values.items():
                if k.startswith('refused/'):
                    out[f'refused/{name}/{k[8:]}'] = int(v)
        return out


def interval_figures(watch, t0, t1, procs, drops0) -> dict:
    lat = np.array([(r - s) / 1e6 for r, s, _ in watch.latents if t0 <= r < t1])
    span = (t1 - t0) / 1e9
    drops = watch.drops()
    return {'latent_hz': round(lat.size / span, 2),
            'p50_ms': round(float(np.percentile(lat, 50)), 2) if lat.size else None,
            'p99_ms': round(float(np.percentile(lat, 99)), 2) if lat.size else None,
            'rss_mb': {n: round(rss_mb(p.pid), 1) for n, p in procs.items()},
            'drops': {k: v - drops0.get(k, 0) for k, v in sorted(drops.items())
                      if v - drops0.get(k, 0)}}, drops


def accounting(watch) -> dict:
    """The perception node's own books, from its last /diagnostics."""
    inputs = {}
    for name, v in sorted(watch.inputs.items()):
        refused = {k[8:]: int(x) for k, x in v.items() if k.startswith('refused/')}
        inputs[name] = {'received': int(v['received']), 'accepted': int(v['accepted']),
                        'refused': refused,
                        'balanced': int(v['received']) == int(v['accepted'])
                        + sum(refused.values())}
    m = watch.model
    formed = int(m.get('samples_formed', 0))
    used = sum(int(m.get(k, 0)) for k in ('published', 'superseded', 'no_usable_input'))
    return {'inputs': inputs, 'samples_formed': formed,
            'samples_published': int(m.get('published', 0)),
            'samples_superseded': int(m.get('superseded', 0)),
            'samples_no_usable_input': int(m.get('no_usable_input', 0)),
            'samples_balanced': 0 <= formed - used <= 1}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--minutes', type=float, default=10.0)
    p.add_argument('--interval-s', type=float, default=60.0, help='report period (default 60)')
    p.add_argument('--model', type=Path)
    p.add_argument('--no-predictions', action='store_true')
    args = p.parse_args(argv)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_DOMAIN_ID', str(150 + os.getpid() % 50))
    model = args.model or make_model(Path(tempfile.mkdtemp(prefix='llmos_soak_')))

    import rclpy
    from rclpy.node import Node
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT),
                                                       os.environ.get('PYTHONPATH', '')]))
    procs = {'perception': subprocess.Popen(
        [sys.executable, '-m', 'llmos_ros.nodes.perception_node', '--ros-args',
         '-p', f'model_path:={model}',
         '-p', f'publish_predictions:={"false" if args.no_predictions else "true"}'],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)}
    time.sleep(2.0)
    procs['sim'] = subprocess.Popen([sys.executable, '-m', 'llmos_ros.nodes.sim_source_node'],
                                    env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
    rclpy.init()
    node = Node('llmos_soak_benchmark')
    watch = Watch(node)
    rows, drops0 = [], Counter()
    cpu0 = {n: _cpu_seconds(pr.pid) for n, pr in procs.items()}
    n_int = max(1, int(round(args.minutes * 60 / args.interval_s)))
    try:
        start = time.time_ns()
        for i in range(n_int):
            t0 = start + int(i * args.interval_s * 1e9)
            t1 = t0 + int(args.interval_s * 1e9)
            while time.time_ns() < t1:
                rclpy.spin_once(node, timeout_sec=0.05)
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        raise SystemExit(f'{name} exited with {proc.returncode} during the soak')
            row, drops0_next = interval_figures(watch, t0, t1, procs, drops0)
            drops0 = drops0_next
            rows.append(row)
            print(f'[{(i + 1) * args.interval_s / 60:5.1f} min] latent {row["latent_hz"]} Hz, '
                  f'p50 {row["p50_ms"]} ms, p99 {row["p99_ms"]} ms; RSS '
                  + ', '.join(f'{n} {v} MiB' for n, v in row['rss_mb'].items())
                  + f'; drops {row["drops"] or "none"}', flush=True)
        cpu = {n: round((_cpu_seconds(pr.pid) - cpu0[n]) / (n_int * args.interval_s), 3)
               for n, pr in procs.items()}
        for _ in range(30):  # one more /diagnostics for the final books
            rclpy.spin_once(node, timeout_sec=0.05)
        books = accounting(watch)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=15)
        node.destroy_node()
        rclpy.try_shutdown()
    base = rows[1] if len(rows) > 1 else rows[0]  # the first interval is warm-up
    growth = {n: round(100.0 * (rows[-1]['rss_mb'][n] - base['rss_mb'][n]) / base['rss_mb'][n],
                       2) for n in procs}
    lat = np.array([(r - s) / 1e6 for r, s, _ in watch.latents if r >= start])
    totals = Counter()
    for row in rows:
        totals.update(row['drops'])
    result = {
        'minutes': round(n_int * args.interval_s / 60, 2), 'predictions': not args.no_predictions,
        'latent_rate_hz': round(lat.size / (n_int * args.interval_s), 2),
        'latency_ms': {'p50': round(float(np.percentile(lat, 50)), 2),
                       'p99': round(float(np.percentile(lat, 99)), 2)} if lat.size else None,
        'p50_last_over_first': (round(rows[-1]['p50_ms'] / base['p50_ms'], 3)
                                if rows[-1]['p50_ms'] and base['p50_ms'] else None),
        'rss_growth_after_warmup_pct': growth, 'cpu_fraction': cpu,
        'drops': dict(sorted(totals.items())), 'accounting': books,
        'all_modalities_fraction': round(float(np.mean([n == 3 for *_, n in watch.latents]))
                                         if watch.latents else 0.0, 3),
        'intervals': rows, 'cpus': os.cpu_count(),
    }
    print(f"soak {result['minutes']} min: latent {result['latent_rate_hz']} Hz, p50/p99 "
          f"{result['latency_ms']}, RSS growth after warm-up {growth} %, p50 last/first "
          f"{result['p50_last_over_first']}, inputs balanced "
          f"{all(v['balanced'] for v in books['inputs'].values())}, samples balanced "
          f"{books['samples_balanced']}")
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
