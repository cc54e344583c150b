"""
Model, data and training configuration (ROS-free), loaded from YAML.

One `Config` travels with a checkpoint, so what was trained is what runs. Modalities not given in
the file are inferred from the bag's topics (llmos_ros.core.dataset.infer_modalities).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmos_ros.errors import ConfigError

MODALITY_KINDS = ('image', 'audio', 'taxels')
FUSIONS = ('poe', 'moe', 'mopoe', 'mmvae_plus')


@dataclass
class ModalityConfig:
    """
    One input stream and how it becomes a model tensor.

    kind 'image': camera or optical tactile images, shape (channels, height, width).
    kind 'audio': log-mel spectrogram of a causal window, shape (1, n_mels, frames).
    kind 'taxels': taxel arrays. With `window_s` > 0 (the default), a causal window of the
      frames stamped in [t - window_s, t) resampled onto a grid of `grid_hz` steps, shape
      (channels, steps, rows * cols); with `window_s: 0`, the newest frame, (channels, rows, cols).

    `window_s` < 0 (the default) takes the kind's default (`DEFAULT_WINDOW_S`).
    """

    name: str
    kind: str
    topic: str
    msg_type: str
    # image
    height: int = 32
    width: int = 32
    channels: int = 1  # images: 1 (mono) or 3 (rgb); taxels: values per taxel
    # audio
    sample_rate: int = 16000  # the model's rate; inputs are resampled to it
    window_s: float = -1.0  # audio, taxels: causal window; < 0: DEFAULT_WINDOW_S of the kind
    n_mels: int = 32
    hop_s: float = 0.032
    # taxels
    rows: int = 0
    cols: int = 0
    grid_hz: float = 100.0  # time grid of a taxel window (frames are averaged into its steps)
    # pairing
    max_age_s: float = 0.25  # older than this at the sample time: the modality is absent

    def __post_init__(self):
        if self.window_s < 0:
            self.window_s = DEFAULT_WINDOW_S.get(self.kind, 0.0)

    def shape(self) -> tuple[int, ...]:
        if self.kind == 'image':
            return (self.channels, self.height, self.width)
        if self.kind == 'audio':
            return (1, self.n_mels, audio_frames(self))
        if self.kind == 'taxels':
            if self.window_s > 0:
                return (self.channels, taxel_steps(self), self.rows * self.cols)
            return (self.channels, self.rows, self.cols)
        raise ConfigError(f'modality {self.name}: unknown kind {self.kind!r}')


# Default causal windows (seconds) of the streaming kinds.
# audio 1.5 s: a spoken word or a contact sound lasts up to about 1 s, and the frame that shows
#   its cause can come up to about 0.5 s after it ends, so a window ending at a camera frame
#   holds the whole event; a longer one mixes in the event before it.
# taxels 0.32 s: slip, vibration and texture show within a few hundred milliseconds of contact;
#   32 steps of the 100 Hz grid suit sensors of 100 Hz (one frame a step) to 1 kHz (ten frames
#   averaged a step).
DEFAULT_WINDOW_S = {'audio': 1.5, 'taxels': 0.32}


def taxel_steps(cfg: ModalityConfig) -> int:
    """Time steps of a taxel window: window_s on the grid_hz grid (at least 1)."""
    if cfg.grid_hz <= 0:
        raise ConfigError(f'modalities.{cfg.name}.grid_hz must be > 0, got {cfg.grid_hz}')
    return max(1, int(round(cfg.window_s * cfg.grid_hz)))


def audio_frames(cfg: ModalityConfig) -> int:
    """Number of spectrogram frames in one window (centre-free STFT, one frame per hop)."""
    hop = max(1, int(round(cfg.hop_s * cfg.sample_rate)))
    return max(1, int(round(cfg.window_s * cfg.sample_rate)) // hop)


@dataclass
class SyncConfig:
    reference: str = ''  # modality whose frames define sample times; '' = first image modality
    slop_s: float = 0.02  # frames up to this much after the sample time still count as "at" it
    max_wait_s: float = 0.1  # a sample waits at most this long (in stamp time) for late inputs
    queue_size: int = 64
    jump_s: float = 2.0  # stamps further than this from the time line are a jump (see core/sync)


@dataclass
class ModelConfig:
    fusion: str = 'mopoe'
    latent_dim: int = 32  # shared latent
    private_dim: int = 8  # per modality: mmvae_plus always, mopoe with private_latents
    private_latents: bool = True  # mopoe: modality-private latents beside the shared one
    # mopoe training: the private latent a decoder reads when its modality is not in the drawn
    # subset: 'prior' (N(0, I), as MMVAE+: cross-modal content must pass through the shared z)
    # or 'own' (its own encoder's, Sutter et al. 2020; can let a modality bypass z)
    cross_private: str = 'prior'
    hidden: int = 256
    beta: float = 1.0
    warmup_steps: int = 500  # KL weight ramps 0 -> beta over these steps
    k_samples: int = 4  # importance samples for moe / mmvae_plus (DReG)
    likelihood_scale: dict[str, float] = field(default_factory=dict)  # per modality, default 1

    def private_size(self) -> int:
        """Private latent entries per modality of this fusion (0: none)."""
        if self.fusion == 'mmvae_plus' or (self.fusion == 'mopoe' and self.private_latents):
            return int(self.private_dim)
        return 0


@dataclass
class TrainConfig:
    batch_size: int = 64
    lr: float = 1e-3
    steps: int = 0  # > 0: exactly this many steps; 0: until validation stops improving
    max_minutes: float = 15.0  # wall-clock budget of the optimisation when steps is 0
    patience: int = 6  # validations without improvement before stopping (steps 0)
    min_delta: float = 1e-3  # relative improvement of the validation loss that counts
    val_fraction: float = 0.1  # last part of the time line, held out
    val_every: int = 200
    checkpoint_every: int = 500
    seed: int = 0
    device: str = 'cpu'


@dataclass
class Config:
    modalities: dict[str, ModalityConfig] = field(default_factory=dict)
    sync: SyncConfig = field(default_factory=SyncConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Config:
        data = dict(data or {})
        unknown = set(data) - {'modalities', 'sync', 'model', 'train'}
        if unknown:
            raise ConfigError(f'unknown config sections: {sorted(unknown)}')
        mods = {}
        for name, m in (data.get('modalities') or {}).items():
            m = dict(m)
            m.setdefault('name', name)
            mods[name] = _build(ModalityConfig, m, f'modalities.{name}')
            if mods[name].kind not in MODALITY_KINDS:
                raise ConfigError(f'modalities.{name}.kind must be one of {MODALITY_KINDS}')
        cfg = cls(modalities=mods,
                  sync=_build(SyncConfig, data.get('sync') or {}, 'sync'),
                  model=_build(ModelConfig, data.get('model') or {}, 'model'),
                  train=_build(TrainConfig, data.get('train') or {}, 'train'))
        if cfg.model.fusion not in FUSIONS:
            raise ConfigError(f'model.fusion must be one of {FUSIONS}, got {cfg.model.fusion!r}')
        if cfg.model.cross_private not in ('own', 'prior'):
            raise ConfigError(f"model.cross_private must be 'own' or 'prior', got "
                              f'{cfg.model.cross_private!r}')
        return cfg


def _build(kind, values: dict, where: str):
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f'{where}: unknown keys {sorted(unknown)}; known: {sorted(names)}')
    try:
        return kind(**values)
    except TypeError as exc:
        raise ConfigError(f'{where}: {exc}') from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f'config file not found: {path}') from None
    except yaml.YAMLError as exc:
        raise ConfigError(f'config file {path} is not valid YAML: {exc}') from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f'config file {path} must hold a mapping of sections')
    return data or {}


def load_config(path: str | Path | None) -> Config:
    """Load a YAML config; None gives the defaults."""
    return Config() if path is None else Config.from_dict(read_yaml(path))


def load_training_config(path: str | Path | None) -> tuple[Config, dict[str, dict]]:
    """
    A config whose modalities may be tuned rather than named in full.

    A modality entry without `kind` (e.g. `audio: {window_s: 1.5}`) is not a modality of its
    own: it is returned as overrides, applied with `apply_overrides` to the modalities inferred
    from the bags.
    """
    data = read_yaml(path) if path is not None else {}
    mods = dict(data.get('modalities') or {})
    overrides = {n: dict(m or {}) for n, m in mods.items() if 'kind' not in (m or {})}
    data['modalities'] = {n: m for n, m in mods.items() if n not in overrides}
    return Config.from_dict(data), overrides


def apply_overrides(modalities: dict[str, ModalityConfig], overrides: dict[str, dict]) -> None:
    """Set the given fields of inferred modalities; unknown modalities or fields are errors."""
    names = {f.name for f in dataclasses.fields(ModalityConfig)}
    for name, values in overrides.items():
        if name not in modalities:
            raise ConfigError(f'modalities.{name}: no such modality in the bags (they have '
                              f'{sorted(modalities)})')
        unknown = set(values) - names
        if unknown:
            raise ConfigError(f'modalities.{name}: unknown keys {sorted(unknown)}')
        for key, value in values.items():
            setattr(modalities[name], key, type(getattr(modalities[name], key))(value))
