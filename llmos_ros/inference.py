"""
Pairing + preprocessing + model: frames in, fused state out. ROS-free.

The live node and offline evaluation both run this, so what is evaluated is what runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import time

import numpy as np
import torch

from llmos_ros.checkpoint import LoadedModel
from llmos_ros.config import Config
from llmos_ros.core.drops import Drop, DropCounter, PushResult
from llmos_ros.core.frames import Frame
from llmos_ros.core.pairing import Pairer
from llmos_ros.core.preprocess import Preprocessor
from llmos_ros.core.sync import SampleSet, Synchronizer
from llmos_ros.errors import ConfigError, InputError


@dataclass
class Inference:
    """The fused state of one sample set."""

    stamp_ns: int
    modalities: list[str]  # contributed, in model order
    stamps_ns: dict[str, int]  # newest input stamp used, per contributing modality
    mean: np.ndarray  # fused posterior mean, full latent
    std: np.ndarray
    inputs: dict[str, np.ndarray]  # preprocessed inputs (model space) of the contributors
    # modality -> (model-space prediction, the modalities it was decoded from)
    predictions: dict[str, tuple[np.ndarray, tuple[str, ...]]] = field(default_factory=dict)
    seconds: float = 0.0  # preprocessing + model time
    # the model's expert outputs for this sample (MultimodalVAE.experts, batch 1): predictions
    # fuse them per source set instead of encoding again
    experts: tuple | None = field(default=None, repr=False)


def check_device(name: str) -> torch.device:
    """The torch device `name` ('cpu', 'cuda', 'cuda:N') if usable here; else ConfigError."""
    try:
        device = torch.device(str(name))
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f'device {name!r} is not a device (cpu, cuda, cuda:N): {exc}') from None
    if device.type == 'cpu':
        return device
    if device.type != 'cuda':
        raise ConfigError(f'device {name!r}: only cpu and cuda[:N] are supported')
    if not torch.cuda.is_available():
        raise ConfigError(f'device {name!r}: CUDA is not available on this machine (use cpu)')
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f'device {name!r}: this machine has {count} CUDA device(s)')
    return device


BACKENDS = ('torch', 'onnxruntime')


def check_backend(backend: str, device: str) -> None:
    """ConfigError unless `backend` is one of BACKENDS and runs on `device` (onnxruntime: cpu)."""
    if backend not in BACKENDS:
        raise ConfigError(f'backend {backend!r} is not one of {", ".join(BACKENDS)}')
    try:
        kind = torch.device(str(device)).type
    except (RuntimeError, TypeError, ValueError):
        kind = str(device)  # not a device at all: check_device says so
    if backend == 'onnxruntime' and kind != 'cpu':
        raise ConfigError(f'backend {backend!r} runs on the cpu only: device {device!r} needs '
                          "backend 'torch'")


class PerceptionEngine:
    """
    Frames in, `Inference` out.

    Pairing (`push`, `flush`) is not thread-safe: one thread at a time (the node holds a lock).
    `drops` counts every drop of pairing and preprocessing; it is thread-safe, so the node's
    executor and workers may count into it at once.

    `backend` runs the encoders and decoders: 'torch' (eager, on `device`) or 'onnxruntime'
    (cpu only; llmos_ros/ort_backend.py, exported and checked against eager here, `threads`
    intra-op threads, 0: its default). The fusion runs in torch with either.
    """

    def __init__(self, loaded: LoadedModel, device: str = 'cpu',
                 modalities: list[str] | None = None, sync_overrides: dict | None = None,
                 backend: str = 'torch', threads: int = 1):
        self.cfg: Config = loaded.cfg
        check_backend(backend, device)
        self.device = check_device(device)
        self.model = loaded.model.to(self.device).eval()
        self.backend = backend
        self._ort = None
        if backend == 'onnxruntime':
            from llmos_ros.ort_backend import OrtNetworks  # onnx export: only when chosen
            self._ort = OrtNetworks(self.model, threads)
        self.model_id = loaded.model_id
        names = list(self.cfg.modalities)
        if modalities:
            unknown = sorted(set(modalities) - set(names))
            if unknown:
                raise ConfigError(f'modalities {unknown} are not in the model (it has {names})')
        self.names = names
        self.active = [n for n in names if not modalities or n in modalities]
        self.preprocessors = {n: Preprocessor(self.cfg.modalities[n], loaded.stats.get(n))
                              for n in names}  # all: inverse() of every prediction
        sync_cfg = Config.from_dict(self.cfg.to_dict())
        for key, value in (sync_overrides or {}).items():
            if key == 'max_age_s':
                for m in sync_cfg.modalities.values():
                    m.max_age_s = value
            else:
                setattr(sync_cfg.sync, key, value)
        for n in names:
            if n not in self.active:
                del sync_cfg.modalities[n]
        if sync_cfg.sync.reference and sync_cfg.sync.reference not in sync_cfg.modalities:
            sync_cfg.sync.reference = ''
        self.synchronizer = Synchronizer(sync_cfg)
        self._pairer = Pairer(self.preprocessors, self.synchronizer)
        self.drops = DropCounter()  # every drop of push, flush and preprocess

    def push(self, name: str, frame: Frame) -> PushResult:
        """Add one input frame: the sample sets that became ready and the drops (counted)."""
        result = self._pairer.push(name, frame)
        self.drops.add(result.drops)
        return result

    def flush(self) -> PushResult:
        """Emit every pending sample set (end of a bag), with the drops (counted)."""
        result = self._pairer.flush()
        self.drops.add(result.drops)
        return result

    def preprocess(self, sample: SampleSet) -> tuple[dict[str, np.ndarray], list[Drop]]:
        """Model inputs of the modalities in the sample; bad inputs are left out, as drops."""
        arrays, drops = {}, []
        for name in self.active:
            window = sample.windows.get(name)
            if not window:
                continue
            try:
                arrays[name] = self.preprocessors[name](window, sample.window_end(name))
            except InputError as exc:
                drops.append(Drop(name, exc.reason, str(exc)))
        self.drops.add(drops)
        return arrays, drops

    @torch.no_grad()
    def infer(self, sample: SampleSet) -> tuple[Inference | None, list[Drop]]:
        """Fuse one sample set; also its preprocessing drops. (None, drops): no usable modality."""
        start = time.perf_counter()
        arrays, drops = self.preprocess(sample)
        if not arrays:
            return None, drops
        present = [n for n in self.names if n in arrays]
        inputs, masks = self._batch(arrays, [tuple(present)])
        xs, mask = self.model.prepare(inputs, masks)
        experts = self._experts(xs, mask)
        _, mu, logvar = self.model.fuse_experts(experts, mask)  # = model.encode(inputs, masks)
        result = Inference(sample.stamp_ns, present, {n: sample.stamps[n] for n in present},
                           mu[0].cpu().numpy(), torch.exp(0.5 * logvar[0]).cpu().numpy(),
                           arrays, experts=experts)
        result.seconds = time.perf_counter() - start
        return result, drops

    @torch.no_grad()
    def predict(self, result: Inference) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
        """
        Each modality decoded from the others that contributed (model space).

        A modality that contributed is predicted from the rest (cross-modal, not a
        reconstruction); one that did not is predicted from all that did. A modality that was
        the only contributor gets no prediction. The encoders do not run again: each source
        set's posterior is fused from the experts `infer` computed (`result.experts`), and each
        target is decoded from its own row only.
        """
        rows, targets = [], []
        for target in self.names:
            source = tuple(p for p in result.modalities if p != target)
            if source:
                rows.append(source)
                targets.append(target)
        if not rows:
            return {}
        mask = torch.tensor([[n in r for r in rows] for n in self.names], device=self.device)
        if result.experts is None:  # an Inference not made by infer(): encode its inputs
            inputs, masks = self._batch(result.inputs, [tuple(result.modalities)])
            result.experts = self._experts(*self.model.prepare(inputs, masks))
        experts = tuple(None if e is None else e.expand(-1, len(rows), -1)
                        for e in result.experts)
        _, mu, _ = self.model.fuse_experts(experts, mask)
        result.predictions = {}
        for i, (target, source) in enumerate(zip(targets, rows)):  # one decoder pass per target
            mean = self._decode(target, self.model.decoder_input(mu[i:i + 1], target))
            result.predictions[target] = (mean[0].cpu().numpy(), source)
        return result.predictions

    def latent_fields(self, result: Inference, frame_id: str = 'llmos') -> dict:
        """
        The fields of msg/LatentState.msg for `result`, stamps in integer nanoseconds.

        The live node (rclpy) and the offline recorder (rosbags) build their messages from this.
        """
        return {'stamp_ns': result.stamp_ns, 'frame_id': frame_id, 'model_id': self.model_id,
                'fusion': self.cfg.model.fusion,
                'mean': np.asarray(result.mean, np.float32).ravel(),
                'std': np.asarray(result.std, np.float32).ravel(),
                **self.model.latent_layout(), 'modalities': list(result.modalities),
                'modality_stamps_ns': [result.stamps_ns[n] for n in result.modalities],
                'modality_ages': [max(0, result.stamp_ns - result.stamps_ns[n]) / 1e9
                                  for n in result.modalities],
                'modality_weights': [1.0] * len(result.modalities)}

    def prediction_frames(self, result: Inference, frame_id: str = 'llmos',
                          audio_iterations: int = 4) -> dict[str, Frame]:
        """
        The predictions of `result` (see `predict`) as frames of their kinds' prediction types.

        Images at the model's size (mono8 or rgb8), audio as the Griffin-Lim waveform of the
        model's window at its rate (`audio_iterations`), taxels and wrenches in sensor units;
        all stamped with the sample time. The live node publishes these and offline evaluation
        records them.
        """
        return {name: self.preprocessors[name].prediction_frame(array, result.stamp_ns, frame_id,
                                                                audio_iterations)
                for name, (array, _source) in result.predictions.items()}

    def _experts(self, xs: list[torch.Tensor], mask: torch.Tensor):
        """`MultimodalVAE.experts` of prepared inputs, from the backend's encoders."""
        if self._ort is None:
            return self.model.experts(xs, mask)
        return self.model.stack_experts(self._ort.experts(xs, mask))

    def _decode(self, name: str, z: torch.Tensor) -> torch.Tensor:
        """Decoder `name`'s mean for its input z (`MultimodalVAE.decoder_input`)."""
        if self._ort is None:
            return self.model.decoders[name](z)
        return self._ort.decode(name, z)

    def _batch(self, arrays, rows):
        inputs, masks = {}, {}
        for name in self.names:
            shape = self.cfg.modalities[name].shape()
            x = torch.zeros((len(rows), *shape), dtype=torch.float32)
            if name in arrays:
                x[:] = torch.from_numpy(arrays[name])
            inputs[name] = x.to(self.device)
            masks[name] = torch.tensor([name in r for r in rows], device=self.device)
        return inputs, masks
