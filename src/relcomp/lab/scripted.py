"""The README tables of the two studies run by scripts rather than profiles: ``python
scripts/features_mnist.py`` (kind ``features-mnist``: the weak model on images against an MLP on
feature vectors) and ``python scripts/hf_embed_speed.py`` (kind ``hf-embed-speed``: the cost of a
frozen Hugging Face backbone). Their results files name their kind under ``study``."""
from __future__ import annotations

from .common import md_table


def _arm_label(arm: str, res: dict) -> str:
    if arm.startswith("weak MLP on "):
        name = arm.removeprefix("weak MLP on ")
        dim = res.get("embedding_cost", {}).get(name, {}).get("dim")
        what = {"pixels": "raw pixels", "siamese-embeddings": "a Siamese CNN's embeddings"}.get(name, name)
        return f"{what} ({dim}-d), MLP" if dim else f"{what}, MLP"
    return "images (the paper's CNN)" if "images" in arm else arm


def features_markdown(res: dict, figure_dir: str = "figures") -> str:
    """The features study's table: classification (mean ± std, and per seed), relational, training time."""
    rows = [[_arm_label(arm, res), f"{100 * c['cls']['mean']:.1f} ± {100 * c['cls']['std']:.1f}%",
             ", ".join(f"{100 * v:.1f}" for v in c["cls"]["values"]), f"{100 * c['rel']['mean']:.1f}%",
             f"{c['train_time_s']['mean']:.0f} s"] for arm, c in res["arms"].items()]
    return "\n".join(md_table(["weak model on", "classification", "per seed", "relational", "training per run"], rows))


def embed_speed_markdown(res: dict, figure_dir: str = "figures") -> str:
    """The embedding-cost table: each architecture's output size, parameters and images per second."""
    rows = [[name, str(m["dim"]), f"{m['params_m']}M", f"{m['images_per_s']:.1f}"]
            for name, m in sorted(res["models"].items())]
    return "\n".join(md_table(["model (architecture)", "D", "parameters", "images/s"], rows))
