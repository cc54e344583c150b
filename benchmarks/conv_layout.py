"""
Training step and batch-1 inference time of the default model, as built against as before.

    python benchmarks/conv_layout.py [--threads 1] [--steps 8] [--batch 64]

"As built" is `MultimodalVAE` today: conv weights in channels-last layout and 2x upsampling as a
transposed conv with a kernel of ones (`networks.Upsample2x`). "Before" is the same model (the
same weights) with contiguous weights and the broadcast-copy upsampling it replaced, rebuilt
here for the comparison only. Both run interleaved in this process, so the ratios are of medians
measured under the same load, on the 'sim', 'avmnist' and 'vt60' input layouts of
`fusion_speed.py` (mopoe, the default). Inference is `encode` + `decode` at batch 1. The last
line is one JSON object.
"""
import argparse
import json
from pathlib import Path
import statistics
import sys
import time

import torch

from llmos_ros.config import Config
from llmos_ros.models.mvae import MultimodalVAE
from llmos_ros.models.networks import Upsample2x

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fusion_speed import layouts  # noqa: E402


class BroadcastUpsample2x(torch.nn.Module):
    """The upsampling Upsample2x replaced: a broadcast copy (same values)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


def as_before(model: MultimodalVAE) -> MultimodalVAE:
    """A copy of `model` with contiguous conv weights and the broadcast-copy upsampling."""
    old = MultimodalVAE(model.cfg)
    old.load_state_dict(model.state_dict())
    old.to(memory_format=torch.contiguous_format)
    for dec in old.decoders.values():
        for i, layer in enumerate(dec.net):
            if isinstance(layer, Upsample2x):
                dec.net[i] = BroadcastUpsample2x()
    return old


def train_ms(model: MultimodalVAE, inputs: dict) -> float:
    model.zero_grad()
    start = time.perf_counter()
    loss, _ = model.loss(inputs, None, 1000)
    loss.backward()
    return (time.perf_counter() - start) * 1e3


@torch.no_grad()
def infer_ms(model: MultimodalVAE, inputs: dict, reps: int = 20) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        model.decode(model.encode(inputs)[0])
    return (time.perf_counter() - start) * 1e3 / reps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    p.add_argument('--steps', type=int, default=8, help='timed rounds per layout (median)')
    p.add_argument('--batch', type=int, default=64)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {'threads': args.threads, 'batch': args.batch, 'steps': args.steps}
    for name, mods in layouts().items():
        torch.manual_seed(0)
        built = MultimodalVAE(Config(modalities=mods))
        models = {'built': built, 'before': as_before(built)}
        batch = {n: torch.randn((args.batch,) + s) for n, s in built.shapes.items()}
        one = {n: x[:1] for n, x in batch.items()}
        times = {(m, what): [] for m in models for what in ('train', 'infer')}
        for i in range(args.steps + 1):  # interleaved; round 0 warms up
            for m, model in models.items():
                t_train, t_infer = train_ms(model, batch), infer_ms(model, one)
                if i:
                    times[(m, 'train')].append(t_train)
                    times[(m, 'infer')].append(t_infer)
        med = {f'{m}_{what}_ms': round(statistics.median(v), 2) for (m, what), v in times.items()}
        med['train_speedup'] = round(med['before_train_ms'] / med['built_train_ms'], 3)
        med['infer_speedup'] = round(med['before_infer_ms'] / med['built_infer_ms'], 3)
        print(f'[{name}] training step (batch {args.batch}): {med["built_train_ms"]:.1f} ms, '
              f'before {med["before_train_ms"]:.1f} ms, {med["train_speedup"]:.2f}x; '
              f'encode + decode at batch 1: {med["built_infer_ms"]:.2f} ms, before '
              f'{med["before_infer_ms"]:.2f} ms, {med["infer_speedup"]:.2f}x', flush=True)
        result[name] = med
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
