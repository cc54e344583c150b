"""
End-to-end wall time and real-time factor of llmos-eval, with the time of each stage.

    python benchmarks/eval_speed.py --bag TEST --train-bag TRAIN --model model.pt
        [--threads 1] [--max-samples N ...] [--profile]

Runs `python -m llmos_ros.evaluation.cli` as a user would (a fresh process: imports, reading
both bags, the live-engine replay, all subset metrics, probes, coherence classifiers, plots) and
times it from the outside. Real-time factor = test-bag data span / end-to-end wall seconds;
the CPU seconds (user + system) of the process are printed too, as wall time on a shared
machine depends on its load.
Each --max-samples N runs once more on the first N test samples (the training bag stays
whole), so the seconds per test sample show whether the cost is linear in bag length.
--profile runs the full-length evaluation under cProfile and prints the functions with the most
cumulative time. Each run fits its coherence classifiers (`--no-classifier-cache`) unless
--classifier-cache is given.
Bags: e.g. `python -m llmos_ros.sim.make_bag --out test --duration 1620 --set camera_rate_hz=4.88`
(27 min, ~7,900 camera frames), a 45-minute training bag
(`--duration 2700 --seed 7`, same rate) and a model of the default config trained on a short
one (`llmos-train --bag SHORT --out model.pt --steps 200 --threads 1`; its quality does not
change the cost). The last line is one JSON object.
"""
import argparse
import json
import os
from pathlib import Path
import pstats
import resource
import subprocess
import sys
import tempfile
import time


def run_eval(args, out: Path, max_samples: int | None, profile: Path | None) -> dict:
    """One llmos-eval run in a new process: its summary, metrics.json and the outside wall."""
    cmd = [sys.executable]
    if profile is not None:
        cmd += ['-m', 'cProfile', '-o', str(profile)]
    cmd += ['-m', 'llmos_ros.evaluation.cli', '--bag', str(args.bag), '--model',
            str(args.model), '--out', str(out), '--threads', str(args.threads), '--quiet']
    if not args.classifier_cache:
        cmd.append('--no-classifier-cache')
    if args.train_bag:
        cmd += ['--train-bag', str(args.train_bag)]
    if max_samples:
        cmd += ['--max-samples', str(max_samples)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode:
        raise SystemExit(f'llmos-eval failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}')
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    report = json.loads((out / 'metrics.json').read_text())
    span = report['throughput']['data_span_s']
    return {'max_samples': max_samples, 'samples': summary['samples'],
            'messages': summary['messages'], 'data_span_s': round(span, 2),
            'wall_s': round(wall, 2), 'real_time_factor': round(span / wall, 2),
            'cpu_s': round(cpu, 2), 'cpu_real_time_factor': round(span / max(cpu, 1e-9), 2),
            'ms_per_test_sample': round(1e3 * wall / max(1, summary['samples']), 3),
            'phase_seconds': summary.get('phase_seconds', {}),
            'train_samples': report['meta'].get('train_samples'),
            'fit_samples': report['meta'].get('fit_samples')}


def print_profile(path: Path, top: int = 25) -> None:
    """
    The `top` functions by cumulative time (llmos_ros, sklearn), then by own time (all).

    Own time says where the seconds are spent: torch kernels, numpy, the bag reader.
    """
    stats = pstats.Stats(str(path))
    rows = sorted(((v[3], f'{Path(k[0]).name}:{k[1]}({k[2]})') for k, v in stats.stats.items()
                   if 'llmos_ros' in k[0] or 'sklearn' in k[0]), reverse=True)
    print(f'profile (cumulative seconds, llmos_ros and sklearn functions, top {top}):')
    for seconds, name in rows[:top]:
        print(f'  {seconds:8.1f}  {name}')
    own = sorted(((v[2], v[1], f'{Path(k[0]).name}:{k[1]}({k[2]})')
                  for k, v in stats.stats.items()), reverse=True)
    print(f'profile (own seconds, calls, all functions, top {top}):')
    for seconds, calls, name in own[:top]:
        print(f'  {seconds:8.1f}  {calls:9d}  {name}')


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--bag', type=Path, required=True, help='test bag')
    p.add_argument('--train-bag', type=Path, help='training bag (probes, coherence)')
    p.add_argument('--model', type=Path, required=True)
    p.add_argument('--threads', type=int, default=1, help='torch and OpenMP threads')
    p.add_argument('--max-samples', type=int, action='append', default=[],
                   help='also run on the first N test samples (repeatable)')
    p.add_argument('--profile', action='store_true', help='profile the full-length run')
    p.add_argument('--classifier-cache', action='store_true',
                   help='let llmos-eval take coherence classifiers from its cache (default: '
                        'fit them in every run, the cost of a first evaluation)')
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix='llmos_eval_speed_'))
    runs = []
    for i, n in enumerate(sorted(args.max_samples) + [None]):
        prof = tmp / 'eval.prof' if args.profile and n is None else None
        r = run_eval(args, tmp / f'run{i}', n, prof)
        runs.append(r)
        phases = ', '.join(f'{k} {v:.1f}' for k, v in r['phase_seconds'].items())
        print(f'{r["samples"]} test samples ({r["data_span_s"]:.0f} s of data, '
              f'{r["messages"]} messages), {r["train_samples"]} training samples: '
              f'{r["wall_s"]:.1f} s end to end, {r["real_time_factor"]:.1f}x real time, '
              f'{r["ms_per_test_sample"]:.2f} ms per test sample; CPU {r["cpu_s"]:.1f} s '
              f'({r["cpu_real_time_factor"]:.1f}x real time per CPU second); '
              f'{args.threads} thread(s)',
              flush=True)
        print(f'  stages (s): {phases}', flush=True)
        if prof is not None:
            print_profile(prof)
    print(json.dumps({'threads': args.threads, 'bag': str(args.bag),
                      'train_bag': str(args.train_bag) if args.train_bag else None,
                      'runs': runs}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
