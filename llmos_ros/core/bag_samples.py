"""
One bag -> sample sets and drops: the path training and evaluation share.

`BagSamples(path, cfg, pairer)` matches the model's modalities to the bag's topics
(`match_topics`: message types checked), reads the bag in log-time order, turns each message of a
model topic into a frame and pairs it through `pairer.push` (the shared step, `core.pairing.pair`:
a `Pairer` for training, the live `PerceptionEngine` for evaluation). It yields one `Step` per
message read -- the frame, the sample sets that became ready, every drop -- and a last one for the
end of the bag (`pairer.flush`). Messages of the label topic (`/episode/label`, std_msgs/String)
feed its `labels` (`labels_at`). Users: `core.dataset.build_samples` (training) and
`evaluation.replay.replay` (llmos-eval). Errors name the bag and the cause.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import sys
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from llmos_ros import kinds
from llmos_ros.config import Config
from llmos_ros.core.bags import bag_info, bag_topics, norm_topic, read_bag
from llmos_ros.core.drops import Drop, PushResult
from llmos_ros.core.frames import LABEL_TOPIC, STRING, Frame
from llmos_ros.errors import BagError, InputError

KIND_TYPES = kinds.message_types_by_kind()  # message types a modality kind can read
PROGRESS_EVERY = 512  # messages between progress bar updates


class Pairer(Protocol):
    """What `BagSamples` pairs through: `core.pairing.Pairer` or `inference.PerceptionEngine`."""

    def push(self, name: str, frame: Frame) -> PushResult: ...

    def flush(self) -> PushResult: ...


def match_topics(path, cfg: Config, topics: dict[str, str]) -> dict[str, str]:
    """
    {bag topic: modality} of a bag holding `topics` ({topic: message type}) for a model config.

    BagError naming the bag: a model topic holds a message type its modality cannot read (the
    topic and both types named), or the bag holds none of the model's topics (both lists named).
    """
    by_norm = {norm_topic(t): t for t in topics}
    topic_mod = {}
    for name, mod in cfg.modalities.items():
        topic = by_norm.get(norm_topic(mod.topic))
        if topic is None:
            continue
        wanted = KIND_TYPES.get(mod.kind, ())
        if topics[topic] not in wanted:
            raise BagError(f'bag {path}: topic {topic} holds {topics[topic]}, but the model reads '
                           f'it as modality {name!r} ({mod.kind}), which needs '
                           f'{" or ".join(wanted)}')
        topic_mod[topic] = name
    if not topic_mod:
        model = ', '.join(f'{n}: {norm_topic(m.topic)} ({m.msg_type})'
                          for n, m in cfg.modalities.items())
        have = ', '.join(f'{t} ({ty})' for t, ty in sorted(topics.items())) or 'no topics'
        raise BagError(f"bag {path} holds none of the model's topics. The model reads {model}; "
                       f'the bag holds {have}. Re-record with these topics or train a model on '
                       f"this bag's topics.")
    return topic_mod


def check_topics(path, cfg: Config) -> dict[str, str]:
    """`match_topics` of a bag file: clear errors before any work is done."""
    return match_topics(path, cfg, bag_topics(path))


def label_topic(topics: dict[str, str]) -> str | None:
    """The bag's label topic: named `.../episode/label` and of type std_msgs/String."""
    return next((t for t, ty in sorted(topics.items())
                 if norm_topic(t).endswith('/' + LABEL_TOPIC) and ty == STRING), None)


def labels_at(stamps, label_t: Sequence[int], label_v: Sequence[str]) -> np.ndarray:
    """The most recent label with stamp <= each sample stamp ('' before the first label)."""
    stamps = np.asarray(stamps, np.int64)
    if not len(label_t):
        return np.full(stamps.shape[0], '', dtype=object).astype(str)
    order = np.argsort(np.asarray(label_t, np.int64), kind='stable')
    times = np.asarray(label_t, np.int64)[order]
    values = np.asarray([str(label_v[i]) for i in order] + [''], dtype=str)
    idx = np.searchsorted(times, stamps, side='right') - 1  # -1: before the first label
    return values[np.where(idx < 0, len(times), idx)]


@dataclass
class Step:
    """One message read, after conversion and pairing; topic None: the end of the bag."""

    topic: str | None
    msg_type: str = ''
    stamp_ns: int = 0  # header stamp (log time for messages without a header)
    msg: Any = None
    is_label: bool = False  # a message of the label topic
    modality: str | None = None  # None: a label, or a topic of no model modality
    frame: Frame | None = None  # None: not a model topic, or not convertible (see result)
    result: PushResult = field(default_factory=PushResult)  # samples ready, drops


class BagSamples:
    """
    Iterate once over a bag's `Step`s (module doc); afterwards `labels`, `bag_error` are known.

    all_topics: read every topic (evaluation accounts for and records each message), not only
    the model's and the label topic. partial: a truncated or corrupt bag is read up to the cut;
    the error is kept in `bag_error` instead of raised, and topics are learnt while reading when
    the bag's summary is unreadable.
    """

    def __init__(self, path, cfg: Config, pairer: Pairer, *, all_topics: bool = False,
                 partial: bool = False, progress: bool = False, desc: str | None = None):
        self.path, self.cfg, self.pairer = path, cfg, pairer
        self.all_topics, self.partial = all_topics, partial
        self.progress, self.desc = progress, desc or Path(path).name
        self.bag_error: str | None = None
        self.label_t: list[int] = []
        self.label_v: list[str] = []
        try:
            self.info = bag_info(path)
        except BagError:
            if not partial:
                raise
            self.info = None  # truncated: topics are learnt while reading
        topics = self.info['topics'] if self.info else {}
        self.topics = match_topics(path, cfg, topics) if self.info else {}
        self.label_topic = label_topic(topics)

    def labels(self, stamps) -> np.ndarray:
        """The label of each sample stamp (`labels_at` over the label messages read)."""
        return labels_at(stamps, self.label_t, self.label_v)

    def __iter__(self) -> Iterator[Step]:
        from tqdm import tqdm
        wanted = None
        total = self.info['message_count'] if self.info else None
        if self.info and not self.all_topics:
            wanted = [*self.topics] + ([self.label_topic] if self.label_topic else [])
            total = sum(self.info['counts'].get(t, 0) for t in wanted)
        bar = tqdm(total=total, desc=self.desc, unit='msg', disable=not self.progress,
                   mininterval=0.5, file=sys.stderr)
        seen: dict[str, str] = {}
        n = 0
        try:
            for topic, mtype, stamp, msg in read_bag(self.path, wanted):
                n += 1
                if n % PROGRESS_EVERY == 0:
                    bar.update(PROGRESS_EVERY)
                if self.info is None and topic not in seen:
                    seen[topic] = mtype
                    self._learn(topic, mtype)
                yield self._step(topic, mtype, stamp, msg)
        except BagError as exc:
            if not self.partial:
                raise
            self.bag_error = str(exc)
        finally:
            bar.update(n % PROGRESS_EVERY)
            bar.close()
        if not self.topics:  # a partly read bag without any model topic: say so
            match_topics(self.path, self.cfg, seen)
        yield Step(None, result=self.pairer.flush())

    def _learn(self, topic: str, mtype: str) -> None:
        """A topic first seen in a truncated bag: a model topic if its type fits, or the labels."""
        try:
            self.topics.update(match_topics(self.path, self.cfg, {topic: mtype}))
        except BagError:
            pass  # another topic, or a type the model cannot read: counted as unused
        self.label_topic = self.label_topic or label_topic({topic: mtype})

    def _step(self, topic: str, mtype: str, stamp: int, msg) -> Step:
        """Convert and pair one message (a label only feeds the label stream)."""
        step = Step(topic, mtype, stamp, msg)
        if topic == self.label_topic:
            step.is_label = True
            self.label_t.append(stamp)
            self.label_v.append(str(msg.data))
            return step
        step.modality = name = self.topics.get(topic)
        if name is None:
            return step
        try:
            step.frame = kinds.frame_from_msg(mtype, msg)
        except (ValueError, AttributeError) as exc:
            step.result = PushResult.refuse(Drop(name, 'type', f'{topic} ({mtype}): {exc}'))
        except InputError as exc:
            step.result = PushResult.refuse(Drop(name, exc.reason, str(exc)))
        else:
            step.result = self.pairer.push(name, step.frame)
        return step
