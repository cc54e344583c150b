"""
Cost of one `TemporalTracker.step` (belief and surprise of a sample) per belief measurement.

    python benchmarks/tracker_speed.py [--model M --bag B] [--samples 600] [--repeats 3]

Replays a simulated bag (default: an 8-s one and a 20-step model trained on it; or --model and
its --bag) through the live path once, then times the tracker alone on the replayed samples,
each variant of the belief noise in turn and the rounds interleaved, so that every ratio compares
medians measured under the same load:

* 'product, walk': the belief folds in the product of the new experts, random-walk transition
  (a noise model stored before either change);
* 'fusion, walk': the model's own fusion of the new experts (MoPoE: a mixture of the subsets'
  products), random walk;
* 'fusion, reverting': the same, with the walk reverting to the state's mean and variance;
* 'fusion, reverting, power' (the default): the same, with the experts' variances believed to a
  power below 1 (0.5 here; `BeliefFilter.calibrated`: the cost does not depend on the value).

Surprise is on (a calibration of the same bag). Prints p50 / p99 per variant (the round with
the lowest median) and the ratios of medians to the first; the last line is one JSON object.
"""
import argparse
import contextlib
import dataclasses
import io
import json
from pathlib import Path
import sys
import tempfile
import time

import numpy as np
import torch

from llmos_ros.belief import BeliefConfig
from llmos_ros.belief_noise import learn
from llmos_ros.checkpoint import load_checkpoint
from llmos_ros.evaluation.replay import replay
from llmos_ros.inference import PerceptionEngine
from llmos_ros.sim.make_bag import write_bag
from llmos_ros.surprise import calibrate
from llmos_ros.temporal import TemporalTracker
from llmos_ros.train import main as train_main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument('--model', help='checkpoint (default: train a 20-step one on a sim bag)')
    p.add_argument('--bag', help='bag to replay (with --model: its bag)')
    p.add_argument('--samples', type=int, default=600, help='samples timed per round')
    p.add_argument('--repeats', type=int, default=3, help='interleaved rounds per variant')
    p.add_argument('--threads', type=int, default=1)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if bool(args.model) != bool(args.bag):
        print('error: --model and --bag go together', file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix='tracker_speed_'))
    model, bag = (Path(args.model), Path(args.bag)) if args.model else (work / 'model.pt',
                                                                        work / 'bag')
    if not args.model:
        write_bag(bag, 8.0, seed=3, progress=False)
        with contextlib.redirect_stdout(io.StringIO()):
            if train_main(['--bag', str(bag), '--out', str(model), '--steps', '20',
                           '--quiet']):
                return 1
    loaded = load_checkpoint(model)
    engine, results = PerceptionEngine(loaded), []
    rep = replay(bag, engine, max_samples=args.samples, progress=False,
                 on_result=results.append)
    noise = learn(loaded.model, loaded.model_id, rep.stamps, rep.arrays, rep.present)
    cal = calibrate(loaded.model, loaded.model_id, rep.arrays, rep.present, rep.stamps)
    noise = dataclasses.replace(noise, variance_power=1.0)
    variants = {
        'product, walk': dataclasses.replace(noise, measurement='product', state_mean=None,
                                             state_var=None),
        'fusion, walk': dataclasses.replace(noise, state_mean=None, state_var=None),
        'fusion, reverting': noise,
        'fusion, reverting, power': dataclasses.replace(noise, variance_power=0.5)}
    rounds: dict[str, list[np.ndarray]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, variant in variants.items():
            tracker = TemporalTracker(engine, BeliefConfig(), cal, variant)
            per = []
            for result in results:
                start = time.perf_counter()
                tracker.step(result)
                per.append(time.perf_counter() - start)
            rounds[name].append(np.array(per) * 1e3)
    figures = {}
    for name, runs in rounds.items():
        best = min(runs, key=np.median)
        figures[name] = {'p50_ms': float(np.median(best)),
                         'p99_ms': float(np.percentile(best, 99))}
    base = figures['product, walk']['p50_ms']
    print(f'model {loaded.model_id} ({loaded.cfg.model.fusion}), {len(results)} samples, '
          f'{args.repeats} interleaved rounds, {args.threads} thread(s)')
    for name, f in figures.items():
        f['x_product_walk'] = f['p50_ms'] / base
        print(f'{name:26s} p50 {f["p50_ms"]:.3f} ms  p99 {f["p99_ms"]:.3f} ms  '
              f'x{f["x_product_walk"]:.2f}')
    print(json.dumps({'model_id': loaded.model_id, 'samples': len(results),
                      'threads': args.threads, 'variants': figures}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
