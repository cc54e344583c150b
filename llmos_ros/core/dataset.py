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
from typing import Iterable, Sequence

import numpy as np

from llmos_ros import kinds
from llmos_ros.config import Config, ModalityConfig
from llmos_ros.core.bags import bag_info, bag_topics, norm_topic, read_bag
from llmos_ros.core.frames import (
    AUDIO_CHUNK,
    COMPRESSED_IMAGE,
    IMAGE,
    STRING,
    TACTILE_ARRAY,
    frame_from_msg,
)
from llmos_ros.core.pairing import pair
from llmos_ros.core.preprocess import Preprocessor, apply_stats, compute_stats
from llmos_ros.core.sync import Synchronizer, reference_modality
from llmos_ros.errors import BagError, InputError

LABEL_TOPIC = '/episode/label'
# the input contract (../shared/spec): topic name (namespaced or not) -> its message type
CONTRACT_TYPES = {'/camera/image_raw': IMAGE, '/camera/image_raw/compressed': COMPRESSED_IMAGE,
                  '/microphone/audio': AUDIO_CHUNK, '/tactile/array': TACTILE_ARRAY,
                  '/tactile/image': IMAGE, LABEL_TOPIC: STRING}
KIND_TYPES = kinds.message_types_by_kind()  # message types a modality kind can read
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
            fields = kind.from_topic(mtype, frame_from_msg(mtype, first[3]))
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


def _read_topics(cfg: Config, path) -> tuple[dict[str, str], str | None]:
    topics = bag_topics(path)
    by_norm = {norm_topic(t): t for t in topics}
    topic_mod = {}
    for name, mod in cfg.modalities.items():
        t = norm_topic(mod.topic)
        if t in by_norm:
            have = topics[by_norm[t]]
            if have not in KIND_TYPES.get(mod.kind, ()):
                raise BagError(f'bag {path}: topic {by_norm[t]} holds {have}, but modality '
                               f'{name!r} ({mod.kind}) needs '
                               f'{" or ".join(KIND_TYPES.get(mod.kind, ()))}')
            topic_mod[by_norm[t]] = name
    label = next((t for t in topics if norm_topic(t).endswith(LABEL_TOPIC)
                  and topics[t] == STRING), None)
    return topic_mod, label


def build_samples(bag_paths, cfg: Config, stats: dict | None = None,
                  progress: bool = True) -> SampleTable:
    """
    Read bags in stamp order and pair + preprocess them exactly as the live node does.

    stats: {modality: {'mean', 'std'}} to normalise with (None: raw arrays, see fit_stats).
    A sample with no usable modality at all is left out ('no_modality'); an input that fails
    preprocessing is counted by its InputError reason and absent from its sample.
    """
    from tqdm import tqdm
    paths = _paths(bag_paths)
    if not cfg.modalities:
        raise BagError('no modalities configured; use infer_modalities(bag_paths)')
    ref = reference_modality(cfg)
    preps = {n: Preprocessor(m, stats) for n, m in cfg.modalities.items()}
    names = list(cfg.modalities)
    drops: Counter[str] = Counter()
    parts = []
    for bag_i, path in enumerate(paths):
        topic_mod, label_topic = _read_topics(cfg, path)
        if not topic_mod:
            raise BagError(f'bag {path} holds none of the topics '
                           f'{sorted(m.topic for m in cfg.modalities.values())}')
        info = bag_info(path)
        ref_topic = next((t for t, n in topic_mod.items() if n == ref), None)
        cap = max(16, info['counts'].get(ref_topic, 0)) if ref_topic else 1024
        total = sum(info['counts'].get(t, 0) for t in topic_mod) + (
            info['counts'].get(label_topic, 0) if label_topic else 0)
        buf = _Buffers(cfg, names, cap)
        sync = Synchronizer(cfg)
        label_t: list[int] = []
        label_v: list[str] = []
        read_topics = list(topic_mod) + ([label_topic] if label_topic else [])
        bar = tqdm(total=total, desc=Path(path).name, unit='msg', disable=not progress,
                   mininterval=0.5)
        n_read = 0
        for topic, mtype, stamp, msg in read_bag(path, read_topics):
            n_read += 1
            if n_read % 2048 == 0:
                bar.update(2048)
            if topic == label_topic:
                label_t.append(stamp)
                label_v.append(str(msg.data))
                continue
            name = topic_mod[topic]
            try:
                frame = frame_from_msg(mtype, msg)
            except ValueError:
                drops[f'{name}/type'] += 1
                continue
            except InputError as exc:
                drops[f'{name}/{exc.reason}'] += 1
                continue
            try:
                ready = pair(preps[name], sync, name, frame, drops)
            except InputError:
                continue  # counted by pair()
            for s in ready:
                buf.add(s, preps, drops)
        for s in sync.pop_ready(flush=True):
            buf.add(s, preps, drops)
        bar.update(n_read % 2048)
        bar.close()
        part = buf.table(stats)
        part.labels = _labels_at(part.stamps, label_t, label_v)
        part.bag_index = np.full(len(part), bag_i, np.int32)
        parts.append(part)
    table = concat_tables(parts)
    table.drops = dict(drops)
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

    def add(self, s, preps, drops: Counter) -> None:
        if self.n >= self.stamps.shape[0]:
            self._grow()
        i, any_ok = self.n, False
        for name, window in s.windows.items():
            try:
                self.arrays[name][i] = preps[name](window, s.stamp_ns)
            except InputError as exc:
                drops[f'{name}/{exc.reason}'] += 1
                self.arrays[name][i] = 0.0
                continue
            self.present[name][i] = True
            self.mstamps[name][i] = s.stamps.get(name, -1)
            any_ok = True
        if not any_ok:
            drops['no_modality'] += 1
            for name in s.windows:
                self.present[name][i] = False
                self.mstamps[name][i] = -1
            return
        self.stamps[i] = s.stamp_ns
        self.n += 1

    def table(self, stats) -> SampleTable:
        n = self.n
        return SampleTable(arrays={k: v[:n] for k, v in self.arrays.items()},
                           present={k: v[:n] for k, v in self.present.items()},
                           stamps=self.stamps[:n].copy(), labels=np.full(n, '', dtype=str),
                           modality_stamps={k: v[:n] for k, v in self.mstamps.items()},
                           stats=stats)


def _labels_at(stamps: np.ndarray, label_t: Sequence[int], label_v: Sequence[str]) -> np.ndarray:
    """The most recent label with stamp <= each sample stamp ('' before the first)."""
    if not label_t:
        return np.full(stamps.shape[0], '', dtype=object).astype(str)
    order = np.argsort(np.asarray(label_t, np.int64), kind='stable')
    lt = np.asarray(label_t, np.int64)[order]
    lv = np.asarray(list(label_v) + [''], dtype=str)[np.append(order, len(label_v))]
    idx = np.searchsorted(lt, stamps, side='right') - 1  # -1: before the first label
    return lv[np.where(idx < 0, len(label_v), idx)]


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
