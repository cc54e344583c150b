"""
Deterministic, ROS-free replay of a bag through the live perception path (no rclpy).

`replay(bag, engine)` reads the bag in log-time order (rosbags), turns every message of a model
topic into a frame (`core.frames.frame_from_msg`), pairs frames with `engine.push` /
`engine.flush` and fuses each sample with `engine.infer` -- the same calls, in the same order, as
the perception node -- as fast as the machine allows. It returns a `Replay`: per evaluated
sample the normalised model inputs, presence, stamps, label, live latent and latency, plus an
account of every message read:

- processed: a sensor message in the window of at least one evaluated sample whose modality was
  usable, or an `episode/label` message (labels feed the label stream);
- dropped, by reason (every message read is exactly one of the two):
  - 'unused_topic': a topic of no model modality (and not a label);
  - '<modality>/<reason>' of the synchroniser for the message itself ('stamp_backwards',
    'stamp_repeated', 'stamp_jump', 'off_timeline');
  - '<modality>/<reason>' of preprocessing (`InputError.reason`: 'size', 'encoding', 'nan', ...)
    when every window holding the message failed;
  - '<modality>/type': a message type the modality cannot read;
  - '<modality>/unpaired': accepted but never in any sample's window (a newer frame was chosen,
    or it was older than max_age_s at every sample time);
  - '<modality>/after_max_samples': read after the --max-samples-th sample was taken.

Messages are tracked by (modality, header stamp): the synchroniser only accepts strictly
increasing stamps per modality, so the key is unique.

`latent_state_msg` builds the node's LatentState from the engine's `latent_fields` with the
rosbags type store (the node builds the rclpy one from the same fields), for recording.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
import sys
import time
from typing import Callable

import numpy as np

from llmos_ros.core.bags import MESSAGES, bag_info, norm_topic, read_bag
from llmos_ros.core.frames import (
    AUDIO_CHUNK,
    COMPRESSED_IMAGE,
    IMAGE,
    STRING,
    TACTILE_ARRAY,
    frame_from_msg,
)
from llmos_ros.core.messages import latent_state_message, surprise_message
from llmos_ros.errors import BagError, InputError

LABEL_SUFFIX = '/episode/label'
# drop reasons of Synchronizer.push that refer to the pushed frame itself
# frame-level rejections by engine.push: pairing order, and validation (InputError reasons)
FRAME_REJECTS = ('stamp_backwards', 'stamp_repeated', 'stamp_jump', 'off_timeline',
                 'unknown_modality', 'encoding', 'size',
                 'nan', 'sample_rate', 'decode', 'type', 'empty', 'too_large')
# message types a modality kind can read
KIND_TYPES = {'image': (IMAGE, COMPRESSED_IMAGE), 'audio': (AUDIO_CHUNK,),
              'taxels': (TACTILE_ARRAY,)}
_USED = 1


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

    def __len__(self) -> int:
        return int(self.stamps.shape[0])


def check_topics(bag, cfg) -> dict[str, str]:
    """
    {bag topic: modality} of a bag for a model config; raises BagError.

    Errors: the bag holds none of the model's topics (both lists named), or a model topic holds
    a message type its modality cannot read.
    """
    from llmos_ros.core.bags import bag_topics
    topics = bag_topics(bag)
    return match_topics(bag, cfg, topics)


def match_topics(bag, cfg, topics: dict[str, str]) -> dict[str, str]:
    by_norm = {norm_topic(t): t for t in topics}
    topic_mod = {}
    for name, mod in cfg.modalities.items():
        t = by_norm.get(norm_topic(mod.topic))
        if t is None:
            continue
        if topics[t] not in KIND_TYPES[mod.kind]:
            raise BagError(f'bag {bag}: topic {t} holds {topics[t]}, but the model reads it as '
                           f'modality {name!r} ({mod.kind}), which needs '
                           f'{" or ".join(KIND_TYPES[mod.kind])}')
        topic_mod[t] = name
    if not topic_mod:
        wanted = ', '.join(f'{n}: {norm_topic(m.topic)} ({m.msg_type})'
                           for n, m in cfg.modalities.items())
        have = ', '.join(f'{t} ({ty})' for t, ty in sorted(topics.items())) or 'no topics'
        raise BagError(f"bag {bag} holds none of the model's topics. The model reads {wanted}; "
                       f'the bag holds {have}. Re-record with these topics or train a model on '
                       f"this bag's topics.")
    return topic_mod


def _label_topic(topics: dict[str, str]) -> str | None:
    return next((t for t, ty in sorted(topics.items())
                 if norm_topic(t).endswith(LABEL_SUFFIX) and ty == STRING), None)


def labels_at(stamps: np.ndarray, label_t, label_v) -> np.ndarray:
    """The most recent label with stamp <= each sample stamp ('' before the first label)."""
    stamps = np.asarray(stamps, np.int64)
    if not len(label_t):
        return np.full(stamps.shape[0], '', dtype=object).astype(str)
    order = np.argsort(np.asarray(label_t, np.int64), kind='stable')
    lt = np.asarray(label_t, np.int64)[order]
    lv = np.asarray([str(label_v[i]) for i in order] + [''], dtype=str)
    idx = np.searchsorted(lt, stamps, side='right') - 1
    return lv[np.where(idx < 0, len(lt), idx)]


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
    from tqdm import tqdm
    cfg = engine.cfg
    names = list(engine.names)
    try:
        info = bag_info(bag)
    except BagError:
        if not partial:
            raise
        info = None
    if info is not None:
        topic_mod = match_topics(bag, cfg, info['topics'])
        label_topic = _label_topic(info['topics'])
    else:  # truncated MCAP: topics are learnt while reading
        topic_mod, label_topic = None, None
    shapes = {n: tuple(cfg.modalities[n].shape()) for n in names}
    rows: dict[str, list] = {n: [] for n in names}
    present: dict[str, list] = {n: [] for n in names}
    mstamps: dict[str, list] = {n: [] for n in names}
    stamps, means, stds, lat = [], [], [], []
    label_t, label_v = [], []
    status: dict[tuple[str, int], object] = {}
    drops: Counter = Counter()
    unused: Counter = Counter()
    first_errors: dict[str, str] = {}
    counts = Counter()
    seen_types: dict[str, str] = {}
    t_first = t_last = None
    callback_s = 0.0
    formed = 0
    done = False
    last_eval_stamp = None

    def take(sample) -> None:
        """Evaluate one sample set; mark its frames."""
        nonlocal callback_s, last_eval_stamp
        before = Counter(engine.drops)
        if infer:
            result, errors = engine.infer(sample)
            arrays = result.inputs if result is not None else {}
        else:
            arrays, errors = engine.preprocess(sample)
            result = None
        failed = {}
        for key in engine.drops - before:
            mod, _, reason = key.partition('/')
            failed[mod] = reason
        for err in errors:
            mod = err.split(':', 1)[0]
            first_errors.setdefault(mod, err)
        counts['samples'] += 1
        if not arrays:
            counts['samples_no_modality'] += 1
        for name, window in sample.windows.items():
            ok = bool(arrays) and name in arrays
            for fr in window:
                key = (name, int(fr.stamp_ns))
                if ok:
                    status[key] = _USED
                elif status.get(key) != _USED:
                    status[key] = f'{name}/{failed.get(name, "no_modality")}'
        if not arrays:
            return
        counts['samples_evaluated'] += 1
        last_eval_stamp = sample.stamp_ns
        stamps.append(int(sample.stamp_ns))
        for n in names:
            if n in arrays:
                rows[n].append(np.asarray(arrays[n], np.float32))
                present[n].append(True)
                mstamps[n].append(int(sample.stamps.get(n, -1)))
            else:
                rows[n].append(None)
                present[n].append(False)
                mstamps[n].append(-1)
        if result is not None:
            means.append(np.asarray(result.mean, np.float32))
            stds.append(np.asarray(result.std, np.float32))
            lat.append(float(result.seconds))
            if on_result is not None:
                t0 = time.perf_counter()
                on_result(result)
                callback_s += time.perf_counter() - t0

    def handle(samples) -> None:
        nonlocal formed, done
        for s in samples:
            if done:
                return
            keep = formed % max(1, stride) == 0
            formed += 1
            if keep:
                take(s)
                if max_samples is not None and counts['samples_evaluated'] >= max_samples:
                    done = True

    total = info['message_count'] if info is not None else None
    bar = tqdm(total=total, desc=desc, unit='msg', disable=not progress, mininterval=0.5,
               file=sys.stderr)
    bag_error = None
    started = time.perf_counter()
    n_read = 0
    try:
        for topic, mtype, stamp, msg in read_bag(bag):
            n_read += 1
            if n_read % 512 == 0:
                bar.update(512)
            counts['messages'] += 1
            if on_message is not None:
                t0 = time.perf_counter()
                on_message(topic, mtype, stamp, msg)
                callback_s += time.perf_counter() - t0
            if topic not in seen_types:
                seen_types[topic] = mtype
                if info is None:  # partial read of a truncated bag: learn topics as they come
                    topic_mod = _partial_topics(cfg, seen_types)
                    label_topic = label_topic or _label_topic({topic: mtype})
            if topic == label_topic:
                label_t.append(stamp)
                label_v.append(str(msg.data))
                counts['labels'] += 1
                continue
            name = topic_mod.get(topic) if topic_mod else None
            if name is None:
                unused[topic] += 1
                drops['unused_topic'] += 1
                continue
            try:
                frame = frame_from_msg(mtype, msg)
            except (ValueError, AttributeError):
                drops[f'{name}/type'] += 1
                continue
            except InputError as exc:
                drops[f'{name}/{exc.reason}'] += 1
                first_errors.setdefault(name, f'{name}: {exc}')
                continue
            t_first = stamp if t_first is None else min(t_first, stamp)
            t_last = stamp if t_last is None else max(t_last, stamp)
            before = Counter(engine.drops)
            ready = engine.push(name, frame)
            rejected = [k for k in (engine.drops - before)
                        if k.partition('/')[2] in FRAME_REJECTS]
            if rejected:
                drops[rejected[0]] += 1
                if engine.last_error:
                    first_errors.setdefault(name, engine.last_error)
            else:
                status[(name, int(frame.stamp_ns))] = None
            handle(ready)
            if done:  # --max-samples reached: stop reading
                break
    except BagError as exc:
        if not partial:
            raise
        bag_error = str(exc)
    if not topic_mod:  # a partially read bag without any model topic
        match_topics(bag, cfg, seen_types)
    if not done:
        handle(engine.flush())
    wall_s = time.perf_counter() - started - callback_s
    bar.update(n_read % 512)
    bar.close()

    for (name, fstamp), st in status.items():
        if st == _USED:
            counts['processed'] += 1
        elif st is None:
            late = done and last_eval_stamp is not None and fstamp > last_eval_stamp
            drops[f'{name}/{"after_max_samples" if late else "unpaired"}'] += 1
        else:
            drops[st] += 1
    counts['processed'] += counts['labels']
    counts['dropped'] = sum(drops.values())
    for key in ('messages', 'processed', 'dropped', 'samples', 'samples_evaluated',
                'samples_no_modality', 'labels'):
        counts.setdefault(key, 0)
    if counts['messages'] != counts['processed'] + counts['dropped']:  # pragma: no cover
        raise AssertionError(f'message accounting is off: {dict(counts)}')

    n = len(stamps)
    arrays = {}
    for name in names:
        out = np.zeros((n,) + shapes[name], np.float32)
        for i, a in enumerate(rows[name]):
            if a is not None:
                out[i] = a
        arrays[name] = out
    stamps_a = np.asarray(stamps, np.int64)
    return Replay(
        names=names, arrays=arrays,
        present={k: np.asarray(v, bool).reshape(n) for k, v in present.items()},
        stamps=stamps_a,
        modality_stamps={k: np.asarray(v, np.int64).reshape(n) for k, v in mstamps.items()},
        labels=labels_at(stamps_a, label_t, label_v),
        means=_stack(means, infer), stds=_stack(stds, infer),
        latency_s=np.asarray(lat, np.float64),
        counts=dict(counts), drops=dict(sorted(drops.items())),
        engine_drops=dict(sorted(engine.drops.items())), unused_topics=dict(unused),
        first_errors=first_errors, wall_s=max(wall_s, 1e-9),
        data_span_s=0.0 if t_first is None else (t_last - t_first) * 1e-9,
        bag_error=bag_error, has_labels=bool(label_t))


def _stack(rows: list, infer: bool) -> np.ndarray | None:
    if not infer:
        return None
    return np.stack(rows) if rows else np.zeros((0, 0), np.float32)


def _partial_topics(cfg, seen: dict[str, str]) -> dict[str, str]:
    by_norm = {norm_topic(m.topic): n for n, m in cfg.modalities.items()}
    out = {}
    for t, ty in seen.items():
        name = by_norm.get(norm_topic(t))
        if name is not None and ty in KIND_TYPES[cfg.modalities[name].kind]:
            out[t] = name
    return out


# ----------------------------------------------------------------------------- output messages
def latent_state_msg(fields: dict):
    """The rosbags LatentState from `PerceptionEngine.latent_fields`, as the node publishes it."""
    return latent_state_message(fields, MESSAGES)


def surprise_msg(fields: dict):
    """The rosbags Surprise from `llmos_ros.temporal.surprise_fields`."""
    return surprise_message(fields, MESSAGES)
