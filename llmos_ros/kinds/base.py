"""
The interface of a modality kind, and the registry of kinds by name.

A kind is everything the pipeline knows about one sort of sensor stream: the ROS messages it
reads, the model array it becomes (shape, validation, preprocessing, inverse), how the
synchronizer pairs it (the newest frame, or a causal time window), the message its prediction is
published as and how a bag topic becomes a modality config. Training, evaluation and the live
node reach a kind only through `get(name)` / `of(mod)`, so adding a sensor is one module with a
`Kind` subclass and one `register` line in llmos_ros/kinds/__init__.py. Kinds are ROS-free:
message types are names ('sensor_msgs/msg/Image'); the node layer turns them into classes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from llmos_ros.core.frames import Frame
from llmos_ros.errors import ConfigError

if TYPE_CHECKING:
    from llmos_ros.config import ModalityConfig


class Kind:
    """
    One modality kind (subclass it; every method takes the modality's config `mod`).

    Class attributes:
    - `name`: the value of `ModalityConfig.kind`;
    - `message_types`: input ROS types a modality of this kind reads (the node subscribes with
      the modality's `msg_type`, which must be one of them);
    - `prediction_type`: ROS type of `llmos/prediction/<modality>`;
    - `default_window_s`: the causal window a config's `window_s: -1` stands for (0: none);
    - `spans_time`: frames cover [stamp, end) (audio chunks), so a window takes the frames that
      overlap it and a reference frame's sample ends at its end; otherwise a frame is an
      instant, in a window [t - window_s, t) when stamped in it;
    - `reference_rank`: preference as the sample clock when `sync.reference` is not set (the
      lowest-ranked kind present wins: a camera before taxels before audio).
    """

    name: str = ''
    message_types: tuple[str, ...] = ()
    prediction_type: str = ''
    default_window_s: float = 0.0
    spans_time: bool = False
    reference_rank: int = 10

    def windowed(self, mod: ModalityConfig) -> bool:
        """Paired as a causal time window (else: the newest frame at the sample time)."""
        return mod.window_s > 0

    def shape(self, mod: ModalityConfig) -> tuple[int, ...]:
        """Shape of the model array, (channels, height, width)."""
        raise NotImplementedError

    def validate(self, mod: ModalityConfig, frame: Frame) -> None:
        """Cheap checks of one frame before pairing (no decoding): InputError if unusable."""
        raise NotImplementedError

    def preprocess(self, mod: ModalityConfig, window: Sequence[Frame],
                   stamp_ns: int | None) -> np.ndarray:
        """The paired frames (non-empty, oldest first) -> float32 array of `shape`, raw units."""
        raise NotImplementedError

    def inverse(self, mod: ModalityConfig, array: np.ndarray) -> np.ndarray:
        """A model array in raw units (stats undone) -> what `prediction_frame` publishes."""
        return array

    def prediction_frame(self, mod: ModalityConfig, raw: np.ndarray, stamp_ns: int,
                         frame_id: str, iterations: int = 4) -> Frame:
        """
        `inverse`'s output as a frame of `prediction_type`, stamped `stamp_ns`.

        `iterations`: phase-recovery iterations where a kind needs them (audio).
        """
        raise NotImplementedError

    def role(self, topic: str) -> str:
        """The modality name `dataset.infer_modalities` gives a bag topic of this kind."""
        return self.name

    def from_topic(self, msg_type: str, frame: Frame) -> dict:
        """ModalityConfig fields for a topic, from its first frame (InputError if unusable)."""
        return {}


_KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Add a kind to the registry; a second kind of the same name or message type is an error."""
    if not kind.name or kind.name in _KINDS:
        raise ValueError(f'modality kind {kind.name!r} is unnamed or registered twice')
    for t in kind.message_types:
        other = for_message_type(t)
        if other is not None:
            raise ValueError(f'{t} is read by kind {other.name!r} already')
    _KINDS[kind.name] = kind
    return kind


def names() -> tuple[str, ...]:
    """Names of the registered kinds, in registration order."""
    return tuple(_KINDS)


def get(name: str) -> Kind:
    """The kind registered as `name`; ConfigError naming the known kinds otherwise."""
    try:
        return _KINDS[name]
    except KeyError:
        raise ConfigError(f'unknown modality kind {name!r}; known: {names()}') from None


def of(mod: ModalityConfig) -> Kind:
    """The kind of a modality config; ConfigError naming the modality's field otherwise."""
    kind = _KINDS.get(mod.kind)
    if kind is None:
        raise ConfigError(f'modalities.{mod.name}.kind must be one of {names()}, '
                          f'got {mod.kind!r}')
    return kind


def for_message_type(msg_type: str) -> Kind | None:
    """The kind that reads `msg_type` (None: no registered kind does)."""
    return next((k for k in _KINDS.values() if msg_type in k.message_types), None)


def message_types_by_kind() -> dict[str, tuple[str, ...]]:
    """{kind name: message types it reads} of the registered kinds."""
    return {k.name: k.message_types for k in _KINDS.values()}
