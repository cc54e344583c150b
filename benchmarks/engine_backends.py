"""
Per-call latency of the live engine, torch against onnxruntime: infer + predict at batch 1.

    python benchmarks/engine_backends.py [MODEL] [--bag BAG] [--reps 300] [--threads 1]

MODEL: a checkpoint from llmos-train; without it, a fresh (untrained) model of the default
config over the modalities `infer_modalities` finds in the bag (latency does not depend on the
weights). BAG: the samples (default: a fresh 4 s simulated bag: camera 32x32 rgb, 16 kHz audio,
8x8 taxels). Each repetition runs one sample through both engines, one after the other in
alternating order, so both see the same machine load; each call is `engine.infer(sample)`
(preprocessing, encoders, fusion) then `engine.predict(result)` (leave-one-out fusions, one
decoder pass per modality), as the node's workers do. torch and onnxruntime get `--threads`
intra-op threads each. Prints p50/p90/p99 per backend and torch / onnxruntime per percentile;
the last line is one JSON object.
"""
import argparse
import json
from pathlib import Path
import tempfile
import time

import numpy as np
import torch

from llmos_ros.checkpoint import LoadedModel, load_checkpoint
from llmos_ros.config import Config
from llmos_ros.core.bag_samples import BagSamples
from llmos_ros.core.dataset import infer_modalities
from llmos_ros.inference import BACKENDS, PerceptionEngine
from llmos_ros.models.mvae import MultimodalVAE

PERCENTILES = (50, 90, 99)


def fresh_model(bag: Path) -> LoadedModel:
    """An untrained model of the default config over the bag's modalities."""
    cfg = Config.from_dict({})
    cfg.modalities = infer_modalities([bag])
    torch.manual_seed(0)
    return LoadedModel(MultimodalVAE(cfg), cfg, {}, 'fresh')


def samples_of(bag: Path, engine: PerceptionEngine) -> list:
    """Every sample set the engine's pairing forms from the bag."""
    return [s for step in BagSamples(bag, engine.cfg, engine, all_topics=True)
            for s in step.result.samples]


def call_ms(engine: PerceptionEngine, sample) -> float:
    """Milliseconds of one infer + predict."""
    start = time.perf_counter()
    result, _ = engine.infer(sample)
    engine.predict(result)
    return 1e3 * (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('model', nargs='?', type=Path, help='checkpoint (default: a fresh model)')
    p.add_argument('--bag', type=Path, help='samples from this bag (default: a fresh sim bag)')
    p.add_argument('--reps', type=int, default=300, help='measured calls per backend')
    p.add_argument('--warmup', type=int, default=20, help='calls per backend not measured')
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    bag = args.bag
    if bag is None:
        from llmos_ros.sim.make_bag import write_bag
        bag = Path(tempfile.mkdtemp(prefix='llmos_backends_')) / 'bag'
        write_bag(bag, 4.0, seed=2, progress=False)
    loaded = load_checkpoint(args.model) if args.model else fresh_model(bag)
    engines, setup_s = {}, {}
    for backend in BACKENDS:
        start = time.perf_counter()
        engines[backend] = PerceptionEngine(loaded, backend=backend, threads=args.threads)
        setup_s[backend] = time.perf_counter() - start
    samples = [s for s in samples_of(bag, engines['torch']) if len(s.windows) > 1]
    if not samples:
        raise SystemExit(f'{bag}: no sample set with two modalities for this model')
    times = {b: [] for b in BACKENDS}
    for i in range(args.warmup + args.reps):
        sample = samples[i % len(samples)]
        for backend in (BACKENDS if i % 2 else BACKENDS[::-1]):
            ms = call_ms(engines[backend], sample)
            if i >= args.warmup:
                times[backend].append(ms)
    stats = {b: {f'p{q}_ms': round(float(np.percentile(t, q)), 3) for q in PERCENTILES}
             for b, t in times.items()}
    ratio = {f'p{q}': round(stats['torch'][f'p{q}_ms'] / stats['onnxruntime'][f'p{q}_ms'], 2)
             for q in PERCENTILES}
    for backend in BACKENDS:
        print(f'{backend:12s} ' + '  '.join(f'{k} {v:7.2f}' for k, v in stats[backend].items())
              + f'  (set-up {setup_s[backend]:.2f} s)')
    print('torch / onnxruntime: ' + '  '.join(f'{k} {v:.2f}x' for k, v in ratio.items()))
    print(json.dumps({'model': str(args.model) if args.model else 'fresh',
                      'modalities': list(loaded.cfg.modalities), 'fusion': loaded.cfg.model.fusion,
                      'threads': args.threads, 'reps': args.reps, 'samples': len(samples),
                      'setup_s': {b: round(s, 2) for b, s in setup_s.items()},
                      **stats, 'torch_over_onnxruntime': ratio}))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
