"""
A deterministic simulated scene that drives a camera, a contact microphone and a taxel array.

The hidden state is a sequence of episodes of `episode_s` seconds. Each episode has an object
class (OBJECTS) and a material (MATERIALS), published as the label 'object/material', and a few
touches: a fingertip presses the object at a contact position (x, y in object coordinates,
[-1, 1]^2), with a force that ramps up and down smoothly; some touches are taps, others slide.
With `touches` off the fingertip hovers still over the object's centre: a steady scene (only the
sensor noise changes within an episode), to measure how still a state estimate holds.

- Camera (rgb8): the object's shape in the material's colour and texture (shading depends on
  the shape), with the fingertip marker at the contact position whose size and brightness grow
  with the force (small and dim while hovering between touches); light noise.
- Audio (mono float32): modal synthesis. Each touch onset, each small stick-slip impact while
  sliding and each release excites damped resonances whose frequencies and decay depend on the
  material (and a little on the object), with an amplitude proportional to the force; sliding
  adds friction noise; a low background noise throughout.
- Taxels (rows x cols x channels over the object's surface): a pressure blob at the contact
  position with amplitude = force, whose footprint depends on the object's curvature and the
  material's hardness, zero off the object; channels 1 and 2 (when present) carry shear along
  the sliding direction.

Every frame is computed on its own from (seed, stream, index), so any subset of streams can be
rendered in any order and the result is the same bytes (`schedule` + `render`). Stamps: camera
and taxels at their nominal rate plus a one-sided arrival jitter of at most `*_jitter_s`; audio
chunks exactly contiguous by sample count. ROS-free.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import heapq
import math
from typing import Iterator

import numpy as np

from llmos_ros.core.frames import LABEL_TOPIC
from llmos_ros.errors import ConfigError
from llmos_ros.kinds.audio import AudioFrame
from llmos_ros.kinds.image import ImageFrame
from llmos_ros.kinds.taxels import TactileFrame

OBJECTS = ('cube', 'sphere', 'cylinder', 'cone')
MATERIALS = ('metal', 'wood', 'rubber')
LABELS = tuple(f'{o}/{m}' for o in OBJECTS for m in MATERIALS)

# Relative topic names of the input contract, in tie-break order (a label precedes frames
# stamped at the same instant).
CAMERA_TOPIC = 'camera/image_raw'
AUDIO_TOPIC = 'microphone/audio'
TACTILE_TOPIC = 'tactile/array'
STREAMS = {'camera': CAMERA_TOPIC, 'audio': AUDIO_TOPIC, 'tactile': TACTILE_TOPIC}  # sensors
TOPICS = (LABEL_TOPIC, *STREAMS.values())
_STREAM = {t: i for i, t in enumerate(TOPICS)}

# Material properties: base colour (rgb), modal frequencies (Hz), mode gains, decay (s),
# hardness (smaller footprint when harder), friction-noise gain.
_MATERIAL = {
    'metal': dict(colour=(165.0, 175.0, 190.0), freqs=(2150.0, 3620.0, 5310.0),
                  gains=(0.5, 0.3, 0.2), decay=0.12, hardness=1.0, friction=0.15),
    'wood': dict(colour=(160.0, 105.0, 55.0), freqs=(620.0, 1130.0, 1870.0),
                 gains=(0.55, 0.3, 0.15), decay=0.03, hardness=0.75, friction=0.3),
    'rubber': dict(colour=(55.0, 45.0, 50.0), freqs=(190.0, 360.0, 610.0),
                   gains=(0.7, 0.2, 0.1), decay=0.01, hardness=0.45, friction=0.5),
}
# Object properties: frequency scale, taxel footprint (sigma_x, sigma_y at hardness 1, object
# units), footprint exponent (2: gaussian, 4: flat-topped for a flat face).
_OBJECT = {
    'cube': dict(fscale=1.0, sigma=(0.25, 0.25), power=4.0),
    'sphere': dict(fscale=1.18, sigma=(0.16, 0.16), power=2.0),
    'cylinder': dict(fscale=0.88, sigma=(0.13, 0.32), power=2.0),
    'cone': dict(fscale=1.35, sigma=(0.12, 0.17), power=2.0),
}
_BACKGROUND = np.array((70.0, 90.0, 75.0), np.float32)
_FINGER = np.array((240.0, 200.0, 170.0), np.float32)
_VIEW = 1.25  # the image spans object coordinates [-_VIEW, _VIEW]
_REACH = 0.7  # contact positions are drawn inside the shape scaled by this


@dataclass
class SceneConfig:
    """Rates, sizes, episode length, noise and jitter of the simulated sensors."""

    camera_rate_hz: float = 30.0
    tactile_rate_hz: float = 100.0
    sample_rate: int = 16000
    chunk_s: float = 0.02  # audio chunk length; rounded to whole samples
    image_height: int = 32
    image_width: int = 32
    rows: int = 8
    cols: int = 8
    channels: int = 1  # per taxel: 1 pressure; 3 pressure + shear x, y
    episode_s: float = 4.0
    touches: bool = True  # False: no touches, the fingertip hovers still (a steady scene)
    camera_jitter_s: float = 0.004  # stamps lag the nominal time by [0, jitter)
    tactile_jitter_s: float = 0.002
    image_noise: float = 3.0  # std of the pixel noise, in 0..255 levels
    audio_noise: float = 0.002  # std of the background noise
    tactile_noise: float = 0.005  # std of the taxel noise, in force units
    camera_frame_id: str = 'sim_camera'
    microphone_frame_id: str = 'sim_microphone'
    tactile_frame_id: str = 'sim_tactile'

    def __post_init__(self):
        self.validate()

    @property
    def chunk_samples(self) -> int:
        return max(1, int(round(self.chunk_s * self.sample_rate)))

    def validate(self) -> None:
        def positive(name):
            if not getattr(self, name) > 0:
                raise ConfigError(f'sim scene: {name} must be > 0, got {getattr(self, name)!r}')
        for name in ('camera_rate_hz', 'tactile_rate_hz', 'sample_rate', 'chunk_s',
                     'image_height', 'image_width', 'rows', 'cols', 'channels', 'episode_s'):
            positive(name)
        for name, rate in (('camera_jitter_s', self.camera_rate_hz),
                           ('tactile_jitter_s', self.tactile_rate_hz)):
            jitter = getattr(self, name)
            if not 0 <= jitter < 1.0 / rate:
                raise ConfigError(f'sim scene: {name} must be in [0, 1/rate) = [0, {1 / rate:g})'
                                  f' so stamps stay in order, got {jitter!r}')
        if self.episode_s < 1.0:
            raise ConfigError(f'sim scene: episode_s must be >= 1 s, got {self.episode_s!r}')
        for name in ('image_noise', 'audio_noise', 'tactile_noise'):
            if getattr(self, name) < 0:
                raise ConfigError(f'sim scene: {name} must be >= 0')

    @classmethod
    def from_dict(cls, values: dict) -> SceneConfig:
        """Build from a mapping of field names (unknown keys are an error), cast to field types."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ConfigError(f'sim scene: unknown settings {unknown}; known: {sorted(names)}')
        kwargs = {}
        for key, value in values.items():
            kind = type(getattr(cls, key)) if hasattr(cls, key) else str
            if kind is bool:
                text = str(value).strip().lower()
                if text not in ('true', 'false', '1', '0'):
                    raise ConfigError(f'sim scene: {key}={value!r} is not a bool (true or false)')
                kwargs[key] = text in ('true', '1')
                continue
            try:
                kwargs[key] = kind(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f'sim scene: {key}={value!r} is not a {kind.__name__}') from exc
        return cls(**kwargs)


@dataclass(frozen=True)
class Touch:
    t_on: float  # scene seconds
    t_off: float
    p0: tuple[float, float]  # contact position at t_on and at t_off (object coordinates)
    p1: tuple[float, float]
    force: float  # peak force, ~0.3..1


@dataclass(frozen=True)
class SceneState:
    """The hidden state at one instant."""

    t: float
    episode: int
    obj: str
    material: str
    touching: bool
    force: float
    x: float
    y: float
    vx: float
    vy: float

    @property
    def label(self) -> str:
        return f'{self.obj}/{self.material}'

    @property
    def speed(self) -> float:
        return math.hypot(self.vx, self.vy)


class _Episode:
    """One episode's hidden plan: object, material, touches and the sound impulses they cause."""

    def __init__(self, seed: int, index: int, length: float, touches: bool = True):
        rng = np.random.default_rng([seed, 0, index])
        self.index = index
        self.t0 = index * length
        self.t1 = self.t0 + length
        self.obj = OBJECTS[int(rng.integers(len(OBJECTS)))]
        self.material = MATERIALS[int(rng.integers(len(MATERIALS)))]
        self.touches: list[Touch] = []
        t = self.t0 + rng.uniform(0.15, 0.5)
        while touches and t < self.t1 - 0.45:
            tap = rng.random() < 0.35
            dur = rng.uniform(0.12, 0.3) if tap else rng.uniform(0.4, 1.3)
            dur = min(dur, self.t1 - 0.1 - t)
            p0 = self._position(rng)
            p1 = p0 if tap or rng.random() < 0.25 else self._position(rng)
            self.touches.append(Touch(t, t + dur, p0, p1, float(rng.uniform(0.3, 1.0))))
            t += dur + rng.uniform(0.15, 0.6)
        # Sound impulses: onset (strong), stick-slip while sliding (weak, rate ~ speed), release.
        times, amps = [], []
        for touch in self.touches:
            times.append(touch.t_on)
            amps.append(touch.force * rng.uniform(0.8, 1.0))
            dist = math.dist(touch.p0, touch.p1)
            if dist > 0:
                peak_speed = 1.875 * dist / (touch.t_off - touch.t_on)  # smoothstep peak
                n = rng.poisson(220.0 * (touch.t_off - touch.t_on))
                cand = np.sort(rng.uniform(touch.t_on, touch.t_off, n))
                keep = rng.random(n) * peak_speed < np.array([self._speed(touch, c)
                                                               for c in cand])
                for c in cand[keep]:
                    times.append(float(c))
                    amps.append(0.12 * self._force(touch, c) * rng.uniform(0.5, 1.0))
            times.append(touch.t_off - 0.02)
            amps.append(0.25 * touch.force)
        order = np.argsort(times, kind='stable')
        self.imp_t = np.asarray(times, np.float64)[order]
        self.imp_a = np.asarray(amps, np.float64)[order]

    def _position(self, rng) -> tuple[float, float]:
        while True:
            x, y = rng.uniform(-1.0, 1.0, 2)
            if _inside(self.obj, x / _REACH, y / _REACH):
                return float(x), float(y)

    @staticmethod
    def _force(touch: Touch, t: float) -> float:
        ramp = min(0.06, 0.3 * (touch.t_off - touch.t_on))
        env = _smoothstep((t - touch.t_on) / ramp) * _smoothstep((touch.t_off - t) / ramp)
        return touch.force * env * (1.0 + 0.08 * math.sin(2 * math.pi * 1.7 * t))

    @staticmethod
    def _speed(touch: Touch, t: float) -> float:
        u = (t - touch.t_on) / (touch.t_off - touch.t_on)
        if not 0.0 <= u <= 1.0:
            return 0.0
        return 6 * u * (1 - u) * math.dist(touch.p0, touch.p1) / (touch.t_off - touch.t_on)

    def state(self, t: float) -> SceneState:
        prev = None
        for touch in self.touches:
            if t < touch.t_on:
                # Hovering towards the next touch (from the last one's end, or waiting there).
                if prev is None:
                    return self._make(t, False, 0.0, touch.p0, (0.0, 0.0))
                u = (t - prev.t_off) / (touch.t_on - prev.t_off)
                return self._make(t, False, 0.0, _lerp(prev.p1, touch.p0, _smoothstep(u)),
                                  (0.0, 0.0))
            if t < touch.t_off:
                span = touch.t_off - touch.t_on
                u = (t - touch.t_on) / span
                pos = _lerp(touch.p0, touch.p1, _smoothstep(u))
                k = 6 * u * (1 - u) / span
                vel = ((touch.p1[0] - touch.p0[0]) * k, (touch.p1[1] - touch.p0[1]) * k)
                return self._make(t, True, self._force(touch, t), pos, vel)
            prev = touch
        end = prev.p1 if prev is not None else (0.0, 0.0)
        return self._make(t, False, 0.0, end, (0.0, 0.0))

    def _make(self, t, touching, force, pos, vel) -> SceneState:
        return SceneState(float(t), self.index, self.obj, self.material, bool(touching),
                          float(force), float(pos[0]), float(pos[1]), float(vel[0]),
                          float(vel[1]))


def _smoothstep(u: float) -> float:
    u = min(max(u, 0.0), 1.0)
    return u * u * (3 - 2 * u)


def _lerp(a, b, u):
    return (a[0] + (b[0] - a[0]) * u, a[1] + (b[1] - a[1]) * u)


def _inside(obj: str, u, v):
    """Shape masks in object coordinates (v grows downwards, as image rows do)."""
    if obj == 'cube':
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if obj == 'sphere':
        return u * u + v * v <= 0.85 * 0.85
    if obj == 'cylinder':
        return (np.abs(u) <= 0.5) & (np.abs(v) <= 0.9)
    if obj == 'cone':  # apex up
        return (v >= -0.85) & (v <= 0.85) & (np.abs(u) <= 0.45 * (v + 0.85))
    raise ValueError(obj)


class Scene:
    """
    The seeded scene. Times `t` are scene seconds from 0; stamps are `start_ns` + t.

    `events(duration_s)` yields `(stamp_ns, topic, frame_or_label)` in stamp order, topics being
    the contract's relative names (TOPICS). `schedule` + `render` is the same split in two, so a
    live source can skip rendering streams that are switched off.
    """

    def __init__(self, config: SceneConfig | None = None, seed: int = 0, start_ns: int = 0):
        self.config = config or SceneConfig()
        self.config.validate()
        self.seed = int(seed)
        self.start_ns = int(start_ns)
        self._episodes: dict[int, _Episode] = {}
        self._images: dict[int, np.ndarray] = {}
        c = self.config
        # Pixel centres in object coordinates, taxel centres in object coordinates.
        self._px = ((np.arange(c.image_width) + 0.5) / c.image_width * 2 - 1) * _VIEW
        self._py = ((np.arange(c.image_height) + 0.5) / c.image_height * 2 - 1) * _VIEW
        self._tx = (np.arange(c.cols) + 0.5) / c.cols * 2 - 1
        self._ty = (np.arange(c.rows) + 0.5) / c.rows * 2 - 1
        self._n_chunk = c.chunk_samples
        self._window = 5.0 * max(m['decay'] for m in _MATERIAL.values())

    # -- hidden state ------------------------------------------------------------------------

    def episode(self, index: int) -> _Episode:
        ep = self._episodes.get(index)
        if ep is None:
            if len(self._episodes) > 8:
                self._episodes.pop(next(iter(self._episodes)))
            ep = self._episodes[index] = _Episode(self.seed, index, self.config.episode_s,
                                                  self.config.touches)
        return ep

    def episode_index(self, t: float) -> int:
        return max(0, int(math.floor(t / self.config.episode_s)))

    def state_at(self, t: float) -> SceneState:
        """The hidden state at scene time t (seconds)."""
        return self.episode(self.episode_index(t)).state(t)

    def label(self, index: int) -> str:
        ep = self.episode(index)
        return f'{ep.obj}/{ep.material}'

    # -- stamps ------------------------------------------------------------------------------

    def _jitter(self, stream: int, index: int, jitter_s: float) -> float:
        if jitter_s <= 0:
            return 0.0
        return float(np.random.default_rng([self.seed, stream, index, 7]).random()) * jitter_s

    def stamp_ns(self, topic: str, index: int) -> int:
        """Stamp of the index-th message of a topic."""
        c = self.config
        if topic == CAMERA_TOPIC:
            t = index / c.camera_rate_hz + self._jitter(1, index, c.camera_jitter_s)
        elif topic == TACTILE_TOPIC:
            t = index / c.tactile_rate_hz + self._jitter(3, index, c.tactile_jitter_s)
        elif topic == AUDIO_TOPIC:
            return self.start_ns + (index * self._n_chunk * 1_000_000_000) // c.sample_rate
        elif topic == LABEL_TOPIC:
            t = index * c.episode_s
        else:
            raise ValueError(f'unknown topic {topic!r}')
        return self.start_ns + int(round(t * 1e9))

    def available_ns(self, topic: str, index: int) -> int:
        """When a live sensor would hand the message over: audio after its last sample."""
        if topic == AUDIO_TOPIC:
            return self.stamp_ns(topic, index + 1)
        return self.stamp_ns(topic, index)

    def schedule(self, duration_s: float | None = None, topics=TOPICS,
                 by_arrival: bool = False) -> Iterator[tuple[int, str, int]]:
        """
        (stamp_ns, topic, index) of every message stamped before duration_s (None: forever).

        In stamp order, or with `by_arrival` in `available_ns` order (what a live source
        publishes when); ties go to the label, then in TOPICS order.
        """
        key = self.available_ns if by_arrival else self.stamp_ns
        end = None if duration_s is None else self.start_ns + int(round(duration_s * 1e9))
        heap = [(key(topic, 0), _STREAM[topic], 0) for topic in topics]
        heapq.heapify(heap)
        while heap:
            _, stream, index = heap[0]
            topic = TOPICS[stream]
            stamp = self.stamp_ns(topic, index)
            if end is not None and stamp >= end:
                heapq.heappop(heap)
                continue
            yield stamp, topic, index
            heapq.heapreplace(heap, (key(topic, index + 1), stream, index + 1))

    def render(self, topic: str, index: int):
        """The index-th message of a topic: a frame record, or the label text."""
        if topic == CAMERA_TOPIC:
            return self.camera_frame(index)
        if topic == AUDIO_TOPIC:
            return self.audio_chunk(index)
        if topic == TACTILE_TOPIC:
            return self.tactile_frame(index)
        if topic == LABEL_TOPIC:
            return self.label(index)
        raise ValueError(f'unknown topic {topic!r}')

    def events(self, duration_s: float | None = None, topics=TOPICS):
        """(stamp_ns, topic, frame or label text) in stamp order; a label precedes ties."""
        for stamp, topic, index in self.schedule(duration_s, topics):
            yield stamp, topic, self.render(topic, index)

    def _t(self, stamp_ns: int) -> float:
        return (stamp_ns - self.start_ns) * 1e-9

    # -- camera ------------------------------------------------------------------------------

    def _base_image(self, index: int) -> np.ndarray:
        img = self._images.get(index)
        if img is not None:
            return img
        if len(self._images) > 4:
            self._images.pop(next(iter(self._images)))
        ep = self.episode(index)
        mat = _MATERIAL[ep.material]
        u, v = np.meshgrid(self._px, self._py)
        mask = _inside(ep.obj, u, v).astype(np.float32)
        # Shading by shape: a sphere is lit radially, a cylinder and a cone across, a cube flat.
        if ep.obj == 'sphere':
            shade = 1.15 - 0.5 * np.sqrt((u + 0.3) ** 2 + (v + 0.3) ** 2)
        elif ep.obj in ('cylinder', 'cone'):
            shade = 1.1 - 0.5 * np.abs(u + 0.15) ** 1.5 * (2.0 if ep.obj == 'cylinder' else 1.0)
        else:
            shade = np.full_like(u, 1.0) - 0.1 * (v > 0)
        # Texture by material: metal has a specular streak, wood has grain, rubber is speckled.
        tex_rng = np.random.default_rng([self.seed, 5, index])
        if ep.material == 'metal':
            tex = 1.0 + 0.35 * np.exp(-((u - v * 0.3 + 0.25) / 0.12) ** 2)
        elif ep.material == 'wood':
            phase = tex_rng.uniform(0, 2 * np.pi)
            tex = 1.0 + 0.18 * np.sin(v * 14.0 + 1.5 * np.sin(u * 3.0) + phase)
        else:
            tex = 1.0 + 0.12 * tex_rng.standard_normal(u.shape)
        colour = np.asarray(mat['colour'], np.float32)
        obj = (shade * tex)[..., None].astype(np.float32) * colour
        img = mask[..., None] * obj + (1 - mask[..., None]) * _BACKGROUND
        self._images[index] = img.astype(np.float32)
        return self._images[index]

    def camera_frame(self, index: int) -> ImageFrame:
        c = self.config
        stamp = self.stamp_ns(CAMERA_TOPIC, index)
        state = self.state_at(self._t(stamp))
        img = self._base_image(state.episode).copy()
        # Fingertip marker: radius and brightness grow with the force; a dim dot while hovering.
        radius = 0.09 + 0.14 * state.force if state.touching else 0.07
        bright = 0.65 + 0.35 * min(state.force, 1.0) if state.touching else 0.45
        dx = (self._px - state.x)[None, :]
        dy = (self._py - state.y)[:, None]
        pix = 2 * _VIEW / max(c.image_width, c.image_height)
        alpha = np.clip((radius - np.sqrt(dx * dx + dy * dy)) / pix + 0.5, 0.0, 1.0)
        alpha = alpha[..., None].astype(np.float32)
        img = img * (1 - alpha) + alpha * (_FINGER * bright)
        if c.image_noise > 0:
            rng = np.random.default_rng([self.seed, 1, index])
            img += rng.standard_normal(img.shape, dtype=np.float32) * c.image_noise
        data = np.clip(img + 0.5, 0, 255).astype(np.uint8).ravel()
        return ImageFrame(stamp, 'rgb8', c.image_height, c.image_width, c.image_width * 3, False,
                          data, c.camera_frame_id)

    # -- audio -------------------------------------------------------------------------------

    def audio_chunk(self, index: int) -> AudioFrame:
        c = self.config
        n = self._n_chunk
        s0 = index * n
        stamp = self.stamp_ns(AUDIO_TOPIC, index)
        t = (s0 + np.arange(n)) / c.sample_rate  # scene seconds of each sample
        t_start, t_end = float(t[0]), float(t[-1])
        out = np.zeros(n, np.float64)
        k0 = self.episode_index(t_start - self._window)
        k1 = self.episode_index(t_end)
        rng = np.random.default_rng([self.seed, 2, index])
        for k in range(k0, k1 + 1):
            ep = self.episode(k)
            mat, obj = _MATERIAL[ep.material], _OBJECT[ep.obj]
            window = 5.0 * mat['decay']
            lo = np.searchsorted(ep.imp_t, t_start - window, 'left')
            hi = np.searchsorted(ep.imp_t, t_end, 'right')
            if hi > lo:
                dt = t[None, :] - ep.imp_t[lo:hi, None]
                live = dt >= 0
                dt = np.where(live, dt, 0.0)
                env = np.exp(-dt / mat['decay']) * live
                ring = np.zeros_like(dt)
                for f, g in zip(mat['freqs'], mat['gains']):
                    ring += g * np.sin(2 * np.pi * f * obj['fscale'] * dt)
                out += (ep.imp_a[lo:hi, None] * env * ring).sum(axis=0)
        # Friction noise while sliding, from the state at the chunk's middle.
        state = self.state_at(0.5 * (t_start + t_end))
        if state.touching and state.speed > 0:
            gain = 0.05 * _MATERIAL[state.material]['friction'] * state.force
            gain *= min(state.speed, 3.0)
            noise = rng.standard_normal(n)
            if state.material == 'rubber':  # muffled
                noise = np.convolve(noise, np.ones(8) / 3.0, 'same')
            out += gain * noise
        if c.audio_noise > 0:
            out += c.audio_noise * rng.standard_normal(n)
        samples = np.clip(out, -1.0, 1.0).astype(np.float32)
        return AudioFrame(stamp, c.sample_rate, 1, samples, c.microphone_frame_id)

    # -- taxels ------------------------------------------------------------------------------

    def tactile_frame(self, index: int) -> TactileFrame:
        c = self.config
        stamp = self.stamp_ns(TACTILE_TOPIC, index)
        state = self.state_at(self._t(stamp))
        values = np.zeros((c.rows, c.cols, c.channels), np.float32)
        if state.touching and state.force > 0:
            mat, obj = _MATERIAL[state.material], _OBJECT[state.obj]
            grow = (1.0 + 0.4 * state.force) / mat['hardness']
            sx, sy = obj['sigma'][0] * grow, obj['sigma'][1] * grow
            d2 = (((self._tx[None, :] - state.x) / sx) ** 2
                  + ((self._ty[:, None] - state.y) / sy) ** 2)
            blob = np.exp(-0.5 * d2 ** (obj['power'] / 2.0))
            u, v = np.meshgrid(self._tx, self._ty)
            blob *= _inside(state.obj, u, v)
            pressure = state.force * blob
            values[..., 0] = pressure
            if c.channels >= 3:
                mu = mat['friction']
                speed = max(state.speed, 1e-9)
                values[..., 1] = mu * pressure * state.vx / speed * min(speed, 1.0)
                values[..., 2] = mu * pressure * state.vy / speed * min(speed, 1.0)
        if c.tactile_noise > 0:
            rng = np.random.default_rng([self.seed, 3, index])
            values += rng.standard_normal(values.shape, dtype=np.float32) * c.tactile_noise
            values[..., 0] = np.maximum(values[..., 0], 0.0)
        return TactileFrame(stamp, c.rows, c.cols, c.channels, values.ravel(),
                            c.tactile_frame_id)
