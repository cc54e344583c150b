"""
Write a rosbag2 bag of the simulated scene (ROS-free).

    python -m llmos_ros.sim.make_bag --out DIR --duration S --seed N [--storage mcap|sqlite3]

Topics (absolute names of the input contract): /camera/image_raw (sensor_msgs/Image, rgb8),
/microphone/audio (llmos_ros/AudioChunk), /tactile/array (llmos_ros/TactileArray) and
/episode/label (std_msgs/String, 'object/material' from each episode's start). Header stamps
equal log times. The same seed and settings give the same messages.
"""
from __future__ import annotations

import argparse
from pathlib import Path
import sys

from llmos_ros.errors import ConfigError, LlmosError
from llmos_ros.sim.scene import (
    AUDIO_TOPIC,
    CAMERA_TOPIC,
    LABEL_TOPIC,
    TACTILE_TOPIC,
    Scene,
    SceneConfig,
)

# 2023-11-14T22:13:20Z: a fixed, realistic start so the same arguments give the same bag.
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000
STREAMS = {'camera': CAMERA_TOPIC, 'audio': AUDIO_TOPIC, 'tactile': TACTILE_TOPIC}


def write_bag(out, duration_s: float, seed: int = 0, storage: str = 'mcap',
              config: SceneConfig | None = None, start_ns: int = DEFAULT_START_NS,
              without=(), progress: bool = True) -> dict[str, int]:
    """Write `duration_s` seconds of the scene to a new bag at `out`; returns counts per topic."""
    from tqdm import tqdm

    from llmos_ros.core.bags import BagWriter

    if duration_s <= 0:
        raise ConfigError(f'duration must be > 0 s, got {duration_s}')
    unknown = set(without) - set(STREAMS)
    if unknown:
        raise ConfigError(f'unknown streams {sorted(unknown)}; known: {sorted(STREAMS)}')
    topics = [LABEL_TOPIC] + [t for name, t in STREAMS.items() if name not in without]
    scene = Scene(config or SceneConfig(), seed=seed, start_ns=start_ns)
    counts = {'/' + t: 0 for t in topics}
    with BagWriter(Path(out), storage=storage) as writer, \
            tqdm(total=round(duration_s, 3), unit='s', desc=f'sim bag {Path(out).name}',
                 disable=not progress, file=sys.stderr) as bar:
        shown = 0.0
        for stamp, topic, item in scene.events(duration_s, topics):
            name = '/' + topic
            if topic == LABEL_TOPIC:
                writer.write_label(name, stamp, item)
            else:
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
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    try:
        if Path(args.out).exists():
            raise ConfigError(f'{args.out} exists; choose a new --out folder')
        config = SceneConfig.from_dict(_parse_set(args.set))
        counts = write_bag(args.out, args.duration, args.seed, args.storage, config,
                           args.start_ns, args.without, progress=not args.quiet)
    except LlmosError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    summary = ', '.join(f'{topic}: {n}' for topic, n in counts.items())
    print(f'wrote {args.out} ({args.storage}, {args.duration:g} s, seed {args.seed}): {summary}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
