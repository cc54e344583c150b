"""
Train the default model on a bag and print samples/s and the final losses.

    python benchmarks/train_benchmark.py ../shared/data/avmnist/train [--steps N] [--out DIR]

Runs llmos-train exactly as a user would (default config, modalities inferred from the bag),
times data preparation and training separately, and prints one JSON object as the last line.
"""
import argparse
import json
from pathlib import Path
import sys
import tempfile
import time

from llmos_ros.config import apply_overrides, load_training_config
from llmos_ros.core.dataset import build_samples, infer_modalities
from llmos_ros.train import main as train_main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('bag', nargs='+', help='training bag(s)')
    p.add_argument('--steps', type=int, default=None, help='override train.steps')
    p.add_argument('--fusion', default=None)
    p.add_argument('--config', default=None, help='training config YAML (see config/model.yaml)')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: default)')
    p.add_argument('--out', type=Path, default=None, help='keep the model here')
    args = p.parse_args(argv)
    out_dir = args.out or Path(tempfile.mkdtemp(prefix='llmos_train_bench_'))
    out_dir.mkdir(parents=True, exist_ok=True)
    model = out_dir / 'model.pt'

    cfg, overrides = load_training_config(args.config)
    if not cfg.modalities:
        cfg.modalities = infer_modalities(args.bag)
        apply_overrides(cfg.modalities, overrides)
    start = time.perf_counter()
    table = build_samples(args.bag, cfg, progress=False)
    prep_s = time.perf_counter() - start
    print(f'data: {len(table)} samples paired and preprocessed in {prep_s:.1f} s '
          f'({len(table) / prep_s:.0f} samples/s)', flush=True)

    cmd = ['--bag', *args.bag, '--out', str(model), '--quiet']
    if args.steps:
        cmd += ['--steps', str(args.steps)]
    if args.config:
        cmd += ['--config', args.config]
    if args.threads:
        cmd += ['--threads', str(args.threads)]
    if args.fusion:
        cmd += ['--fusion', args.fusion]
    from contextlib import redirect_stdout
    import io
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = train_main(cmd)
    lines = buffer.getvalue().strip().splitlines()
    print('\n'.join(lines[:-1]))
    if code:
        return code
    summary = json.loads(lines[-1])
    result = {'bag': [str(b) for b in args.bag], 'samples': len(table),
              'prep_seconds': round(prep_s, 2),
              'prep_samples_per_s': round(len(table) / prep_s, 1),
              'train_seconds': summary['seconds'], 'steps': summary['steps'],
              'train_samples_per_s': summary['samples_per_s'],
              'final_train_loss': summary['final_train_loss'],
              'final_val_loss': summary['final_val_loss'], 'model': str(model)}
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
