"""
Write a rosbag2 bag of the simulated scene (ROS-free).

    python -m llmos_ros.sim.make_bag --out DIR --duration S --seed N [--storage mcap|sqlite3]

Topics (absolute names of the input contract): /camera/image_raw (sensor_msgs/Image, rgb8),
/microphone/audio (llmos_ros/AudioChunk), /tactile/array (llmos_ros/TactileArray) and
/episode/label (std_msgs/String, 'object/material' from each episode's start). Header stamps
equal log times. The same seed and settings give the same messages.

Injected events (`--event KIND:MODALITY:START_S:DURATION_S`, repeatable; `Event`) change one
stream for a while, for tests of belief and surprise:
  swap     the modality shows another scene's frames, at its own stamps: per episode the first
           of the scenes of seed + k * SWAP_SEED_OFFSET (k = 1, 2, ...) whose episode there has
           another label, so the swapped stream always shows another object or material (a
           source episode of the same label, one in 12, is the same scene to every sensor but
           for the touches: not a mismatch a detector could be asked to see)
  freeze   the modality repeats its last frame before START_S, restamped
  silence  the modality publishes nothing
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
import sys

from llmos_ros.errors import ConfigError, LlmosError
from llmos_ros.sim.scene import LABEL_TOPIC, STREAMS, Scene, SceneConfig

# 2023-11-14T22:13:20Z: a fixed, realistic start so the same arguments give the same bag.
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000
EVENT_KINDS = ('swap', 'freeze', 'silence')
SWAP_SEED_OFFSET = 7919  # the swap source scenes' seeds: seed + k * this, k = 1, 2, ...
SWAP_SOURCES = 32  # source scenes tried per episode (all 32 sharing the label: about 1e-35)


@dataclass(frozen=True)
class Event:
    """An injected event: `kind` on stream `modality` for [start_s, start_s + duration_s)."""

    kind: str
    modality: str
    start_s: float
    duration_s: float

    def __post_init__(self):
        if self.kind not in EVENT_KINDS:
            raise ConfigError(f'event kind must be one of {EVENT_KINDS}, got {self.kind!r}')
        if self.modality not in STREAMS:
            raise ConfigError(f'event modality must be one of {sorted(STREAMS)}, '
                              f'got {self.modality!r}')
        if not (self.start_s >= 0 and self.duration_s > 0):
            raise ConfigError(f'event {self.kind}:{self.modality}: start must be >= 0 and '
                              f'duration > 0 s, got {self.start_s}, {self.duration_s}')

    @classmethod
    def parse(cls, text: str) -> Event:
        """From 'KIND:MODALITY:START_S:DURATION_S', e.g. 'swap:tactile:3:1.5'."""
        parts = text.split(':')
        try:
            kind, modality, start, duration = parts
            return cls(kind, modality, float(start), float(duration))
        except ValueError:
            raise ConfigError(f'--event expects KIND:MODALITY:START_S:DURATION_S, got '
                              f'{text!r}') from None

    def covers(self, topic: str, t_s: float) -> bool:
        return STREAMS[self.modality] == topic and self.start_s <= t_s < self.start_s + \
            self.duration_s


class _Injector:
    """Applies `Event`s to the scene's frames (module doc)."""

    def __init__(self, scene: Scene, events, seed: int, start_ns: int):
        self.scene, self.events = scene, list(events)
        self.seed, self.start_ns = seed, start_ns
        self.sources: list[Scene] = []  # swap sources, seed + k * SWAP_SEED_OFFSET, made lazily
        self.last: dict[str, object] = {}  # topic -> newest frame outside a freeze

    def source(self, t: float) -> Scene:
        """The swap source at scene time t: the first whose episode there has another label."""
        episode = self.scene.episode_index(t)
        label = self.scene.label(episode)
        for k in range(SWAP_SOURCES):
            if k == len(self.sources):
                self.sources.append(Scene(self.scene.config, seed=self.seed + (k + 1)
                                          * SWAP_SEED_OFFSET, start_ns=self.start_ns))
            if self.sources[k].label(episode) != label:
                return self.sources[k]
        raise LlmosError(f'no swap source with a label other than {label!r} in '
                         f'{SWAP_SOURCES} scenes (episode {episode})')

    def frame(self, stamp: int, topic: str, index: int):
        """The frame to write for (stamp, topic, index), or None to write nothing."""
        t = (stamp - self.scene.start_ns) * 1e-9
        event = next((e for e in self.events if e.covers(topic, t)), None)
        if event is None:
            item = self.scene.render(topic, index)
            self.last[topic] = item
            return item
        if event.kind == 'silence':
            return None
        if event.kind == 'swap':
            return replace(self.source(t).render(topic, index), stamp_ns=stamp)
        frozen = self.last.get(topic)  # freeze
        if frozen is None:
            frozen = self.last[topic] = self.scene.render(topic, index)
        return replace(frozen, stamp_ns=stamp)


def write_bag(out, duration_s: float, seed: int = 0, storage: str = 'mcap',
              config: SceneConfig | None = None, start_ns: int = DEFAULT_START_NS,
              without=(), progress: bool = True, events=()) -> dict[str, int]:
    """
    Write `duration_s` seconds of the scene to a new bag at `out`; returns counts per topic.

    `events`: `Event`s injected into the streams (module doc).
    """
    from tqdm import tqdm

    from llmos_ros.core.bags import BagWriter

    if duration_s <= 0:
        raise ConfigError(f'duration must be > 0 s, got {duration_s}')
    unknown = set(without) - set(STREAMS)
    if unknown:
        raise ConfigError(f'unknown streams {sorted(unknown)}; known: {sorted(STREAMS)}')
    topics = [LABEL_TOPIC] + [t for name, t in STREAMS.items() if name not in without]
    scene = Scene(config or SceneConfig(), seed=seed, start_ns=start_ns)
    inject = _Injector(scene, events, seed, start_ns)
    counts = {'/' + t: 0 for t in topics}
    with BagWriter(Path(out), storage=storage) as writer, \
            tqdm(total=round(duration_s, 3), unit='s', desc=f'sim bag {Path(out).name}',
                 disable=not progress, file=sys.stderr) as bar:
        shown = 0.0
        for stamp, topic, index in scene.schedule(duration_s, topics):
            name = '/' + topic
            if topic == LABEL_TOPIC:
                writer.write_label(name, stamp, scene.render(topic, index))
            else:
                item = inject.frame(stamp, topic, index)
                if item is None:
                    continue
                writer.write_frame(name, item)
            counts[name] += 1
            t = round((stamp - start_ns) * 1e-9, 3)
            if t - shown >= 1.0:
                bar.update(t - shown)
                shown = t
        bar.update(round(duration_s, 3) - shown)
    return counts


def _parse_set(items) -> dict:
    values = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep:
            raise ConfigError(f'--set expects KEY=VALUE, got {item!r}')
        values[key.strip()] = value.strip()
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m llmos_ros.sim.make_bag',
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument('--out', required=True, help='bag folder to create (must not exist)')
    parser.add_argument('--duration', type=float, required=True, help='seconds of scene time')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    parser.add_argument('--start-ns', type=int, default=DEFAULT_START_NS,
                        help='stamp of scene time 0 (default: a fixed date)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='scene setting, e.g. --set image_width=64 --set channels=3 '
                             '(fields of llmos_ros.sim.scene.SceneConfig)')
    parser.add_argument('--without', action='append', default=[], choices=sorted(STREAMS),
                        help='leave a stream out of the bag (repeatable)')
    parser.add_argument('--event', action='append', default=[],
                        metavar='KIND:MODALITY:START_S:DURATION_S',
                        help=f'inject an event, KIND one of {", ".join(EVENT_KINDS)} '
                             '(repeatable), e.g. --event swap:tactile:3:1.5')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    try:
        if Path(args.out).exists():
            raise ConfigError(f'{args.out} exists; choose a new --out folder')
        config = SceneConfig.from_dict(_parse_set(args.set))
        events = [Event.parse(e) for e in args.event]
        counts = write_bag(args.out, args.duration, args.seed, args.storage, config,
                           args.start_ns, args.without, progress=not args.quiet, events=events)
    except LlmosError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    summary = ', '.join(f'{topic}: {n}' for topic, n in counts.items())
    print(f'wrote {args.out} ({args.storage}, {args.duration:g} s, seed {args.seed}): {summary}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
