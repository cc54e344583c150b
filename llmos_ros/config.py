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

from llmos_ros import kinds
from llmos_ros.errors import ConfigError


@dataclass
class ModalityConfig:
    """
    One input stream and how it becomes a model tensor.

    `kind` names its kind in llmos_ros.kinds (image, audio, taxels, wrench), which says what the
    fields mean for it, its shape and its preprocessing: kind 'image' reads height, width,
    channels; 'audio' sample_rate, window_s, n_mels, hop_s; 'taxels' rows, cols, channels,
    window_s, grid_hz; 'wrench' window_s, grid_hz. `window_s` < 0 (the default) takes the
    kind's default window (`Kind.default_window_s`). `likelihood` is the decoder's likelihood
    of the modality in training ('' or absent: the kind's default, the first of
    `Kind.likelihoods`; 'gaussian', 'time_shift' for audio, 'space_shift' for images, whose
    reach is `max_shift`, a part of each side). An unknown kind, a likelihood the kind does not
    offer or a max_shift outside (0, 0.5] is a ConfigError.
    """

    name: str
    kind: str
    topic: str
    msg_type: str
    # image
    height: int = 32
    width: int = 32
    channels: int = 1  # images: 1 (mono) or 3 (rgb); taxels: values per taxel
    max_shift: float = 0.0625  # images, likelihood 'space_shift': reach, a part of each side
    # audio
    sample_rate: int = 16000  # the model's rate; inputs are resampled to it
    window_s: float = -1.0  # audio, taxels, wrench: causal window; < 0: the kind's default
    n_mels: int = 32
    hop_s: float = 0.032
    # taxels
    rows: int = 0
    cols: int = 0
    grid_hz: float = 100.0  # time grid of a taxel or wrench window (frames averaged per step)
    # pairing
    max_age_s: float = 0.25  # older than this at the sample time: the modality is absent
    # training: the decoder's likelihood ('': the kind's default, see Kind.likelihoods)
    likelihood: str = ''

    def __post_init__(self):
        kind = kinds.of(self)
        if self.window_s < 0:
            self.window_s = kind.default_window_s
        if not self.likelihood:
            self.likelihood = kind.likelihoods[0]
        if self.likelihood not in kind.likelihoods:
            raise ConfigError(f'modalities.{self.name}.likelihood: {self.likelihood!r} is not '
                              f'one of kind {self.kind!r}: {list(kind.likelihoods)}')
        if not 0.0 < self.max_shift <= 0.5:
            raise ConfigError(f'modalities.{self.name}.max_shift must be in (0, 0.5] (a part '
                              f'of each side), got {self.max_shift}')

    def shape(self) -> tuple[int, ...]:
        """Shape of the model array of this modality (its kind's `shape`)."""
        return kinds.of(self).shape(self)


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
    # importance samples per mixture component for moe / mmvae_plus: 1 is the stratified ELBO
    # (the MMVAE+ authors' PolyMNIST setting); K > 1 the importance-weighted bound with DReG
    # gradients, at K times the decoder cost
    k_samples: int = 1
    # each modality's log-likelihood x (largest modality's value count / its own): a small
    # modality (a tactile pad beside a camera) shapes the latent as much as a large one
    balance_likelihoods: bool = True
    likelihood_scale: dict[str, float] = field(default_factory=dict)  # per modality, default 1

    def private_size(self) -> int:
        """Private latent entries per modality of this fusion (0: none; `Fusion.private_size`)."""
        return _fusion(self.fusion).private_size(self)


LR_SCHEDULES = ('cosine', 'constant')


@dataclass
class TrainConfig:
    batch_size: int = 64
    lr: float = 1e-3
    lr_schedule: str = 'constant'  # constant; cosine: lr to lr * lr_final over the run's length
    lr_final: float = 0.1  # cosine: the rate at the end, as a part of lr
    steps: int = 0  # > 0: exactly this many steps; 0: until validation stops improving
    max_minutes: float = 15.0  # wall-clock budget of the optimisation when steps is 0
    patience: int = 6  # validations without improvement before stopping (steps 0)
    min_delta: float = 1e-3  # relative improvement of the validation loss that counts
    augment_shift: float = 0.0  # image modalities: random shifts up to this part of a side
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
        cfg = cls(modalities=mods,
                  sync=_build(SyncConfig, data.get('sync') or {}, 'sync'),
                  model=_build(ModelConfig, data.get('model') or {}, 'model'),
                  train=_build(TrainConfig, data.get('train') or {}, 'train'))
        _fusion(cfg.model.fusion)  # ConfigError for an unknown fusion
        if cfg.model.cross_private not in ('own', 'prior'):
            raise ConfigError(f"model.cross_private must be 'own' or 'prior', got "
                              f'{cfg.model.cross_private!r}')
        if cfg.train.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f'train.lr_schedule must be one of {list(LR_SCHEDULES)}, got '
                              f'{cfg.train.lr_schedule!r}')
        if not 0.0 <= float(cfg.train.lr_final) <= 1.0:
            raise ConfigError(f'train.lr_final must be in [0, 1] (a part of train.lr), got '
                              f'{cfg.train.lr_final!r}')
        if not 0.0 <= float(cfg.train.augment_shift) < 0.5:
            raise ConfigError(f'train.augment_shift must be in [0, 0.5) (a part of the image '
                              f'side), got {cfg.train.augment_shift!r}')
        return cfg


def _fusion(name: str):
    """
    The registered fusion `name` (llmos_ros.models.fusions); ConfigError if there is none.

    Imported here, not at the top: fusions are torch code, and importing the config (as the
    torch-free data modules core/sync, core/preprocess and core/dataset do) must not load torch.
    """
    from llmos_ros.models import fusions
    return fusions.get(name)


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
        mod = modalities[name]
        # replace() runs __post_init__ again: the kind's defaults and checks of the new values
        modalities[name] = dataclasses.replace(
            mod, **{key: type(getattr(mod, key))(value) for key, value in values.items()})
