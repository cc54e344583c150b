"""
Deterministic, ROS-free replay of a bag through the live perception path (no rclpy).

`replay(bag, engine)` reads the bag through `core.bag_samples.BagSamples` (the path training
reads bags through too): in log-time order, every message of a model topic turned into a frame
and paired with `engine.push` / `engine.flush`; each sample is fused with `engine.infer` -- the
same calls, in the same order, as the perception node -- as fast as the machine allows. It
returns a `Replay`: per evaluated sample the normalised model inputs, presence, stamps, label,
live latent and latency, plus an account of every message read (`_Account`), from the typed
drops that pushing and preprocessing return:

- processed: a sensor message in the window of at least one evaluated sample whose modality was
  usable, or an `episode/label` message (labels feed the label stream);
- dropped, by reason (every message read is exactly one of the two):
  - 'unused_topic': a topic of no model modality (and not a label);
  - '<modality>/<reason>' of the message itself refused by `engine.push` (the `Drop` it
    returns: 'stamp_backwards', 'stamp_repeated', 'stamp_jump', 'off_timeline', or a
    validation reason);
  - '<modality>/<reason>' of preprocessing (`InputError.reason`: 'size', 'encoding', 'nan', ...)
    when every window holding the message failed;
  - '<modality>/type': a message type the modality cannot read;
  - '<modality>/unpaired': accepted but never in any sample's window (a newer frame was chosen,
    or it was older than max_age_s at every sample time);
  - '<modality>/after_max_samples': read after the --max-samples-th sample was taken.

Messages are tracked by (modality, header stamp): the synchroniser only accepts strictly
increasing stamps per modality, so the key is unique.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
import time
from typing import Callable

import numpy as np

from llmos_ros.core.bag_samples import BagSamples, Step
from llmos_ros.core.sync import SampleSet

_USED = 1  # message status: in the window of an evaluated sample where its modality was usable


@dataclass
class Replay:
    """Result of replaying one bag (see the module docstring)."""

    names: list[str]  # the model's modalities, in model order
    arrays: dict[str, np.ndarray]  # name -> (N, *shape) float32, normalised, zeros when absent
    present: dict[str, np.ndarray]  # name -> (N,) bool
    stamps: np.ndarray  # (N,) int64 sample stamps
    modality_stamps: dict[str, np.ndarray]  # name -> (N,) int64 input stamp, -1 when absent
    labels: np.ndarray  # (N,) str, '' before the first label / without labels
    means: np.ndarray | None  # (N, latent) live posterior means (None: preprocess only)
    stds: np.ndarray | None
    latency_s: np.ndarray  # (N,) engine.infer seconds (preprocessing + model)
    counts: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)  # message-level, by reason
    engine_drops: dict[str, int] = field(default_factory=dict)  # engine.drops (event-level)
    unused_topics: dict[str, int] = field(default_factory=dict)  # topic -> messages
    first_errors: dict[str, str] = field(default_factory=dict)  # modality -> first input error
    wall_s: float = 0.0  # reading + pairing + preprocessing + model, without callbacks
    data_span_s: float = 0.0  # last - first stamp of the sensor messages read
    bag_error: str | None = None  # set when a truncated bag was read up to the cut
    has_labels: bool = False
    stride: int = 1  # every stride-th sample formed was kept (1: consecutive samples)

    def __len__(self) -> int:
        return int(self.stamps.shape[0])


class _Rows:
    """The evaluated samples' rows: model inputs, presence, stamps, live latents."""

    def __init__(self, names: list[str]):
        self.names = names
        self.inputs: dict[str, list] = {n: [] for n in names}  # arrays, None when absent
        self.stamps: list[int] = []
        self.mstamps: dict[str, list[int]] = {n: [] for n in names}
        self.means, self.stds, self.latency = [], [], []

    def add(self, sample: SampleSet, arrays: dict, result) -> None:
        """One evaluated sample: its usable inputs `arrays`, its `Inference` (or None)."""
        self.stamps.append(int(sample.stamp_ns))
        for n in self.names:
            self.inputs[n].append(np.asarray(arrays[n], np.float32) if n in arrays else None)
            self.mstamps[n].append(int(sample.stamps.get(n, -1)) if n in arrays else -1)
        if result is not None:
            self.means.append(np.asarray(result.mean, np.float32))
            self.stds.append(np.asarray(result.std, np.float32))
            self.latency.append(float(result.seconds))

    def arrays(self, shapes: dict) -> dict[str, np.ndarray]:
        """{name: (N, *shape) float32}, zeros where absent."""
        n = len(self.stamps)
        out = {}
        for name in self.names:
            a = np.zeros((n,) + shapes[name], np.float32)
            for i, row in enumerate(self.inputs[name]):
                if row is not None:
                    a[i] = row
            out[name] = a
        return out

    def present(self) -> dict[str, np.ndarray]:
        return {n: np.asarray([r is not None for r in v], bool).reshape(len(self.stamps))
                for n, v in self.inputs.items()}

    def latents(self, infer: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(means, stds) of the live path; (None, None) when only preprocessed."""
        if not infer:
            return None, None
        if not self.means:
            return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
        return np.stack(self.means), np.stack(self.stds)


class _Account:
    """
    Every message read: processed, or dropped by one reason (module doc).

    Accepted sensor messages are tracked by (modality, header stamp) until a sample uses them.
    """

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.unused: Counter[str] = Counter()
        self.first_errors: dict[str, str] = {}
        self.status: dict[tuple[str, int], object] = {}  # None (waiting), _USED, drop reason
        self.span: tuple[int, int] | None = None

    def message(self, step: Step) -> None:
        """Account one message read (a label, an unused topic, a refused or accepted frame)."""
        self.counts['messages'] += 1
        if step.modality is None:
            if step.is_label:
                self.counts['labels'] += 1
            else:
                self.unused[step.topic] += 1
                self.drops['unused_topic'] += 1
            return
        refused = step.result.refused
        if refused is not None:
            self.drops[refused.key] += 1
            self.first_errors.setdefault(step.modality, f'{step.modality}: {refused.detail}')
            if step.frame is None:  # not even converted: no stamp to span
                return
        else:
            self.status[(step.modality, int(step.frame.stamp_ns))] = None
        lo, hi = self.span or (step.stamp_ns, step.stamp_ns)
        self.span = (min(lo, step.stamp_ns), max(hi, step.stamp_ns))

    def sample(self, sample: SampleSet, arrays: dict, drops: list) -> None:
        """Mark the frames of a sample: used, or dropped by its modality's failure."""
        self.counts['samples'] += 1
        if not arrays:
            self.counts['samples_no_modality'] += 1
        failed = {d.modality: d.key for d in drops}
        for name, window in sample.windows.items():
            for fr in window:
                key = (name, int(fr.stamp_ns))
                if name in arrays:
                    self.status[key] = _USED
                elif self.status.get(key) != _USED:
                    self.status[key] = failed.get(name, f'{name}/no_modality')
        for d in drops:
            self.first_errors.setdefault(d.modality, f'{d.modality}: {d.detail}')

    def close(self, last_stamp: int | None) -> dict[str, int]:
        """Settle the frames never used (unpaired, or after the last sample of --max-samples)."""
        for (name, stamp), st in self.status.items():
            if st == _USED:
                self.counts['processed'] += 1
            elif st is None:
                late = last_stamp is not None and stamp > last_stamp
                self.drops[f'{name}/{"after_max_samples" if late else "unpaired"}'] += 1
            else:
                self.drops[st] += 1
        self.counts['processed'] += self.counts['labels']
        self.counts['dropped'] = sum(self.drops.values())
        counts = {k: self.counts[k] for k in ('messages', 'processed', 'dropped', 'samples',
                                              'samples_evaluated', 'samples_no_modality',
                                              'labels')}
        if counts['messages'] != counts['processed'] + counts['dropped']:  # pragma: no cover
            raise AssertionError(f'message accounting is off: {counts}')
        return counts


def replay(bag, engine, *, infer: bool = True, max_samples: int | None = None,
           stride: int = 1, partial: bool = False, progress: bool = False,
           on_message: Callable | None = None, on_result: Callable | None = None,
           desc: str = 'replay') -> Replay:
    """
    Replay `bag` through `engine` (a `PerceptionEngine`); see the module docstring.

    infer: fuse each sample with engine.infer (the live path: latent, latency); False only
    preprocesses (engine.preprocess), e.g. for a training bag. max_samples: stop after this many
    evaluated samples. stride: keep every stride-th sample formed (subsampling a large bag).
    partial: a truncated / corrupt bag is evaluated up to the cut and the error kept in
    `bag_error` instead of raised. on_message(topic, msg_type, stamp_ns, msg) sees every message
    read; on_result(inference) every evaluated sample's `Inference` (infer=True); their time is
    not counted in wall_s.
    """
    names = list(engine.names)
    source = BagSamples(bag, engine.cfg, engine, all_topics=True, partial=partial,
                        progress=progress, desc=desc)
    rows, account = _Rows(names), _Account()
    callback_s, formed, done = 0.0, 0, False
    started = time.perf_counter()
    for step in source:
        if step.topic is not None:
            if on_message is not None:
                t0 = time.perf_counter()
                on_message(step.topic, step.msg_type, step.stamp_ns, step.msg)
                callback_s += time.perf_counter() - t0
            account.message(step)
        for sample in step.result.samples:
            keep = formed % max(1, stride) == 0
            formed += 1
            if not keep:
                continue
            if infer:
                result, drops = engine.infer(sample)
                arrays = result.inputs if result is not None else {}
            else:
                (arrays, drops), result = engine.preprocess(sample), None
            account.sample(sample, arrays, drops)
            if not arrays:
                continue
            account.counts['samples_evaluated'] += 1
            rows.add(sample, arrays, result)
            if result is not None and on_result is not None:
                t0 = time.perf_counter()
                on_result(result)
                callback_s += time.perf_counter() - t0
            if max_samples is not None and account.counts['samples_evaluated'] >= max_samples:
                done = True
                break
        if done:  # --max-samples reached: stop reading
            break
    wall_s = time.perf_counter() - started - callback_s
    counts = account.close(rows.stamps[-1] if done and rows.stamps else None)
    stamps = np.asarray(rows.stamps, np.int64)
    n = len(stamps)
    means, stds = rows.latents(infer)
    span = account.span
    return Replay(
        names=names, arrays=rows.arrays({m: tuple(engine.cfg.modalities[m].shape())
                                         for m in names}),
        present=rows.present(), stamps=stamps,
        modality_stamps={k: np.asarray(v, np.int64).reshape(n) for k, v in rows.mstamps.items()},
        labels=source.labels(stamps), means=means, stds=stds,
        latency_s=np.asarray(rows.latency, np.float64),
        counts=counts, drops=dict(sorted(account.drops.items())),
        engine_drops=engine.drops.snapshot(), unused_topics=dict(account.unused),
        first_errors=account.first_errors, wall_s=max(wall_s, 1e-9),
        data_span_s=0.0 if span is None else (span[1] - span[0]) * 1e-9,
        bag_error=source.bag_error, has_labels=bool(source.label_t), stride=max(1, stride))
