"""
Training step time (forward + backward) of every fusion at the default model sizes.

    python benchmarks/fusion_speed.py [--threads 1] [--steps 5] [--batch 64] [--k 4]

Three input layouts, as `infer_modalities` builds them from the bags: 'sim' (the simulated
three-modality bag: rgb camera 32x32, 16 kHz audio, 8x8 taxels), 'avmnist' (mono camera
28x28, 8 kHz audio) and 'vt60' (rgb camera 64x64, mono tactile image 64x48). Inputs are
standard-normal tensors of those shapes (step time does not depend on the values). For moe
and mmvae_plus the objective as first written (test/reference_objectives.py) runs in the same
process, interleaved with the current one, so "before/after" and "x mopoe" are ratios of
medians measured under the same load. The last line is one JSON object.
"""
import argparse
import json
from pathlib import Path
import statistics
import sys
import time

import torch

from llmos_ros.config import Config, ModalityConfig
from llmos_ros.models import fusions
from llmos_ros.models.mvae import MultimodalVAE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'test'))
import reference_objectives as ref  # noqa: E402

REFERENCE = {'moe': ref.mmvae_loss, 'mmvae_plus': ref.mmvae_plus_loss}
AUDIO = 'llmos_ros/msg/AudioChunk'


def layouts() -> dict[str, dict[str, ModalityConfig]]:
    """The modality configs infer_modalities gives for the sim bag, avmnist and vt60."""
    return {
        'sim': {
            'camera': ModalityConfig('camera', 'image', '/camera/image_raw',
                                     'sensor_msgs/msg/Image', channels=3),
            'audio': ModalityConfig('audio', 'audio', '/microphone/audio', AUDIO),
            'tactile': ModalityConfig('tactile', 'taxels', '/tactile/array',
                                      'llmos_ros/msg/TactileArray', rows=8, cols=8)},
        'avmnist': {
            'camera': ModalityConfig('camera', 'image', '/camera/image_raw',
                                     'sensor_msgs/msg/Image', height=28, width=28),
            'audio': ModalityConfig('audio', 'audio', '/microphone/audio', AUDIO,
                                    sample_rate=8000)},
        'vt60': {
            'camera': ModalityConfig('camera', 'image', '/camera/image_raw',
                                     'sensor_msgs/msg/Image', height=64, width=64, channels=3),
            'tactile': ModalityConfig('tactile', 'image', '/tactile/image',
                                      'sensor_msgs/msg/Image', height=48, width=64)},
    }


def step_seconds(model, objective, inputs, steps: int) -> list[float]:
    """Wall time of `steps` forward+backward passes of `objective` (after one warm-up)."""
    xs, mask = model.prepare(inputs, None)
    times = []
    for i in range(steps + 1):
        model.zero_grad()
        start = time.perf_counter()
        loss, _ = objective(model, xs, mask, 1000)
        loss.backward()
        if i:
            times.append(time.perf_counter() - start)
    return times


def measure(mods, fusion: str, batch: int, steps: int, k: int) -> dict:
    """Median step seconds of the current objective and (moe, mmvae_plus) the reference."""
    cfg = Config(modalities=mods)
    cfg.model.fusion = fusion
    cfg.model.k_samples = k
    torch.manual_seed(0)
    model = MultimodalVAE(cfg)
    inputs = {n: torch.randn((batch,) + s) for n, s in model.shapes.items()}
    now, before = [], []
    for _ in range(steps):  # interleaved, so both see the same load
        now += step_seconds(model, fusions.get(fusion).objective, inputs, 1)
        if fusion in REFERENCE:
            before += step_seconds(model, REFERENCE[fusion], inputs, 1)
    out = {'step_s': statistics.median(now)}
    if before:
        out['before_step_s'] = statistics.median(before)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    p.add_argument('--steps', type=int, default=5, help='timed steps per fusion (median)')
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--k', type=int, default=Config().model.k_samples,
                   help='importance samples for moe / mmvae_plus')
    p.add_argument('--layout', choices=sorted(layouts()), action='append', default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {'threads': args.threads, 'batch': args.batch, 'k_samples': args.k,
              'steps': args.steps}
    for name in args.layout or sorted(layouts(), reverse=True):
        rows = {}
        for fusion in ('poe', 'mopoe', 'moe', 'mmvae_plus'):
            rows[fusion] = measure(layouts()[name], fusion, args.batch, args.steps, args.k)
        base = rows['mopoe']['step_s']
        print(f'[{name}] batch {args.batch}, k {args.k}, {args.threads} thread(s); '
              f'median of {args.steps} steps (forward + backward)')
        for fusion, r in rows.items():
            r['x_mopoe'] = r['step_s'] / base
            line = f'  {fusion:<11} {r["step_s"] * 1e3:8.1f} ms  {r["x_mopoe"]:5.2f}x mopoe'
            if 'before_step_s' in r:
                r['speedup'] = r['before_step_s'] / r['step_s']
                line += (f'   before {r["before_step_s"] * 1e3:8.1f} ms '
                         f'({r["before_step_s"] / base:5.2f}x mopoe), speed-up '
                         f'{r["speedup"]:.2f}x')
            print(line, flush=True)
        result[name] = {f: {k: round(v, 4) for k, v in r.items()} for f, r in rows.items()}
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
