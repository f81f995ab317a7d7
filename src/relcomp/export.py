"""Export a run's best model for use without relcomp.

What an exported model computes (inputs are float32 (B, C, H, W) in [0, 1], the run's size; for
a run on ``--features`` or a frozen ``hf:`` backbone, float32 feature vectors (B, D): the
``.json`` says which model and preprocessing make them):

- weak / supervised: ``logits = model(x)``, shape (B, K); softmax gives the class probabilities,
  and P(A > B) = sum_{i > j} p_A[i] p_B[j].
- siamese: ``logit = model(a, b)``, shape (B,); sigmoid gives P(A > B).
- ranker: ``score = model(x)``, shape (B,); P(A > B) = sigmoid(score(A) - score(B)).

Formats: ``onnx`` and ``torchscript`` hold the graph and weights (no relcomp, no Python class
needed: onnxruntime or ``torch.jit.load``); ``safetensors`` holds the weights and, in its
metadata, the config needed to rebuild the model (``relcomp.build_model`` or any re-implementation
of the architecture). ``<file>.json`` beside the file says the same in words.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .backbones import hf_preprocess, is_hf
from .checkpoint import load_weights, save_weights
from .config import TrainConfig
from .errors import ConfigError
from .models import RelcompModel
from .run import build_run_model, load_run_model, model_metadata
from .utils import atomic_path, make_dir, write_json_atomic

FORMATS = {"safetensors": ".safetensors", "onnx": ".onnx", "torchscript": ".pt"}


class _Exported(nn.Module):
    """The model with one of its methods as ``forward`` (what gets traced)."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, *x: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(*x)


def export_module(model: RelcompModel) -> tuple[nn.Module, list[str], list[str]]:
    """The module to export (eval mode), its input names and output names (the model's ``export``)."""
    spec = model.export
    return _Exported(model, spec.method).eval(), list(spec.inputs), list(spec.outputs)


def example_inputs(cfg: TrainConfig, n_inputs: int, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, *cfg.data.input_shape())
    draw = torch.randn if cfg.data.feature_dim else torch.rand
    return tuple(draw(*shape, generator=g) for _ in range(n_inputs))


def export_run(run_dir: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None) -> Path:
    """Write the run's best model as ``fmt`` to ``out`` (default ``<run_dir>/export/model<ext>``),
    atomically, with ``<file>.json`` describing inputs and outputs beside it. Returns the path.

    Raises:
        ConfigError: unknown format, or ONNX export without the ``onnx`` package.
        CheckpointError: the run has no usable weights.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    model, cfg = load_run_model(run_dir, "cpu")
    path = Path(out) if out else Path(run_dir) / "export" / f"model{FORMATS[fmt]}"
    make_dir(path.parent)
    module, inputs, outputs = export_module(model)
    args = example_inputs(cfg, len(inputs))
    if fmt == "safetensors":
        save_weights(path, model, {**model_metadata(cfg), "config": describe(cfg, model, inputs, outputs)})
    elif fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream, still loads
            traced = torch.jit.trace(module, args)
        with atomic_path(path) as tmp:
            traced.save(str(tmp))
    else:
        try:
            import onnx  # noqa: F401 - torch.onnx.export needs it
        except ImportError:
            raise ConfigError("ONNX export needs the onnx package: pip install 'relcomp[export]'") from None
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript-based exporter: a plain graph of standard ops, dynamic batch size.
            torch.onnx.export(module, args, str(tmp), input_names=inputs, output_names=outputs, dynamo=False,
                              dynamic_axes={n: {0: "batch"} for n in inputs + outputs}, opset_version=17)
    write_json_atomic(description_path(path), {**describe(cfg, model, inputs, outputs), "format": fmt,
                                                  "file": path.name})
    return path


def description_path(path: Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``: each exported file has its own description."""
    return path.with_name(path.name + ".json")


def input_description(cfg: TrainConfig) -> dict[str, Any]:
    """What one input of the exported model is, and how to make it."""
    if cfg.data.feature_dim is None:
        what = {"shape": ["batch", cfg.data.channels, cfg.data.image_size, cfg.data.image_size], "range": [0.0, 1.0]}
        if is_hf(cfg.backbone):
            prep = hf_preprocess(cfg.backbone)
            what["preprocessing"] = (f"RGB, resized to {prep.size} x {prep.size}, values in [0, 1]; the model "
                                     f"normalises by mean {list(prep.mean)} and std {list(prep.std)} itself")
        return {**what, "dtype": "float32"}
    d = cfg.data.feature_dim
    if cfg.data.encoder:
        prep = hf_preprocess(cfg.data.encoder)
        made = (f"the embedding of an image by the frozen {cfg.data.encoder} (pooler output, else mean of the last "
                f"hidden states) after RGB, resize to {prep.size} x {prep.size}, and normalisation by mean "
                f"{list(prep.mean)}, std {list(prep.std)}: relcomp.backbones.encode_images computes it")
    else:
        made = f"a feature vector as in the run's features file {cfg.data.features}"
    return {"shape": ["batch", d], "dtype": "float32", "made_by": made}


def describe(cfg: TrainConfig, model: RelcompModel, inputs: list[str], outputs: list[str]) -> dict[str, Any]:
    meaning = {"logits": "class logits (batch, K); softmax gives probabilities; classes are ordered, 0 the lowest",
               "score": "score (batch,); higher means greater",
               "logit": {"gt": "logit of P(A > B), shape (batch,); sigmoid gives the probability",
                         "ge": "logits (batch, 3) over [A < B, A > B, tie]; softmax gives the probabilities",
                         "same": "logit of P(A and B share a class), shape (batch,)"}[cfg.relation]}[outputs[0]]
    if model.classifies and cfg.relation == "same":
        meaning += " (learned from same/different comparisons: classes are clusters in no particular order)"
    return {"model": cfg.model, "num_classes": cfg.num_classes if model.classifies else None,
            "backbone": cfg.backbone, "inputs": {n: input_description(cfg) for n in inputs},
            "outputs": {outputs[0]: meaning}, "relcomp_format": "relcomp-export/1"}


def max_difference(run_dir: str | os.PathLike, path: str | os.PathLike, fmt: str, batch: int = 8) -> float | None:
    """Largest absolute difference between the exported model's outputs and the PyTorch model's on
    random inputs; None where the runtime to check with (onnxruntime) is not installed."""
    model, cfg = load_run_model(run_dir, "cpu")
    module, inputs, _ = export_module(model)
    args = example_inputs(cfg, len(inputs), batch=batch, seed=1)
    with torch.no_grad():
        want = module(*args).numpy()
    if fmt == "safetensors":
        fresh = build_run_model(cfg)
        load_weights(path, fresh)
        with torch.no_grad():
            got = export_module(fresh)[0](*args).numpy()
    elif fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            got = torch.jit.load(str(path))(*args).numpy()
    else:
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {n: a.numpy() for n, a in zip(inputs, args)})[0]
    return float(np.abs(got - want).max())
