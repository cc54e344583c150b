"""
Bags -> model tensors, through the same frames -> Synchronizer -> Preprocessor path as the node.

- `infer_modalities(bag_paths)`: modality configs from a bag's topics and first messages.
- `build_samples(bag_paths, cfg, stats)`: a `SampleTable` (per modality float32 arrays with zeros
  where absent, presence masks, stamps, labels, drops by reason). Each bag is paired on its own.
- `fit_stats(table)` / `normalize(table, stats)`: normalisation stats from the training split only,
  applied exactly as `Preprocessor(mod, stats)` would.
- `split_by_time(table, val_fraction)`: the last part of each bag's time line is held out.
"""
from __future__ import annotations

from collections import Counter
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from llmos_ros import kinds
from llmos_ros.config import Config, ModalityConfig
from llmos_ros.core.bag_samples import BagSamples
from llmos_ros.core.bags import bag_topics, norm_topic, read_bag
from llmos_ros.core.drops import Drop, DropCounter
from llmos_ros.core.frames import LABEL_TOPIC, STRING
from llmos_ros.core.pairing import Pairer
from llmos_ros.core.preprocess import Preprocessor, apply_stats, compute_stats
from llmos_ros.core.sync import Synchronizer, reference_modality
from llmos_ros.errors import BagError, InputError
from llmos_ros.kinds.audio import AUDIO_CHUNK
from llmos_ros.kinds.image import COMPRESSED_IMAGE, IMAGE
from llmos_ros.kinds.taxels import TACTILE_ARRAY

# the input contract (../shared/spec): topic name (namespaced or not) -> its message type
CONTRACT_TYPES = {'/camera/image_raw': IMAGE, '/camera/image_raw/compressed': COMPRESSED_IMAGE,
                  '/microphone/audio': AUDIO_CHUNK, '/tactile/array': TACTILE_ARRAY,
                  '/tactile/image': IMAGE, '/' + LABEL_TOPIC: STRING}
# order of inferred modalities (model order); roles not named here follow in the bags' order
ROLE_ORDER = ('camera', 'audio', 'tactile', 'tactile_image')


def _paths(bag_paths) -> list[Path]:
    if isinstance(bag_paths, (str, Path)):
        bag_paths = [bag_paths]
    paths = [Path(p) for p in bag_paths]
    if not paths:
        raise BagError('no bags given')
    return paths


# -------------------------------------------------------------------------------------------------
# modality inference

def _first_msg(path, topic):
    for item in read_bag(path, topics=[topic]):
        return item
    return None


def infer_modalities(bag_paths) -> dict[str, ModalityConfig]:
    """
    Modality configs from the bags' topics and first messages.

    Each topic of a type some kind reads (llmos_ros.kinds) becomes the modality its kind's
    `role` names, configured by its `from_topic`: camera Image/CompressedImage -> 'camera',
    tactile/image -> 'tactile' (kind image), TactileArray -> 'tactile' (kind taxels; a tactile
    image beside it becomes 'tactile_image'), AudioChunk -> 'audio' at the bag's sample rate,
    WrenchStamped -> 'wrench'. Images keep their size up to 64 px a side, else are downscaled to
    64 keeping the aspect; channels 1 for mono encodings, else 3. One topic per role: raw
    images win over compressed ones.
    """
    found: dict[str, tuple[Path, str, str]] = {}  # role -> (bag, topic, type)
    for path in _paths(bag_paths):
        check_contract_types(path, bag_topics(path))
        for topic, mtype in sorted(bag_topics(path).items()):
            kind = kinds.for_message_type(mtype)
            if kind is None:
                continue
            role = kind.role(topic.rstrip('/'))
            prev = found.get(role)
            # raw images win over compressed ones of the same role
            if prev is None or (prev[2] == COMPRESSED_IMAGE and mtype == IMAGE):
                found[role] = (path, topic, mtype)
    if 'tactile_image' in found and 'tactile' not in found:
        found['tactile'] = found.pop('tactile_image')
    mods: dict[str, ModalityConfig] = {}
    for role in sorted(found, key=lambda r: ROLE_ORDER.index(r) if r in ROLE_ORDER
                       else len(ROLE_ORDER)):
        path, topic, mtype = found[role]
        first = _first_msg(path, topic)
        if first is None:
            continue
        kind = kinds.for_message_type(mtype)
        try:
            fields = kind.from_topic(mtype, kinds.frame_from_msg(mtype, first[3]))
        except InputError as exc:
            raise BagError(f'bag {path}: first message on {topic} is unusable: {exc}') from None
        mods[role] = ModalityConfig(role, kind.name, topic, mtype, **fields)
    if not mods:
        raise BagError(f'no sensor topics of the input contract in {[str(p) for p in found]}'
                       if found else 'no sensor topics of the input contract in the bags')
    return mods


# -------------------------------------------------------------------------------------------------
# sample table

@dataclass
class SampleTable:
    """Paired, preprocessed samples (row i of every array is one sample)."""

    arrays: dict[str, np.ndarray]  # name -> (N, *shape) float32, zeros where absent
    present: dict[str, np.ndarray]  # name -> (N,) bool
    stamps: np.ndarray  # (N,) int64 sample times
    labels: np.ndarray  # (N,) str, '' when no label
    modality_stamps: dict[str, np.ndarray] = field(default_factory=dict)  # (N,) int64, -1 absent
    bag_index: np.ndarray | None = None  # (N,) int32, which bag each sample came from
    drops: dict[str, int] = field(default_factory=dict)
    stats: dict | None = None  # the stats the arrays are normalised with, None = raw

    def __len__(self) -> int:
        return int(self.stamps.shape[0])

    def subset(self, idx) -> SampleTable:
        """Rows idx (indices or boolean mask) as a new table."""
        idx = np.asarray(idx)
        return dataclasses.replace(
            self, arrays={k: v[idx] for k, v in self.arrays.items()},
            present={k: v[idx] for k, v in self.present.items()},
            stamps=self.stamps[idx], labels=self.labels[idx],
            modality_stamps={k: v[idx] for k, v in self.modality_stamps.items()},
            bag_index=None if self.bag_index is None else self.bag_index[idx],
            drops=dict(self.drops))


def check_contract_types(path, topics: dict[str, str]) -> None:
    """BagError when a topic named as in the input contract holds another message type."""
    for topic, mtype in sorted(topics.items()):
        name = norm_topic(topic)
        for suffix, wanted in CONTRACT_TYPES.items():
            if (name == suffix or name.endswith(suffix)) and mtype != wanted:
                raise BagError(f'bag {path}: topic {topic} holds {mtype}, but the input '
                               f'contract says {wanted}; it is not used in place of another '
                               f'input. Rename the topic or fix the recording.')


def build_samples(bag_paths, cfg: Config, stats: dict | None = None,
                  progress: bool = True) -> SampleTable:
    """
    Read bags in stamp order and pair + preprocess them exactly as the live node does.

    stats: {modality: {'mean', 'std'}} to normalise with (None: raw arrays, see fit_stats).
    Each bag goes through `core.bag_samples.BagSamples` (the path llmos-eval replays too).
    A sample with no usable modality at all is left out ('no_modality'); an input that fails
    conversion, validation, pairing or preprocessing is counted by reason and absent from its
    sample. `drops` of the table: every drop, by '<modality>/<reason>'.
    """
    paths = _paths(bag_paths)
    if not cfg.modalities:
        raise BagError('no modalities configured; use infer_modalities(bag_paths)')
    ref = reference_modality(cfg)
    preps = {n: Preprocessor(m, stats) for n, m in cfg.modalities.items()}
    drops = DropCounter()
    parts = []
    for bag_i, path in enumerate(paths):
        bag = BagSamples(path, cfg, Pairer(preps, Synchronizer(cfg)), progress=progress)
        ref_topic = next((t for t, n in bag.topics.items() if n == ref), None)
        buf = _Buffers(cfg, list(cfg.modalities),
                       max(16, bag.info['counts'].get(ref_topic, 0)) if ref_topic else 1024)
        for step in bag:
            drops.add(step.result.drops)
            for sample in step.result.samples:
                drops.add(buf.add(sample, preps))
        part = buf.table(stats)
        part.labels = bag.labels(part.stamps)
        part.bag_index = np.full(len(part), bag_i, np.int32)
        parts.append(part)
    table = concat_tables(parts)
    table.drops = drops.snapshot()
    return table


class _Buffers:
    """Preallocated, growing per-modality arrays for one bag."""

    def __init__(self, cfg: Config, names: list[str], cap: int):
        self.cfg, self.names, self.n = cfg, names, 0
        self.arrays = {n: np.zeros((cap,) + tuple(cfg.modalities[n].shape()), np.float32)
                       for n in names}
        self.present = {n: np.zeros(cap, bool) for n in names}
        self.mstamps = {n: np.full(cap, -1, np.int64) for n in names}
        self.stamps = np.zeros(cap, np.int64)

    def _grow(self) -> None:
        cap = max(16, 2 * self.stamps.shape[0])

        def grow(a, fill):
            out = np.full((cap,) + a.shape[1:], fill, a.dtype)
            out[:a.shape[0]] = a
            return out
        self.arrays = {k: grow(v, 0) for k, v in self.arrays.items()}
        self.present = {k: grow(v, False) for k, v in self.present.items()}
        self.mstamps = {k: grow(v, -1) for k, v in self.mstamps.items()}
        self.stamps = grow(self.stamps, 0)

    def add(self, s, preps) -> list[Drop]:
        """
        Preprocess sample set `s` into the next row; return its drops.

        A sample none of whose modalities is usable is left out ('no_modality').
        """
        if self.n >= self.stamps.shape[0]:
            self._grow()
        i, drops = self.n, []
        for name, window in s.windows.items():
            try:
                self.arrays[name][i] = preps[name](window, s.window_end(name))
            except InputError as exc:
                drops.append(Drop(name, exc.reason, str(exc)))
                self.arrays[name][i] = 0.0
                continue
            self.present[name][i] = True
            self.mstamps[name][i] = s.stamps.get(name, -1)
        if not any(self.present[name][i] for name in s.windows):
            for name in s.windows:
                self.present[name][i] = False
                self.mstamps[name][i] = -1
            return drops + [Drop('', 'no_modality', f'sample at {s.stamp_ns} ns')]
        self.stamps[i] = s.stamp_ns
        self.n += 1
        return drops

    def table(self, stats) -> SampleTable:
        n = self.n
        return SampleTable(arrays={k: v[:n] for k, v in self.arrays.items()},
                           present={k: v[:n] for k, v in self.present.items()},
                           stamps=self.stamps[:n].copy(), labels=np.full(n, '', dtype=str),
                           modality_stamps={k: v[:n] for k, v in self.mstamps.items()},
                           stats=stats)


def concat_tables(tables: Iterable[SampleTable]) -> SampleTable:
    """Rows of several tables (same modalities and stats) one after the other."""
    tables = list(tables)
    if len(tables) == 1:
        return tables[0]
    t0 = tables[0]
    return SampleTable(
        arrays={k: np.concatenate([t.arrays[k] for t in tables]) for k in t0.arrays},
        present={k: np.concatenate([t.present[k] for t in tables]) for k in t0.present},
        stamps=np.concatenate([t.stamps for t in tables]),
        labels=np.concatenate([t.labels for t in tables]),
        modality_stamps={k: np.concatenate([t.modality_stamps[k] for t in tables])
                         for k in t0.modality_stamps},
        bag_index=np.concatenate([t.bag_index for t in tables]),
        drops=dict(sum((Counter(t.drops) for t in tables), Counter())), stats=t0.stats)


# -------------------------------------------------------------------------------------------------
# normalisation and splits

def fit_stats(table_or_bags, cfg: Config | None = None) -> dict[str, dict[str, list[float]]]:
    """
    Per-modality, per-channel mean/std over the present rows of a raw (unnormalised) table.

    Also accepts bag paths (with cfg): builds the raw table first. Use the training split only.
    """
    table = table_or_bags
    if not isinstance(table, SampleTable):
        if cfg is None:
            raise ValueError('fit_stats(bag_paths, cfg) needs the config')
        table = build_samples(table_or_bags, cfg, stats=None, progress=False)
    if table.stats is not None:
        raise ValueError('fit_stats needs a raw table (built with stats=None)')
    out = {}
    for name, arr in table.arrays.items():
        mask = table.present[name]
        if mask.any():
            out[name] = compute_stats(arr[mask])
        else:
            out[name] = {'mean': [0.0] * arr.shape[1], 'std': [1.0] * arr.shape[1]}
    return out


def normalize(table: SampleTable, stats: dict) -> SampleTable:
    """A raw table z-scored with stats, as `Preprocessor(mod, stats)` would (absent rows: 0)."""
    if table.stats is not None:
        raise ValueError('table is normalised already')
    arrays = {}
    for name, arr in table.arrays.items():
        out = apply_stats(arr, stats[name], batched=True)
        out[~table.present[name]] = 0.0
        arrays[name] = out
    return dataclasses.replace(table, arrays=arrays, stats=stats)


def split_by_time(table: SampleTable, val_fraction: float,
                  gap_s: float = 0.0) -> tuple[SampleTable, SampleTable]:
    """
    (train, val): in each bag the last val_fraction of the samples (by stamp) is held out.

    gap_s also leaves out training samples within gap_s before the first held-out one (so audio
    windows never overlap across the split).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f'val_fraction must be in [0, 1), got {val_fraction}')
    n = len(table)
    bags = table.bag_index if table.bag_index is not None else np.zeros(n, np.int32)
    train = np.zeros(n, bool)
    val = np.zeros(n, bool)
    for b in np.unique(bags):
        rows = np.flatnonzero(bags == b)
        rows = rows[np.argsort(table.stamps[rows], kind='stable')]
        n_val = int(round(rows.size * val_fraction))
        if n_val == 0:
            train[rows] = True
            continue
        cut = table.stamps[rows[rows.size - n_val]]
        val[rows[rows.size - n_val:]] = True
        keep = rows[:rows.size - n_val]
        train[keep[table.stamps[keep] < cut - int(round(gap_s * 1e9))]] = True
    return table.subset(np.flatnonzero(train)), table.subset(np.flatnonzero(val))
