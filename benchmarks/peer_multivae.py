"""
A peer measured in the same run: our MoPoE (llmos-train's default run) beside MultiVae's MoPoE.

    .venv-bench/bin/python benchmarks/peer_multivae.py TRAIN_BAG TEST_BAG [--minutes M]
        [--threads T] [--nets ours|multivae] [--out DIR]

Runs from the benchmark venv (requirements/bench.txt: MultiVae is not a runtime dependency).
Both models get the same data and budget, one after the other, with T torch threads each:

- data: the samples `llmos_ros.train.load_data` returns for TRAIN_BAG (our pairing and
  preprocessing, normalised with the training split's statistics; the training split only, the
  validation tail is ours for early stopping), and TEST_BAG paired and normalised the same way;
- ours: `llmos-train` with the default config and `train.max_minutes: M` (it may stop earlier on
  its validation loss, keeping the best weights);
- peer: `multivae.models.MoPoE` with our latent layout (`model.latent_dim` shared, and
  `model.private_dim` per modality as `modalities_specific_dim` when our default has private
  latents), `beta`, batch size, Adam learning rate and batch order of our config, trained for M
  minutes of wall clock (no early stopping; the last weights). Its other settings are MultiVae's
  defaults (normal likelihood of scale 1, no KL warm-up). `--nets ours` (default) gives it our
  encoder and decoder networks (`llmos_ros.models.networks`, same sizes), so the two differ in
  the MoPoE objective and its implementation, not in the networks; `--nets multivae` uses
  MultiVae's default MLPs (their decoders end in a sigmoid, made for inputs in [0, 1], while
  our inputs are z-scored).

Scored the same way for both, as llmos-eval scores: linear-probe accuracy
(`evaluation.metrics.linear_probe`) per subset of modalities on the posterior means of the
subset (fitted on at most 20,000 training-split samples, evenly spaced, tested on TEST_BAG), and
coherence: a `CoherenceClassifier` per modality trained once on real training-split inputs reads
each model's prediction of that modality from every subset without it (decoded posterior mean;
private latent of the generated modality at its prior mean). Prints a table; the last line is one
JSON object.

MultiVae 1.0.3 imports torchvision at module level for its data sets (CelebA, MNIST, CUB, ...)
and trainers, none of which this script uses; torchvision's PyPI wheel pulls a CUDA torch that
does not import beside our CPU torch. When torchvision is not installed, `stub_torchvision`
puts a placeholder module in its place whose objects raise ImportError when used.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
from pathlib import Path
import sys
import tempfile
import time
import types

import numpy as np
import torch

from llmos_ros.checkpoint import load_checkpoint
from llmos_ros.core.dataset import build_samples
from llmos_ros.evaluation.metrics import CoherenceClassifier, linear_probe, subsets
from llmos_ros.evaluation.options import MAX_FIT_SAMPLES
from llmos_ros.evaluation.scores import fit_rows
from llmos_ros.models import evaluate
from llmos_ros.models.networks import Decoder, Encoder
from llmos_ros.train import batch_rows, load_data
from llmos_ros.train import main as train_main

ROWS = 512  # evaluation batch
TORCHVISION_MODULES = ('torchvision', 'torchvision.datasets', 'torchvision.datasets.utils',
                       'torchvision.models', 'torchvision.transforms', 'torchvision.utils')


def stub_torchvision() -> bool:
    """Placeholder torchvision modules when it is not installed (see the module doc)."""
    if importlib.util.find_spec('torchvision') is not None:
        return False

    class Unavailable:
        def __init__(self, *args, **kwargs):  # default arguments are built at import time
            pass

        def __call__(self, *args, **kwargs):
            raise ImportError('torchvision is not installed (a placeholder, see '
                              'benchmarks/peer_multivae.py)')

    class Placeholder(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith('__'):
                raise AttributeError(name)
            return type(name, (Unavailable,), {})

    for name in TORCHVISION_MODULES:
        sys.modules[name] = Placeholder(name)
    return True


def multivae_nets(shapes: dict, hidden: int, shared: int, private: int):
    """Our Encoder / Decoder networks behind MultiVae's encoder and decoder interfaces."""
    from multivae.models.nn.base_architectures import BaseMultilatentEncoder
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn.base_architectures import BaseDecoder, BaseEncoder

    class OurEncoder(BaseMultilatentEncoder if private else BaseEncoder):
        def __init__(self, shape):
            super().__init__()
            self.net = Encoder(shape, hidden, shared + private)

        def forward(self, x):
            mu, logvar = self.net(x)
            out = ModelOutput(embedding=mu[:, :shared], log_covariance=logvar[:, :shared])
            if private:
                out['style_embedding'] = mu[:, shared:]
                out['style_log_covariance'] = logvar[:, shared:]
            return out

    class OurDecoder(BaseDecoder):
        def __init__(self, shape):
            super().__init__()
            self.net = Decoder(shape, hidden, shared + private)

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z))

    return ({m: OurEncoder(s) for m, s in shapes.items()},
            {m: OurDecoder(s) for m, s in shapes.items()})


class Ours:
    """Our trained MultimodalVAE: posterior means and decoded predictions of any subset."""

    label = 'llmos_ros MoPoE'

    def __init__(self, model):
        self.model = model.eval()

    def latents(self, arrays, rows, given) -> np.ndarray:
        return evaluate.encode_rows(self.model, arrays, rows, given, torch.device('cpu'), ROWS)

    def generate(self, arrays, rows, given, target) -> np.ndarray:
        inputs, mask = evaluate.batch_rows(self.model, arrays, rows, given, 'cpu')
        with torch.no_grad():
            mu, _ = self.model.encode(inputs, mask)
            return evaluate.decode_mean(self.model, target, mu)[0].numpy()


class Peer:
    """A MultiVae MoPoE: built, trained on our batches, and read like `Ours`."""

    label = 'MultiVae MoPoE'

    def __init__(self, cfg, names, shapes: dict, private: int, nets: str):
        from multivae.models import MoPoE, MoPoEConfig
        self.names, self.private = list(names), private
        config = MoPoEConfig(
            n_modalities=len(names), latent_dim=cfg.model.latent_dim,
            input_dims={m: tuple(shapes[m]) for m in names}, beta=cfg.model.beta,
            modalities_specific_dim={m: private for m in names} if private else None)
        encoders, decoders = (multivae_nets(shapes, cfg.model.hidden, cfg.model.latent_dim,
                                            private)
                              if nets == 'ours' else (None, None))
        torch.manual_seed(cfg.train.seed)
        self.model = MoPoE(config, encoders, decoders)

    def batch(self, arrays, present, rows):
        """A MultiVae data set of rows (IncompleteDataset when some modality is missing)."""
        from multivae.data.datasets.base import IncompleteDataset, MultimodalBaseDataset
        data = {m: torch.from_numpy(np.ascontiguousarray(arrays[m][rows])) for m in self.names}
        if present is None or all(present[m][rows].all() for m in self.names):
            return MultimodalBaseDataset(data)
        return IncompleteDataset(data, {m: torch.from_numpy(present[m][rows])
                                        for m in self.names})

    def train(self, table, cfg, minutes: float) -> dict:
        """Adam on our batches (same rows, batch size, lr, seeds) for `minutes` of wall clock."""
        optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.train.lr)
        self.model.train()
        step, started = 0, time.perf_counter()
        while time.perf_counter() - started < 60.0 * minutes:
            rows = batch_rows(len(table), cfg.train.batch_size, cfg.train.seed, step, 0)
            torch.manual_seed(cfg.train.seed * 1_000_003 + step)
            loss = self.model(self.batch(table.arrays, table.present, rows)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        elapsed = time.perf_counter() - started
        self.model.eval()
        return {'steps': step, 'seconds': round(elapsed, 3),
                'samples_per_s': round(step * cfg.train.batch_size / elapsed, 1),
                'final_train_loss': float(loss.detach()) if step else None}

    def latents(self, arrays, rows, given) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(rows), ROWS):
                enc = self.model.encode(self.batch(arrays, None, rows[start:start + ROWS]),
                                        cond_mod=list(given), return_mean=True)
                parts = [enc.z] + ([enc.modalities_z[m] for m in self.names]
                                   if self.private else [])
                out.append(torch.cat(parts, -1).numpy())
        return np.concatenate(out)

    def generate(self, arrays, rows, given, target) -> np.ndarray:
        with torch.no_grad():
            return self.model.predict(self.batch(arrays, None, rows), cond_mod=list(given),
                                      gen_mod=target, return_mean=True)[target].numpy()


def train_ours(args, out: Path) -> dict:
    """`llmos-train` with the defaults and train.max_minutes: M, in this process."""
    config = out / 'budget.yaml'
    config.write_text(f'train:\n  max_minutes: {args.minutes}\n')
    argv = ['--bag', args.train_bag, '--out', str(out / 'model.pt'), '--config', str(config),
            '--threads', str(args.threads), '--quiet']
    with contextlib.redirect_stdout(io.StringIO()) as text:
        code = train_main(argv)
    if code:
        raise SystemExit(f'llmos-train failed with exit code {code}')
    return json.loads(text.getvalue().strip().splitlines()[-1])


def labelled(table, given) -> np.ndarray:
    """Rows of `table` where every modality of `given` is present and a label is known."""
    return np.flatnonzero(np.all([table.present[m] for m in given], axis=0)
                          & (table.labels != ''))


def probes(model, train, test, names) -> dict:
    """Linear-probe accuracy per subset on the posterior means of that subset."""
    out = {}
    for given in subsets(names):
        trows, rows = fit_rows(labelled(train, given), MAX_FIT_SAMPLES), labelled(test, given)
        if not (trows.size and rows.size):
            continue
        out['+'.join(given)] = linear_probe(
            model.latents(train.arrays, trows, given), train.labels[trows],
            model.latents(test.arrays, rows, given), test.labels[rows])
    return out


def coherence(model, classifiers: dict, test, names) -> dict:
    """Accuracy of each classifier on the model's prediction of its modality, per subset."""
    out = {}
    for given in subsets(names):
        rows = labelled(test, given)
        for target in (m for m in names if m not in given and m in classifiers):
            hits = sum(int(np.sum(classifiers[target].predict(
                model.generate(test.arrays, idx, given, target)) == test.labels[idx]))
                for idx in np.array_split(rows, max(1, -(-rows.size // ROWS))))
            out[f'{"+".join(given)}->{target}'] = hits / rows.size if rows.size else None
    return out


def fit_classifiers(train, test, names) -> tuple[dict, dict]:
    """A coherence classifier per modality on real training inputs, and its test accuracy."""
    classifiers, real = {}, {}
    for m in names:
        rows = fit_rows(labelled(train, (m,)), MAX_FIT_SAMPLES)
        if rows.size:
            classifiers[m] = CoherenceClassifier().fit(train.arrays[m][rows], train.labels[rows])
            trows = labelled(test, (m,))
            real[m] = classifiers[m].accuracy(test.arrays[m][trows], test.labels[trows])
    return classifiers, real


def _phase_timer(phases: dict):
    """mark(name): phases[name] = seconds since the previous mark, said on stderr (progress)."""
    last = [time.perf_counter()]

    def mark(name: str) -> None:
        now = time.perf_counter()
        phases[name], last[0] = round(now - last[0], 1), now
        print(f'[peer] {name}: {phases[name]:.0f} s', file=sys.stderr, flush=True)
    return mark


def _fmt(v) -> str:
    return 'n/a' if v is None else f'{v:.3f}' if isinstance(v, float) else str(v)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('train_bag')
    p.add_argument('test_bag')
    p.add_argument('--minutes', type=float, default=5.0, help='training budget of each model')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    p.add_argument('--nets', choices=('ours', 'multivae'), default='ours',
                   help="the peer's encoders and decoders (see above)")
    p.add_argument('--out', type=Path, help='folder for our checkpoint (default: temp)')
    args = p.parse_args(argv)
    stubbed = stub_torchvision()
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix='llmos_peer_'))
    out.mkdir(parents=True, exist_ok=True)
    phases = {}
    mark = _phase_timer(phases)

    ours_summary = train_ours(args, out)
    mark('train ours')
    loaded = load_checkpoint(out / 'model.pt')
    cfg, ours = loaded.cfg, Ours(loaded.model)
    names = list(ours.model.names)
    train, _, _ = load_data([args.train_bag], cfg, loaded.stats, progress=False)
    test = build_samples([args.test_bag], cfg, stats=loaded.stats, progress=False)
    mark('read bags')
    peer = Peer(cfg, names, ours.model.shapes, ours.model.private_dim, args.nets)
    peer_summary = peer.train(train, cfg, args.minutes)
    mark('train peer')
    classifiers, real = fit_classifiers(train, test, names)
    mark('coherence classifiers')
    rows = {'train samples/s': {}, 'steps': {}, 'training minutes': {}}
    results = {}
    for model, summary in ((ours, ours_summary), (peer, peer_summary)):
        res = {'samples_per_s': summary['samples_per_s'], 'steps': summary['steps'],
               'train_minutes': round(summary['seconds'] / 60.0, 2),
               'probe_accuracy': probes(model, train, test, names),
               'coherence': coherence(model, classifiers, test, names)}
        mark(f'score {model.label}')
        results[model.label] = res
        rows['train samples/s'][model.label] = f"{res['samples_per_s']:.0f}"
        rows['steps'][model.label] = f"{res['steps']:,}"
        rows['training minutes'][model.label] = f"{res['train_minutes']:.2f}"
        for k, v in res['probe_accuracy'].items():
            rows.setdefault(f'probe {k}', {})[model.label] = v
        for k, v in res['coherence'].items():
            rows.setdefault(f'coherence {k}', {})[model.label] = v
    labels = [ours.label, peer.label]
    print(f'| {Path(args.train_bag).parent.name or args.train_bag}, {args.minutes:g} min, '
          f'{args.threads} thread(s) | ' + ' | '.join(labels) + ' |')
    print('| --- | --- | --- |')
    for what, row in rows.items():
        print(f'| {what} | ' + ' | '.join(_fmt(row.get(label)) for label in labels) + ' |')
    print('coherence classifiers on real test inputs: '
          + ', '.join(f'{m} {v:.3f}' for m, v in real.items()))
    print(f'ours stopped: {ours_summary["stop_reason"]}')
    print(json.dumps({
        'train_bag': args.train_bag, 'test_bag': args.test_bag, 'minutes': args.minutes,
        'threads': args.threads, 'peer_nets': args.nets, 'torchvision_stubbed': stubbed,
        'train_samples': len(train), 'test_samples': len(test),
        'latent': {'shared': int(cfg.model.latent_dim), 'private': ours.model.private_dim},
        'ours_stopped': ours_summary['stopped'], 'classifier_accuracy': real,
        'results': results, 'phase_seconds': phases}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
