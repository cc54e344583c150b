"""
Saving and loading trained models (ROS-free).

A checkpoint is a `torch.save`d plain dict (loadable with `torch.load(weights_only=True)`):

    format          'llmos_ros.checkpoint'
    format_version  FORMAT_VERSION
    model_id        short sha256 of the weights and the config
    config          Config.to_dict() the model was built from
    state_dict      the model weights
    stats           preprocessing statistics (opaque: name -> {'mean': ..., 'std': ...})
    inputs          per modality: name, kind, topic, msg_type, shape (what the model consumes)
    extra           anything else, e.g. optimizer state and step for resuming

Files are written atomically (temporary file in the same folder, then rename), with the mode a
new file gets under the process umask (0644 under the usual 022), so other accounts can load them.
Loading never unpickles arbitrary objects (`weights_only=True`): a tampered file with a pickled
payload is a CheckpointError, its code is never run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import hashlib
import json
import os
from pathlib import Path
import tempfile
from typing import Any

import torch

from llmos_ros.config import Config
from llmos_ros.errors import CheckpointError, ConfigError
from llmos_ros.models.mvae import MultimodalVAE

FORMAT = 'llmos_ros.checkpoint'
FORMAT_VERSION = 1
# model settings that change the network or the meaning of the latent
ARCH_FIELDS = ('fusion', 'latent_dim', 'hidden')


@dataclass
class LoadedModel:
    model: MultimodalVAE
    cfg: Config
    stats: dict
    model_id: str
    extra: dict = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """Numpy arrays / scalars -> lists / Python numbers, recursively (weights_only-loadable)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if hasattr(value, 'tolist') and type(value).__module__ == 'numpy':
        return value.tolist()
    return value


def model_id_of(state_dict: dict[str, torch.Tensor], config: dict) -> str:
    """Short sha256 over the weights (sorted by name) and the config."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes() if t.numel() else b'')
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def input_specs(cfg: Config) -> list[dict]:
    return [{'name': n, 'kind': m.kind, 'topic': m.topic, 'msg_type': m.msg_type,
             'shape': list(m.shape())} for n, m in cfg.modalities.items()]


def save_checkpoint(path: str | Path, model: MultimodalVAE, cfg: Config, stats: dict | None,
                    extra: dict | None = None) -> str:
    """Write a checkpoint atomically; returns its model_id."""
    path = Path(path)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    config = cfg.to_dict()
    mid = model_id_of(state, config)
    payload = {'format': FORMAT, 'format_version': FORMAT_VERSION, 'model_id': mid,
               'config': config, 'state_dict': state, 'stats': _plain(stats or {}),
               'inputs': input_specs(cfg), 'extra': _plain(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        with os.fdopen(fd, 'wb') as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return mid


def _umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _compare(saved: Config, given: Config, path: Path) -> None:
    """Raise CheckpointError naming the first field where `given` cannot run the saved model."""
    def fail(field_name: str, old: Any, new: Any) -> None:
        raise CheckpointError(f'checkpoint {path} does not match the config: {field_name} is '
                              f'{old!r} in the checkpoint but {new!r} in the config')

    if list(saved.modalities) != list(given.modalities):
        fail('modalities', list(saved.modalities), list(given.modalities))
    for name, old in saved.modalities.items():
        new = given.modalities[name]
        if old.kind != new.kind:
            fail(f'modalities.{name}.kind', old.kind, new.kind)
        try:
            new_shape = new.shape()
        except ConfigError as exc:
            raise CheckpointError(f'config for {path}: {exc}') from None
        if old.shape() != new_shape:
            fail(f'modalities.{name}.shape', old.shape(), new_shape)
    for f in ARCH_FIELDS:
        if getattr(saved.model, f) != getattr(given.model, f):
            fail(f'model.{f}', getattr(saved.model, f), getattr(given.model, f))
    if saved.model.private_size() != given.model.private_size():
        field_name = ('model.private_latents' if saved.model.private_latents
                      != given.model.private_latents else 'model.private_dim')
        fail(field_name, getattr(saved.model, field_name.split('.')[1]),
             getattr(given.model, field_name.split('.')[1]))


def with_old_meanings(config: dict) -> dict:
    """
    A checkpoint's config with the keys it predates set to what they meant when it was written.

    - `model.private_latents` (added with mopoe private latents): absent -> False;
    - `modalities.<taxels>.grid_hz` (added with taxel windows): absent -> window_s 0, the newest
      frame only (older taxel configs stored an unused window_s of 1.0);
    - `model.k_samples` (default 4 until it became 1): absent -> 4. Every checkpoint written by
      llmos-train stores it, so only a hand-made config lacks it; it changes nothing but the
      moe / mmvae_plus training objective, i.e. what `--resume` continues with;
    - `model.balance_likelihoods` (added on, with likelihood weights by modality size):
      absent -> False, every modality weighted by its `likelihood_scale` alone (the objective
      `--resume` continues with and the bound evaluation reports);
    - `modalities.<m>.likelihood` (added with the audio kind's 'time_shift' default): absent ->
      'gaussian', the likelihood every modality had (images default to 'space_shift' since);
    - `modalities.<m>.max_shift` (added with 'space_shift'): absent -> the default; only that
      likelihood reads it, and a checkpoint without the key cannot have it.
    """
    config = json.loads(json.dumps(config))  # a deep copy of plain data
    model = config.setdefault('model', {})
    model.setdefault('private_latents', False)
    model.setdefault('k_samples', 4)
    model.setdefault('balance_likelihoods', False)
    for mod in (config.get('modalities') or {}).values():
        if mod.get('kind') == 'taxels' and 'grid_hz' not in mod:
            mod['window_s'] = 0.0
        mod.setdefault('likelihood', 'gaussian')
    return config


def load_checkpoint(path: str | Path, cfg: Config | None = None,
                    device: str | torch.device = 'cpu') -> LoadedModel:
    """
    Load a checkpoint; with `cfg`, check it can run the saved model.

    The model is always built from the checkpoint's own config. The returned cfg is the given
    one (its modalities, shapes, fusion and latent sizes equal the checkpoint's; topics, sync and
    training settings may differ) or, without one, the checkpoint's. Raises CheckpointError.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means unreadable
        raise CheckpointError(f'{path} is not a readable llmos_ros checkpoint (corrupt or '
                              f'another format): {_load_error(exc)}') from None
    if not isinstance(ckpt, dict) or ckpt.get('format') != FORMAT:
        raise CheckpointError(f'{path} is not a llmos_ros checkpoint (no {FORMAT!r} header)')
    version = ckpt.get('format_version')
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(f'{path} has checkpoint format_version {version}, newer than this '
                              f'code reads ({FORMAT_VERSION}): update llmos_ros to load it')
    if version != FORMAT_VERSION:
        raise CheckpointError(f'{path} has checkpoint format_version {version!r}; this code '
                              f'reads version {FORMAT_VERSION}')
    missing = [k for k in ('model_id', 'config', 'state_dict') if k not in ckpt]
    if missing:
        raise CheckpointError(f'{path} is incomplete: missing {missing}')
    try:
        saved = Config.from_dict(with_old_meanings(ckpt['config']))
    except ConfigError as exc:
        raise CheckpointError(f'{path}: its config does not fit this code: {exc}') from None
    if cfg is not None:
        _compare(saved, cfg, path)
    state = ckpt['state_dict']
    if model_id_of(state, ckpt['config']) != ckpt['model_id']:
        raise CheckpointError(f'{path}: weights or config do not match model_id '
                              f'{ckpt["model_id"]} (corrupt or edited)')
    try:
        model = MultimodalVAE(saved)
    except ConfigError as exc:
        raise CheckpointError(f'{path}: cannot build its model: {exc}') from None
    _check_weights(model, state, path)
    model.load_state_dict(state)
    model.to(device).eval()
    return LoadedModel(model=model, cfg=cfg if cfg is not None else saved,
                       stats=ckpt.get('stats') or {}, model_id=ckpt['model_id'],
                       extra=ckpt.get('extra') or {})


def _load_error(exc: Exception) -> str:
    """One line for a torch.load failure (torch's own messages span many lines)."""
    text = str(exc)
    for line in text.splitlines():
        if 'Unsupported global' in line:  # a pickled object: refused, never run
            return ('it holds pickled objects, which are never loaded: '
                    + line.split('WeightsUnpickler error:')[-1].strip().split('. ')[0])
    first = text.strip().splitlines()[0] if text.strip() else ''
    return f'{type(exc).__name__}: {first}'.strip()


def _check_weights(model: MultimodalVAE, state: dict, path: Path) -> None:
    expected = model.state_dict()
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f'missing weights {missing[:5]}{" ..." if len(missing) > 5 else ""}')
    if unexpected:
        problems.append(f'unexpected weights {unexpected[:5]}'
                        f'{" ..." if len(unexpected) > 5 else ""}')
    for key in sorted(set(expected) & set(state)):
        if tuple(expected[key].shape) != tuple(state[key].shape):
            problems.append(f'weight {key} has shape {list(state[key].shape)} in the checkpoint '
                            f'but the code expects {list(expected[key].shape)}')
            break
    if problems:
        raise CheckpointError(f'{path}: weights do not fit the model code: '
                              + '; '.join(problems))


def load_stored(model_path, loaded: LoadedModel, key: str, sidecar: Path | None, parse, *,
                noun: str, module: str, redo: str) -> tuple[Any, str]:
    """
    What was learned for `loaded` after training, and why there is none ('' when there is).

    A surprise calibration, a belief noise model: `parse(data, where)` of the JSON `sidecar` if
    it exists, else of extra[key]. A sidecar is an explicit redo on other data, so it wins over
    what llmos-train stored. One made for another model id is not used (the reason says so);
    `module`'s command line redoes it. `parse` raises CheckpointError for data it cannot read.
    """
    data, where = loaded.extra.get(key), f'{model_path} extra'
    if sidecar is not None and sidecar.is_file():
        where = str(sidecar)
        try:
            data = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            return None, f'{sidecar}: unreadable ({exc})'
    if data is None:
        return None, (f'no {noun} ({sidecar} missing): run python -m {module} --model '
                      f'{model_path} --bag TRAIN_BAG')
    try:
        value = parse(data, where)
    except CheckpointError as exc:
        return None, str(exc)
    if value.model_id != loaded.model_id:
        return None, (f'{where}: calibration of model {value.model_id}, not of '
                      f'{loaded.model_id}; {redo}')
    return value, ''
