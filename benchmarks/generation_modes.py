"""
Cross-modal coherence of one trained model under different ways of generating the missing modality.

    python benchmarks/generation_modes.py MODEL TRAIN_BAG TEST_BAG [--threads T]

`llmos-eval` (and the live node) decode the posterior mean: z = the mean of the given modalities'
fused posterior and, for models with private latents, w_m = 0 (the mean of its prior N(0, I)) for
the generated modality m. This benchmark trains the same coherence classifiers as `llmos-eval`
(a CNN per modality on real training inputs) and scores, for every single given modality and every
generated one, four generation modes:

- mean:       z = posterior mean,            w_m = 0          (what llmos-eval reports)
- z sampled:  z ~ the fused posterior,       w_m = 0
- w sampled:  z = posterior mean,            w_m ~ N(0, I)
- both:       z ~ the fused posterior,       w_m ~ N(0, I)

Prints a table; the last line is one JSON object.
"""
import argparse
import json
import sys

import numpy as np
import torch

from llmos_ros.checkpoint import load_checkpoint
from llmos_ros.evaluation.metrics import CoherenceClassifier
from llmos_ros.evaluation.replay import replay
from llmos_ros.inference import PerceptionEngine

MODES = ('mean', 'z sampled', 'w sampled', 'both')


def generate(model, arrays, idx, given, target, mode, gen):
    """Decoded `target` [n, *shape] for rows idx from the modalities in `given`."""
    inputs = {n: torch.from_numpy(np.ascontiguousarray(arrays[n][idx])) for n in model.names}
    present = {n: torch.full((len(idx),), n in given, dtype=torch.bool) for n in model.names}
    mu, logvar = model.encode(inputs, present)
    z = mu
    if mode in ('z sampled', 'both'):
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
    if model.private_dim:
        z = z.clone()
        sl = model.private_slice(target)
        if mode in ('w sampled', 'both'):
            z[:, sl] = torch.randn((len(idx), model.private_dim), generator=gen)
        else:
            z[:, sl] = 0.0
    return model.decode_modality(target, model.decoder_input(z, target))[0].numpy()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('model')
    p.add_argument('train_bag')
    p.add_argument('test_bag')
    p.add_argument('--threads', type=int, default=0)
    p.add_argument('--max-train-samples', type=int, default=20000)
    p.add_argument('--epochs', type=int, default=8, help='coherence classifier epochs')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_checkpoint(args.model)
    model = loaded.model.eval()
    train_engine = PerceptionEngine(loaded)
    stride = 1
    train = replay(args.train_bag, train_engine, infer=False)
    if len(train) > args.max_train_samples:
        stride = int(np.ceil(len(train) / args.max_train_samples))
    test = replay(args.test_bag, PerceptionEngine(loaded), infer=False)
    names = list(model.names)
    classifiers, real = {}, {}
    for m in names:
        rows = np.flatnonzero(train.present[m] & (train.labels != ''))[::stride]
        classifiers[m] = CoherenceClassifier(epochs=args.epochs).fit(train.arrays[m][rows],
                                                                     train.labels[rows])
        trows = np.flatnonzero(test.present[m] & (test.labels != ''))
        real[m] = classifiers[m].accuracy(test.arrays[m][trows], test.labels[trows])
    results = {}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for given in names:
            for target in names:
                if target == given:
                    continue
                rows = np.flatnonzero(test.present[given] & (test.labels != ''))
                for mode in MODES:
                    hits = 0
                    for start in range(0, len(rows), 512):
                        idx = rows[start:start + 512]
                        out = generate(model, test.arrays, idx, (given,), target, mode, gen)
                        hits += int(np.sum(classifiers[target].predict(out)
                                           == test.labels[idx]))
                    results.setdefault(f'{given}->{target}', {})[mode] = hits / max(len(rows), 1)
    print('| given -> generated | ' + ' | '.join(MODES) + ' |')
    print('| --- ' * (len(MODES) + 1) + '|')
    for pair, row in results.items():
        print(f'| {pair} | ' + ' | '.join(f'{row[m]:.3f}' for m in MODES) + ' |')
    print('classifiers on real test inputs: ' + ', '.join(f'{m} {v:.3f}' for m, v in real.items()))
    print(json.dumps({'model': args.model, 'private_dim': model.private_dim,
                      'coherence': results, 'classifier_accuracy': real}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
