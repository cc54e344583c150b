"""
The interface of a modality kind, and the registry of kinds by name.

A kind is everything the pipeline knows about one sort of sensor stream: the ROS messages it
reads and the frame records they become (both directions, `frame_from_msg` / `frame_message`),
the model array a window of records becomes (shape, validation, preprocessing, inverse), how the
synchronizer pairs it (the newest frame, or a causal time window), the message its prediction is
published as, how a bag topic becomes a modality config and how it is drawn (`picture`,
`frames_picture`). Training, evaluation and the live node reach a kind only through
`get(name)` / `of(mod)` and the message dispatch below, so adding a sensor is one module with
its records and a `Kind` subclass and one `register` line in llmos_ros/kinds/__init__.py.
Kinds are ROS-free: message types are names ('sensor_msgs/msg/Image'); the node layer turns
them into classes, and messages are built through a `core.messages.Flavour`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from llmos_ros.core.frames import Frame
from llmos_ros.errors import ConfigError

if TYPE_CHECKING:
    from llmos_ros.config import ModalityConfig
    from llmos_ros.core.messages import Flavour


class Kind:
    """
    One modality kind (subclass it; every method takes the modality's config `mod`).

    Class attributes:
    - `name`: the value of `ModalityConfig.kind`;
    - `message_types`: input ROS types a modality of this kind reads (the node subscribes with
      the modality's `msg_type`, which must be one of them);
    - `frame_types`: the `Frame` record classes of those messages (defined in the kind's module);
    - `prediction_type`: ROS type of `llmos/prediction/<modality>`;
    - `default_window_s`: the causal window a config's `window_s: -1` stands for (0: none);
    - `spans_time`: frames cover [stamp, end) (audio chunks), so a window takes the frames that
      overlap it and a reference frame's sample ends at its end; otherwise a frame is an
      instant, in a window [t - window_s, t) when stamped in it;
    - `reference_rank`: preference as the sample clock when `sync.reference` is not set (the
      lowest-ranked kind present wins: a camera before taxels before audio);
    - `time_frequency`: pictures have frequency upwards and time to the right (spectrograms);
    - `picture_span_s`: seconds of input frames the debug picture draws (0: the newest frame);
    - `likelihoods`: the decoder likelihoods a modality of this kind may use
      (`ModalityConfig.likelihood`; `llmos_ros.models.objectives.modality_log_prob`), the first
      its default: 'gaussian' (around the decoded array), 'time_shift' (around the decoded
      window circularly shifted along its last, time, axis, the shift unknown and marginalised:
      for windows of a stream in which an event can fall anywhere) or 'space_shift' (around
      the decoded image shifted by a few pixels, marginalised alike); `shift_reach` says how
      far a shift likelihood reaches.
    """

    name: str = ''
    message_types: tuple[str, ...] = ()
    frame_types: tuple[type, ...] = ()
    prediction_type: str = ''
    default_window_s: float = 0.0
    spans_time: bool = False
    reference_rank: int = 10
    time_frequency: bool = False
    picture_span_s: float = 0.0
    likelihoods: tuple[str, ...] = ('gaussian',)

    def frame_from_msg(self, msg_type: str, msg: Any) -> Frame:
        """
        An rclpy or rosbags message of one of `message_types` -> its frame record.

        Fields are read by name (both flavours have the same); InputError('too_large') before
        copying a message beyond the kind's size limits.
        """
        raise NotImplementedError

    def frame_message(self, frame: Frame, flavour: Flavour) -> tuple[str, Any]:
        """A record of one of `frame_types` -> (type name, message) in `flavour`."""
        raise NotImplementedError

    def windowed(self, mod: ModalityConfig) -> bool:
        """Paired as a causal time window (else: the newest frame at the sample time)."""
        return mod.window_s > 0

    def shift_reach(self, mod: ModalityConfig) -> tuple[int | None, ...] | None:
        """
        How far the modality's shift likelihood reaches, or None for the plain 'gaussian'.

        Per trailing axis of the array, the largest shift either way (None: every circular
        shift of that axis).
        """
        return None

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

    def augment(self, mod: ModalityConfig, batch: np.ndarray, rng: np.random.Generator,
                shift: float) -> np.ndarray:
        """
        A training batch [B, *shape] (normalised) with random label-preserving changes.

        Used by `llmos-train` only (`train.augment_shift`; never in evaluation or the node);
        the changed array is both the encoder's input and the reconstruction target. The
        default: unchanged (a taxel pad's or a spectrogram's positions mean something).
        """
        return batch

    def picture(self, array: np.ndarray) -> np.ndarray:
        """
        A model array (of `shape`) as a picture: 2-D (rows, columns) or RGB (rows, columns, 3).

        Values keep the array's units; the caller scales them. The default is the channel mean.
        """
        return np.asarray(array, np.float64).mean(axis=0)

    def frames_picture(self, frames: Sequence[Frame]) -> np.ndarray:
        """
        The newest input frames (oldest first; see `picture_span_s`) as a picture.

        uint8 RGB (rows, columns, 3) is shown as it is; a 2-D float array is coloured by the
        caller (a heat map, or a spectrogram in dB when `time_frequency`). The default: no
        picture, an empty array.
        """
        return np.zeros((0, 0))

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
    for record in kind.frame_types:
        other = _for_record(record)
        if other is not None:
            raise ValueError(f'{record.__name__} is a record of kind {other.name!r} already')
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


def _for_record(record: type) -> Kind | None:
    """The kind whose `frame_types` holds the record class (None: none)."""
    return next((k for k in _KINDS.values() if record in k.frame_types), None)


def frame_from_msg(msg_type: str, msg: Any) -> Frame:
    """
    An rclpy or rosbags message of a type some kind reads -> its frame record.

    InputError('too_large') before copying an oversized message; ValueError for a type no
    registered kind reads.
    """
    kind = for_message_type(msg_type)
    if kind is None:
        raise ValueError(f'not a sensor input type of a modality kind: {msg_type}')
    return kind.frame_from_msg(msg_type, msg)


def frame_message(frame: Frame, flavour: Flavour) -> tuple[str, Any]:
    """A frame record as (type name, message) in `flavour`; TypeError for other objects."""
    kind = _for_record(type(frame))
    if kind is None:
        raise TypeError(f'not a frame record: {type(frame).__name__}')
    return kind.frame_message(frame, flavour)
