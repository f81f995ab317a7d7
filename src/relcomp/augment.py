"""Label-preserving image augmentation written on tensors (torchvision cannot be used beside this
torch): ``--augment shift|affine|elastic``.

- ``shift``: a random translation of up to 2 pixels (at 28 x 28; scaled with the image) each way;
- ``affine``: shift, a rotation of up to 10 degrees and a scaling of 0.9-1.1;
- ``elastic``: affine plus a smooth random displacement field of about 1 pixel.

Every image of a batch gets its own transform, drawn from torch's global generator (seeded by the
run's seed and saved in its checkpoints, so runs stay reproducible and resumable).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTS = ("off", "shift", "affine", "elastic")


def augment(x: torch.Tensor, mode: str) -> torch.Tensor:
    """A transformed copy of a float image batch (B, C, H, W); ``off`` returns ``x`` itself."""
    if mode == "off":
        return x
    b, _, h, w = x.shape
    dev = x.device
    shift = 2.0 / 14.0 * (torch.rand(b, 2, device=dev) * 2 - 1)  # up to 2 of 28 pixels, in [-1, 1] units
    angle = torch.zeros(b, device=dev)
    scale = torch.ones(b, device=dev)
    if mode in ("affine", "elastic"):
        angle = math.radians(10) * (torch.rand(b, device=dev) * 2 - 1)
        scale = 0.9 + 0.2 * torch.rand(b, device=dev)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if mode == "elastic":
        coarse = torch.randn(b, 2, 4, 4, device=dev) * (2.0 / max(h, w))  # ~1 pixel, smooth over a quarter image
        grid = grid + F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
