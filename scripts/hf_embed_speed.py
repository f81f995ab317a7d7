"""What a frozen `--backbone hf:` costs on this machine: images per second to embed, per architecture.

    python scripts/hf_embed_speed.py [--images 64]

This machine cannot download weights, so each model is built with the published architecture's
config and *random* weights: the arithmetic, and so the speed, is the same as the pretrained
model's. It goes through relcomp's own path (`relcomp.backbones.encode_images`, fp32, batch 32,
cache off) on uint8 RGB images already at the model's input size. Writes
docs/results/hf-embed-speed.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers as tf

from relcomp.backbones import encode_images
from relcomp.lab.common import machine_info
from relcomp.utils import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]

ARCHITECTURES = {  # name: (model class, config, input size) as published
    "facebook/dinov2-small": (tf.Dinov2Model, tf.Dinov2Config(hidden_size=384, num_hidden_layers=12,
                                                              num_attention_heads=6, patch_size=14), 224),
    "facebook/dinov2-base": (tf.Dinov2Model, tf.Dinov2Config(hidden_size=768, num_hidden_layers=12,
                                                             num_attention_heads=12, patch_size=14), 224),
    "google/vit-base-patch16-224": (tf.ViTModel, tf.ViTConfig(), 224),
    "openai/clip-vit-base-patch32 (vision)": (tf.CLIPVisionModel, tf.CLIPVisionConfig(patch_size=32), 224),
    "microsoft/resnet-50": (tf.ResNetModel, tf.ResNetConfig(), 224),
    "facebook/convnext-tiny-224": (tf.ConvNextModel, tf.ConvNextConfig(), 224),
}


def measure(name: str, n_images: int, tmp: Path) -> dict:
    cls, cfg, size = ARCHITECTURES[name]
    folder = tmp / name.split()[0].replace("/", "--")
    torch.manual_seed(0)
    cls(cfg).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"height": size, "width": size}}))
    images = np.random.default_rng(0).integers(0, 256, (n_images, 3, size, size), dtype=np.uint8)
    encode_images(f"hf:{folder}", images[:4], cache=False)  # warm-up: allocator, kernels
    t = time.perf_counter()
    out = encode_images(f"hf:{folder}", images, cache=False)
    dt = time.perf_counter() - t
    params = sum(p.numel() for p in cls(cfg).parameters())
    return {"input": f"{size}x{size} RGB", "dim": int(out.shape[1]), "params_m": round(params / 1e6, 1),
            "images": n_images, "seconds": round(dt, 2), "images_per_s": round(n_images / dt, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--results", default=str(ROOT / "docs" / "results" / "hf-embed-speed.json"))
    args = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ARCHITECTURES:
            rows[name] = measure(name, args.images, Path(tmp))
            print(f"{name:<40} {rows[name]['images_per_s']:>7.1f} images/s  (D = {rows[name]['dim']}, "
                  f"{rows[name]['params_m']}M parameters)", flush=True)
    write_json_atomic(Path(args.results), {
        "study": "hf-embed-speed", "command": "python scripts/hf_embed_speed.py", "weights": "random (same arithmetic)",
        "precision": "fp32", "batch": 32, "machine": {**machine_info(), "transformers": tf.__version__},
        "date": time.strftime("%Y-%m-%d"), "models": rows})


if __name__ == "__main__":
    main()
