"""
The onnxruntime backend of the live engine: each modality's encoder and decoder as an ORT session.

`OrtNetworks(model, threads)` exports every `Encoder` and `Decoder` (models/networks.py) of a
loaded MultimodalVAE to ONNX in memory once (`export.export_onnx`), opens one onnxruntime CPU
session per network and checks it against the eager network on random inputs
(`export.compare_outputs`, tolerance CHECK_ATOL): what runs is checked equal to eager before the
first sample. The fusion of the experts is not here: `PerceptionEngine` fuses them in torch with
either backend (closed form, cheap). ROS-free.

Why: at batch 1 the eager networks spend most of their time in torch's per-operator overhead,
which onnxruntime's fused CPU kernels avoid (benchmarks/engine_backends.py).
"""
from __future__ import annotations

import io

import numpy as np
import torch
from torch import nn

from llmos_ros.errors import LlmosError
from llmos_ros.export import ExportError, compare_outputs, export_onnx, ort_session
from llmos_ros.models.mvae import MultimodalVAE

CHECK_ATOL = 1e-4  # each session against its eager network, as check_export
CHECK_BATCH = 2  # rows of the check's random input (the exported batch axis is dynamic)


class _Network:
    """One network as an onnxruntime session: numpy in, numpy outputs out."""

    def __init__(self, what: str, module: nn.Module, example: torch.Tensor,
                 out_names: list[str], threads: int):
        buffer = io.BytesIO()
        try:
            export_onnx(module, (example,), buffer, ['x'], out_names)
            self.session = ort_session(buffer.getvalue(), threads)
        except LlmosError:
            raise
        except Exception as exc:  # noqa: BLE001 - any exporter or onnxruntime failure, named
            raise ExportError(f'onnxruntime backend: the {what} cannot be exported to ONNX: '
                              f'{type(exc).__name__}: {exc}') from exc
        with torch.no_grad():
            want = module(example)
        want = [t.numpy() for t in (want if isinstance(want, tuple) else (want,))]
        compare_outputs(f'onnxruntime backend, {what}', out_names, want,
                        self(example.numpy()), CHECK_ATOL)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        """The network's outputs for the float32 batch `x`."""
        return self.session.run(None, {'x': np.ascontiguousarray(x, np.float32)})


class OrtNetworks:
    """
    The encoders and decoders of `model` in onnxruntime, `threads` intra-op threads each.

    `threads` 0: onnxruntime's default (one per physical core). ConfigError when onnxruntime is
    not installed, ExportError naming the network when one cannot be exported or differs from
    eager. The model is moved to the cpu (onnxruntime runs there only).
    """

    def __init__(self, model: MultimodalVAE, threads: int = 1):
        model = model.cpu().eval()
        gen = torch.Generator().manual_seed(0)
        self.encoders, self.decoders, self._zero_experts = {}, {}, {}
        for name in model.names:
            shape = model.shapes[name]
            self.encoders[name] = _Network(
                f'encoder of {name!r}', model.encoders[name],
                torch.randn((CHECK_BATCH, *shape), generator=gen), ['mu', 'logvar'], threads)
            decoder = model.decoders[name]
            self.decoders[name] = _Network(
                f'decoder of {name!r}', decoder,
                torch.randn((CHECK_BATCH, decoder.fc[0].in_features), generator=gen), ['mean'],
                threads)
            # a modality missing from every row has zeros as input (MultimodalVAE.prepare):
            # its expert is a constant, computed here once
            self._zero_experts[name] = self.encoders[name](np.zeros((1, *shape), np.float32))

    def experts(self, xs: list[torch.Tensor], mask: torch.Tensor
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """
        The encoders' (mu, logvar) per modality for prepared inputs (`MultimodalVAE.prepare`).

        In modality order, for `MultimodalVAE.stack_experts`; the values `model.experts` gives.
        A modality present in no row is not run: its inputs are zeros, its output the one
        computed at start.
        """
        outs = []
        for name, x, present in zip(self.encoders, xs, mask):
            if bool(present.any()):
                mu, logvar = self.encoders[name](x.cpu().numpy())
            else:
                mu, logvar = (np.repeat(a, x.shape[0], 0) for a in self._zero_experts[name])
            outs.append((torch.from_numpy(mu), torch.from_numpy(logvar)))
        return outs

    def decode(self, name: str, z: torch.Tensor) -> torch.Tensor:
        """Decoder `name`'s mean [N, *shape] for its input z [N, in_dim] (`decoder_input`)."""
        return torch.from_numpy(self.decoders[name](z.cpu().numpy())[0])
