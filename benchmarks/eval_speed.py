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
cumulative time.
--floor counts the arithmetic of the evaluation (torch's FLOP counter over an in-process run on
the first 64 and 128 test samples: per test sample and fixed, the latter being the training
bag's probes and classifier fits), measures how many FLOP/s this machine's cores reach on the
model's own encoders and decoders, and prints the wall time the full-length evaluation could not
beat even at that rate on every core: the compute floor, and the real-time factor it caps.
Each run fits its coherence classifiers (`--no-classifier-cache`) unless
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


def model_rate(model_path: Path, threads: int, batch: int = 256, repeats: int = 5) -> dict:
    """FLOP and seconds of the model's encoders + decoders on a batch: this machine's FLOP/s."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from llmos_ros import kinds
    from llmos_ros.checkpoint import load_checkpoint
    torch.set_num_threads(threads)
    loaded = load_checkpoint(model_path)
    model = loaded.model.eval()
    gen = torch.Generator().manual_seed(0)
    inputs = {n: torch.randn((batch,) + tuple(kinds.of(m).shape(m)), generator=gen)
              for n, m in loaded.cfg.modalities.items() if n in model.names}

    def once():
        mu, _ = model.encode(inputs)
        return model.decode(mu)
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            once()
        once()  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            once()
        seconds = (time.perf_counter() - start) / repeats
    flop = counter.get_total_flops()
    return {'batch': batch, 'mflop_per_sample': round(flop / batch / 1e6, 2),
            'ms_per_sample': round(1e3 * seconds / batch, 4),
            'gflop_per_s': round(flop / seconds / 1e9, 1)}


def eval_flop(args, n: int) -> float:
    """Total FLOP (torch's counter) of an in-process llmos-eval on the first n test samples."""
    import shutil

    from torch.utils.flop_counter import FlopCounterMode

    from llmos_ros.evaluation.options import EvalOptions
    from llmos_ros.evaluation.pipeline import evaluate
    out = Path(tempfile.mkdtemp(prefix='llmos_eval_floor_'))
    opts = EvalOptions(bag=str(args.bag), model=str(args.model), out=str(out),
                       train_bag=str(args.train_bag) if args.train_bag else None,
                       max_samples=n, classifier_cache=False, threads=args.threads, quiet=True)
    counter = FlopCounterMode(display=False)
    with counter:
        evaluate(opts)
    shutil.rmtree(out, ignore_errors=True)
    return float(counter.get_total_flops())


def compute_floor(args, full: dict) -> dict:
    """
    The full-length run's arithmetic at this machine's measured FLOP/s on every core.

    FLOP(n) = fixed + n * per_sample from runs on n = 64 and 128 test samples; the floor is
    FLOP(all samples) / (FLOP/s of one thread * cores), a lower bound: it leaves out everything
    that is not a torch operator (reading bags, numpy, sklearn probes) and assumes a perfect
    parallel speed-up.
    """
    small, large = 64, 128
    if full['samples'] <= large:
        raise SystemExit(f'--floor needs more than {large} test samples ({full["samples"]} here)')
    f_small, f_large = eval_flop(args, small), eval_flop(args, large)
    per_sample = (f_large - f_small) / (large - small)
    fixed = max(0.0, f_small - small * per_sample)
    rate = model_rate(args.model, threads=1)
    cores = os.cpu_count() or 1
    total = fixed + full['samples'] * per_sample
    floor_s = total / (rate['gflop_per_s'] * 1e9 * cores)
    return {'gflop_per_test_sample': round(per_sample / 1e9, 4),
            'gflop_fixed': round(fixed / 1e9, 1), 'gflop_total': round(total / 1e9, 1),
            'one_thread_rate': rate, 'cores': cores, 'floor_s': round(floor_s, 1),
            'floor_real_time_factor': round(full['data_span_s'] / floor_s, 1),
            'measured_over_floor': round(full['wall_s'] / floor_s, 2)}


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
    p.add_argument('--floor', action='store_true',
                   help="count the evaluation's FLOP and print the compute floor (minutes)")
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
    floor = compute_floor(args, runs[-1]) if args.floor else None
    if floor:
        rate = floor['one_thread_rate']
        print(f'compute floor: {floor["gflop_per_test_sample"] * 1e3:.1f} MFLOP per test sample '
              f'+ {floor["gflop_fixed"]:.0f} GFLOP fixed = {floor["gflop_total"]:.0f} GFLOP; '
              f'the model\'s layers run at {rate["gflop_per_s"]:.0f} GFLOP/s on one thread, '
              f'so on {floor["cores"]} cores at best {floor["floor_s"]:.1f} s '
              f'({floor["floor_real_time_factor"]:.1f}x real time); the measured run took '
              f'{floor["measured_over_floor"]:.2f}x the floor', flush=True)
    print(json.dumps({'threads': args.threads, 'bag': str(args.bag),
                      'train_bag': str(args.train_bag) if args.train_bag else None,
                      'runs': runs, 'floor': floor}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
