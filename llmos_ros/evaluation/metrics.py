"""
Evaluation metrics: pure, ROS-free and model-agnostic (arrays or tensors in, floats out).

Every metric written into the JSON report has its exact definition in `DEFINITIONS`, and the
functions below compute exactly that definition. Arrays may be numpy arrays or torch tensors;
the first axis is always the sample (batch) axis.
"""
from __future__ import annotations

from itertools import combinations
import math
from typing import Sequence

import numpy as np

# Rows per CoherenceClassifier.predict pass: the CNN's activations of 128 rows stay cache-sized
# on CPU (1.6x faster per row than 1024-row passes, the same logits).
PREDICT_ROWS = 128

# Key of a metric in the report -> its definition, copied into metrics.json.
DEFINITIONS: dict[str, str] = {
    'subset': 'The modalities given to the encoder; every non-empty subset of the modalities '
              'present is evaluated, ordered by size, then by the order of the modality list.',
    'n_samples': 'Number of test samples in which every modality of the subset is present.',
    'mse': "Mean squared error in the model's normalised input space: per sample the mean over "
           'all elements of (prediction - target)^2, then the mean over the samples in which the '
           "target modality is present. For a modality with a shift likelihood (audio's "
           "'time_shift', images' 'space_shift', the defaults) the prediction is first aligned "
           'to the target: the least such mean over the circular shifts the likelihood leaves '
           'open (every shift of the time axis; up to max_shift of each image side).',
    'baseline_mse': 'The same mse for the constant prediction of the training mean (in '
                    'normalised space the training mean is 0).',
    'skill': 'Skill score against predicting the training mean: 1 - mse / baseline_mse. 1 is '
             'perfect, 0 is no better than the mean, < 0 is worse than the mean.',
    'recon': 'Reconstruction of each modality inside the subset, decoded from the latent mean '
             "of the subset's posterior: mse, baseline_mse and skill.",
    'cross': 'Cross-modal prediction of each modality outside the subset, decoded from the '
             "latent mean of the subset's posterior: mse, baseline_mse and skill; skill > 0 "
             'means the given modalities carry information about the predicted one.',
    'neg_elbo': 'Negative evidence lower bound per sample in nats, on the normalised inputs of '
                'the subset: -E_q(z|x_S)[log p(x_S|z)] + KL(q(z|x_S) || p(z)), averaged over the '
                'samples.',
    'iwae_nll': 'Importance-weighted negative log-likelihood per sample in nats: '
                '-log (1/K sum_k p(x_S, z_k) / q(z_k|x_S)), z_k ~ q(z|x_S), averaged over the '
                'samples (an upper bound on -log p(x_S) that tightens as K grows).',
    'iwae_k': 'Number of importance samples K used for iwae_nll.',
    'probe_accuracy': 'Linear probe: each latent dimension standardised with the training '
                      "latents' mean and standard deviation, then multinomial logistic "
                      "regression (L2, C=1, lbfgs) fit on the training bag's latent means and "
                      'labels; the fraction of test samples whose label it predicts.',
    'coherence': 'Cross-modal coherence: for each modality, a label classifier trained on the '
                 "training bag's real normalised inputs of that modality classifies the "
                 'modality generated from the given subset; the fraction of test samples '
                 'classified as their true label.',
    'classifier_accuracy': 'Accuracy of each coherence classifier on the real test inputs of its '
                           'modality: the ceiling for coherence.',
    'samples_per_s': 'Samples processed per second of wall-clock processing time.',
    'real_time_factor': 'Recorded data duration / wall-clock processing time; > 1 is faster '
                        'than real time.',
    'wall_s': 'Wall-clock seconds spent processing (reading, pairing, preprocessing, model).',
    'data_span_s': 'Recorded duration of the processed data: last stamp - first stamp, seconds.',
    'latency_ms': 'Per-sample processing latency in milliseconds (from the sample being ready to '
                  'its latent): p50, p90, p99 percentiles (linear interpolation between order '
                  'statistics), max and mean.',
    'drops': 'Messages not used, counted by reason.',
    'counts': 'Messages read, processed and dropped, and samples formed.',
}


def _np(x) -> np.ndarray:
    """A numpy float64 array from an array, list or (cpu/gpu, grad or not) tensor."""
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def subsets(names: Sequence[str]) -> list[tuple[str, ...]]:
    """
    All non-empty subsets of `names`, by size, then in the order of `names`.

    subsets(['a', 'b', 'c']) == [('a',), ('b',), ('c',), ('a', 'b'), ('a', 'c'), ('b', 'c'),
    ('a', 'b', 'c')]. Duplicate names are an error.
    """
    names = list(names)
    if len(set(names)) != len(names):
        raise ValueError(f'duplicate modality names: {names}')
    return [c for k in range(1, len(names) + 1) for c in combinations(names, k)]


def mse(pred, target) -> np.ndarray:
    """
    Per-sample mean squared error: for sample i, mean over all its elements of (pred - target)^2.

    pred and target have shape [B, ...] (pred may also broadcast against target, e.g. a
    training mean of the per-sample shape); returns a float64 array [B].
    """
    p, t = _np(pred), _np(target)
    try:
        d = np.broadcast_to(p, t.shape) - t
    except ValueError:
        raise ValueError(f'mse: prediction shape {p.shape} does not match target {t.shape}'
                         ) from None
    if d.ndim == 0:
        raise ValueError('mse needs a batch axis: got scalars')
    return (d ** 2).reshape(d.shape[0], -1).mean(axis=1)


def aligned_mse(pred, target, reach: tuple[int | None, ...] = (None,)) -> np.ndarray:
    """
    Per-sample mse after the best circular shift of pred along its last len(reach) axes.

    pred and target [B, ..., T] of the same shape; the least over the shifts s within `reach`
    ((None,): every shift of the last, time, axis) of the mean of (roll(pred, s) - target)^2
    (`objectives.shifted_sq_distances`, the distances the shift likelihoods marginalise).
    Returns float64 [B].
    """
    import torch

    from llmos_ros.models.objectives import shifted_sq_distances
    p, t = _np(pred).astype(np.float64), _np(target).astype(np.float64)
    if p.shape != t.shape or p.ndim < 1 + len(reach):
        raise ValueError(f'aligned_mse: prediction shape {p.shape} does not match target '
                         f'{t.shape} (or has no batch and shifted axes)')
    sq = shifted_sq_distances(torch.from_numpy(t), torch.from_numpy(p), reach, p.ndim - 1)
    return sq.clamp_min(0.0).min(-1).values.numpy() / p[0].size


def mean_baseline_mse(target, train_mean=0.0) -> np.ndarray:
    """
    Per-sample mse of predicting the training mean for every sample: mse(train_mean, target).

    `train_mean` is a scalar or an array of one sample's shape; in the model's normalised space
    it is 0, which the caller states explicitly.
    """
    t = _np(target)
    return mse(np.broadcast_to(_np(train_mean), t.shape), t)


def skill_score(err_model: float, err_mean: float) -> float:
    """
    Skill score 1 - err_model / err_mean (err_mean: error of predicting the training mean).

    1 is perfect, 0 no better than the training mean, negative worse. NaN when err_mean is 0.
    """
    err_model, err_mean = float(err_model), float(err_mean)
    if err_mean == 0.0:
        return float('nan')
    return 1.0 - err_model / err_mean


def error_and_skill(pred, target, train_mean=0.0, present=None) -> dict[str, float]:
    """
    Report entry for one predicted modality: {'mse', 'baseline_mse', 'skill'}.

    mse = mean over samples of mse(pred, target); baseline_mse = the same for predicting
    `train_mean`; skill = skill_score(mse, baseline_mse). `present` (bool [B]) keeps only the
    samples whose target is present; with none left every value is NaN.
    """
    p, t = _np(pred), _np(target)
    if present is not None:
        keep = _np(present).astype(bool).reshape(-1)
        p, t = p[keep], t[keep]
    if t.shape[0] == 0:
        return {'mse': float('nan'), 'baseline_mse': float('nan'), 'skill': float('nan')}
    err = float(mse(p, t).mean())
    base = float(mean_baseline_mse(t, train_mean).mean())
    return {'mse': err, 'baseline_mse': base, 'skill': skill_score(err, base)}


def linear_probe(train_latents, train_labels, test_latents, test_labels, seed: int = 0) -> float:
    """
    Accuracy of a linear probe on latents (see DEFINITIONS['probe_accuracy']).

    Standardise each dimension with the training latents' statistics, fit multinomial logistic
    regression (L2, C=1, lbfgs, max_iter 2000) on (train_latents, train_labels), and return the
    fraction of test samples whose label is predicted. Deterministic for a given seed. With a
    single training class the probe predicts that class.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr, xte = _np(train_latents), _np(test_latents)
    ytr, yte = np.asarray(train_labels).reshape(-1), np.asarray(test_labels).reshape(-1)
    xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise ValueError(f'latents and labels differ in length: train {len(xtr)} vs {len(ytr)}, '
                         f'test {len(xte)} vs {len(yte)}')
    if len(yte) == 0:
        return float('nan')
    classes = np.unique(ytr)
    if len(classes) < 2:
        return float(np.mean(yte == classes[0])) if len(classes) else float('nan')
    probe = make_pipeline(StandardScaler(),
                          LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    probe.fit(xtr, ytr)
    return float(np.mean(probe.predict(xte) == yte))


class CoherenceClassifier:
    """
    Label classifier for one modality, trained on real normalised inputs [N, *shape].

    method 'cnn' (default): for inputs of shape (C, H, W) with H, W >= 4, two 3x3 conv layers
    (16, 32 channels, ReLU, 2x2 max-pool after each) then global 4x4 average pooling and a linear
    layer; other shapes use an MLP (one hidden layer of 128). Adam (lr 1e-3), cross-entropy,
    `epochs` passes in batches of `batch_size`, seeded: same seed, same data -> same classifier
    (the global torch RNG state is left untouched). method 'logistic': standardised flattened
    inputs, multinomial logistic regression (sklearn).
    """

    def __init__(self, method: str = 'cnn', epochs: int = 8, batch_size: int = 128,
                 lr: float = 1e-3, seed: int = 0):
        if method not in ('cnn', 'logistic'):
            raise ValueError(f"method must be 'cnn' or 'logistic', got {method!r}")
        self.method, self.epochs, self.batch_size = method, epochs, batch_size
        self.lr, self.seed = lr, seed
        self.classes_: np.ndarray | None = None
        self._model = None

    def fit(self, x, y) -> CoherenceClassifier:
        x = _np(x).astype(np.float32)
        y = np.asarray(y).reshape(-1)
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f'need as many labels as inputs (> 0): {len(x)} vs {len(y)}')
        self.classes_, idx = np.unique(y, return_inverse=True)
        self._shape = x.shape[1:]
        if self.method == 'logistic':
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler
            self._model = make_pipeline(
                StandardScaler(), LogisticRegression(max_iter=2000, random_state=self.seed))
            if len(self.classes_) > 1:
                self._model.fit(x.reshape(len(x), -1), idx)
            return self
        self._fit_torch(x, idx)
        return self

    def _build(self, n_classes: int):
        import torch.nn as nn
        shape = self._shape
        if len(shape) == 3 and shape[1] >= 4 and shape[2] >= 4:
            return nn.Sequential(
                nn.Conv2d(shape[0], 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, n_classes))
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), 128), nn.ReLU(),
                             nn.Linear(128, n_classes))

    def _fit_torch(self, x: np.ndarray, idx: np.ndarray) -> None:
        import torch
        n_classes = len(self.classes_)
        if n_classes < 2:
            self._model = None
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = self._build(n_classes)
            opt = torch.optim.Adam(model.parameters(), lr=self.lr)
            gen = torch.Generator().manual_seed(self.seed)
            xt, yt = torch.from_numpy(x), torch.from_numpy(idx.astype(np.int64))
            model.train()
            for _ in range(self.epochs):
                order = torch.randperm(len(xt), generator=gen)
                for start in range(0, len(xt), self.batch_size):
                    b = order[start:start + self.batch_size]
                    loss = torch.nn.functional.cross_entropy(model(xt[b]), yt[b])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            model.eval()
        self._model = model

    def settings(self) -> dict:
        """What a fit depends on besides its data (the classifier cache's key)."""
        return {'method': self.method, 'epochs': self.epochs, 'batch_size': self.batch_size,
                'lr': self.lr, 'seed': self.seed}

    def state(self) -> dict:
        """A fitted 'cnn' classifier as plain values and tensors (torch.save, weights_only)."""
        if self.method != 'cnn' or self.classes_ is None:
            raise ValueError('only a fitted cnn classifier has a state')
        return {**self.settings(), 'classes': [str(c) for c in self.classes_],
                'shape': [int(s) for s in self._shape],
                'weights': None if self._model is None else self._model.state_dict()}

    @classmethod
    def from_state(cls, state: dict) -> CoherenceClassifier:
        """The classifier `state()` describes; it predicts as the one that was saved."""
        clf = cls(state['method'], state['epochs'], state['batch_size'], state['lr'],
                  state['seed'])
        clf.classes_ = np.asarray(state['classes'])
        clf._shape = tuple(state['shape'])
        if state['weights'] is not None:
            clf._model = clf._build(len(clf.classes_))
            clf._model.load_state_dict(state['weights'])
            clf._model.eval()
        return clf

    def predict(self, x) -> np.ndarray:
        """Predicted labels (in the training labels' values) for inputs [N, *shape]."""
        if self.classes_ is None:
            raise RuntimeError('CoherenceClassifier.predict before fit')
        x = _np(x).astype(np.float32)
        if x.shape[1:] != self._shape:
            raise ValueError(f'input shape {x.shape[1:]} differs from training {self._shape}')
        if len(self.classes_) < 2 or len(x) == 0:
            return np.full(len(x), self.classes_[0])
        if self.method == 'logistic':
            return self.classes_[self._model.predict(x.reshape(len(x), -1))]
        import torch
        out = []
        with torch.no_grad():  # passes of PREDICT_ROWS: same logits, faster than larger ones
            for start in range(0, len(x), PREDICT_ROWS):
                logits = self._model(torch.from_numpy(x[start:start + PREDICT_ROWS]))
                out.append(logits.argmax(dim=1).numpy())
        return self.classes_[np.concatenate(out)]

    def accuracy(self, x, y) -> float:
        """Fraction of inputs classified as their label y; NaN for no inputs."""
        y = np.asarray(y).reshape(-1)
        if len(y) == 0:
            return float('nan')
        return float(np.mean(self.predict(x) == y))


def latency_percentiles(seconds_list) -> dict[str, float]:
    """
    Latency summary in milliseconds of per-sample latencies given in seconds.

    {'p50', 'p90', 'p99'}: numpy percentiles with linear interpolation between order statistics
    (the value at rank q/100 * (n - 1) of the sorted list); 'max' and 'mean'. All NaN when empty.
    """
    ms = _np(seconds_list).reshape(-1) * 1000.0
    if ms.size == 0:
        return {k: float('nan') for k in ('p50', 'p90', 'p99', 'max', 'mean')}
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {'p50': float(p50), 'p90': float(p90), 'p99': float(p99),
            'max': float(ms.max()), 'mean': float(ms.mean())}


def throughput(n_samples: int, wall_s: float, data_span_s: float) -> dict[str, float]:
    """
    Throughput: {'samples_per_s': n_samples / wall_s, 'real_time_factor': data_span_s / wall_s}.

    wall_s is the wall-clock processing time, data_span_s the recorded duration of the data
    processed; a real-time factor above 1 is faster than real time. wall_s must be > 0.
    """
    if not wall_s > 0:
        raise ValueError(f'wall_s must be > 0, got {wall_s}')
    return {'samples_per_s': float(n_samples) / float(wall_s),
            'real_time_factor': float(data_span_s) / float(wall_s)}


def iwae_log_likelihood(log_weights):
    """
    Importance-weighted log-likelihood estimate per sample from log-weights [K, B].

    log_weights[k, b] = log p(x_b, z_kb) - log q(z_kb | x_b) with z_kb ~ q(z | x_b), computed by
    the caller for its model. Returns log (1/K sum_k exp(log_weights[k, b])) for each b
    (= logsumexp over k - log K, computed stably), a tensor [B] for a tensor input, else a
    numpy array.
    """
    if hasattr(log_weights, 'logsumexp'):
        if log_weights.dim() != 2:
            raise ValueError(f'log_weights must be [K, B], got {tuple(log_weights.shape)}')
        return log_weights.logsumexp(dim=0) - math.log(log_weights.shape[0])
    lw = _np(log_weights)
    if lw.ndim != 2:
        raise ValueError(f'log_weights must be [K, B], got {lw.shape}')
    m = lw.max(axis=0)
    m = np.where(np.isfinite(m), m, 0.0)
    return m + np.log(np.exp(lw - m).mean(axis=0))
