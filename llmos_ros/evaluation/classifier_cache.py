"""
A content-addressed disk cache of llmos-eval's coherence classifiers. ROS-free.

A coherence classifier is fitted on the training bag's real inputs alone (no model output), so
every evaluation against the same training bag fits the same classifiers again: with an
hour-long training bag that is minutes of CPU per evaluated model. The cache keys a fitted
classifier by what determines it, bit for bit: the fit inputs and labels as arrays and the
fit settings (method, epochs, batch, learning rate, seed), plus `VERSION`, raised whenever the
classifier's network or training changes. A key that matches is the same fit, so a cached
classifier predicts exactly what a new fit would.

Files: `<cache dir>/coherence/<key>.pt` (torch.save of `CoherenceClassifier.state()`, loaded
with weights_only). The cache dir is $LLMOS_CACHE_DIR, else $XDG_CACHE_HOME/llmos_ros, else
~/.cache/llmos_ros. A file that cannot be read is ignored (and rewritten after the fit), never
an error; a folder that cannot be written leaves the cache off for that run.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
import tempfile

import numpy as np

VERSION = 1  # raise when CoherenceClassifier's network, training or state layout changes


def cache_dir() -> Path:
    """The cache folder ($LLMOS_CACHE_DIR, else $XDG_CACHE_HOME/llmos_ros, else ~/.cache/...)."""
    if os.environ.get('LLMOS_CACHE_DIR'):
        return Path(os.environ['LLMOS_CACHE_DIR'])
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'llmos_ros'


def fit_key(x: np.ndarray, y: np.ndarray, settings: dict) -> str:
    """Hex digest of the fit inputs (dtype, shape, bytes), labels and settings."""
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps({'version': VERSION, **settings}, sort_keys=True).encode())
    x = np.ascontiguousarray(x)
    h.update(f'{x.dtype.str}{x.shape}'.encode())
    h.update(memoryview(x).cast('B'))
    h.update('\x00'.join(str(v) for v in np.asarray(y).reshape(-1)).encode())
    return h.hexdigest()


class ClassifierCache:
    """`load(key)` / `save(key, classifier)` under `root` (module doc)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root if root is not None else cache_dir()) / 'coherence'

    def path(self, key: str) -> Path:
        return self.root / f'{key}.pt'

    def load(self, key: str):
        """The cached `CoherenceClassifier` of `key`, or None (absent or unreadable)."""
        import torch

        from llmos_ros.evaluation.metrics import CoherenceClassifier
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return CoherenceClassifier.from_state(torch.load(path, weights_only=True))
        except Exception:  # noqa: BLE001 - a damaged or foreign file: fit again
            return None

    def save(self, key: str, classifier) -> bool:
        """Write atomically (a partial file is never read); False when the folder is not ours."""
        import torch
        tmp = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, suffix='.tmp', delete=False) as f:
                tmp = Path(f.name)
                torch.save(classifier.state(), f)
            os.replace(tmp, self.path(key))
            return True
        except OSError:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            return False
