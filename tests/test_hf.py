"""``--backbone hf:``: a tiny, randomly initialised transformers ViT saved to a temp folder stands in
for DINOv2 and friends. Nothing is downloaded."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_user_data
from relcomp.cli import main

transformers = pytest.importorskip("transformers")
pytestmark = [pytest.mark.mnist]


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-vit")
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64)
    transformers.ViTModel(cfg).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"height": 32, "width": 32}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    return folder


@pytest.fixture(scope="module")
def photos(mnist, tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    return write_user_data(root, mnist.test.images[:200], mnist.test.labels[:200], 2000, n_labelled=200)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RELCOMP_DATA_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "embeddings"


def test_preprocessing_and_embedding(tiny_vit):
    from relcomp.backbones import HFBackbone, hf_preprocess

    prep = hf_preprocess(f"hf:{tiny_vit}")
    assert (prep.size, prep.mean, prep.std) == (32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    model = HFBackbone(f"hf:{tiny_vit}").eval()
    import torch

    x = torch.rand(2, 1, 28, 28)  # grayscale of another size: repeated to RGB and resized
    assert model(x).shape == (2, model.dim) and model.dim == 32
    assert torch.allclose(model(x), model(x.expand(-1, 3, -1, -1)), atol=1e-6)


def test_embedding_cache(tiny_vit, cache_dir, monkeypatch):
    """The second encoding of the same images reads the cache (the model is never built); changed
    images or another model miss it."""
    import relcomp.backbones as bb

    images = np.random.default_rng(0).integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    first = bb.encode_images(f"hf:{tiny_vit}", images)
    assert len(list(cache_dir.glob("*.npy"))) == 1

    def refuse(*a, **k):
        raise AssertionError("the model ran although the embeddings were cached")

    with monkeypatch.context() as m:
        m.setattr(bb, "HFBackbone", refuse)
        np.testing.assert_array_equal(bb.encode_images(f"hf:{tiny_vit}", images), first)
        assert bb.hf_width(f"hf:{tiny_vit}") == 32  # a config's resolve reads D from the cache too
    changed = images.copy()
    changed[0, 0, 0, 0] ^= 1
    second = bb.encode_images(f"hf:{tiny_vit}", changed)
    assert len(list(cache_dir.glob("*.npy"))) == 2 and np.allclose(second[1:], first[1:], atol=1e-5)


@pytest.mark.slow
def test_frozen_backbone_end_to_end(tiny_vit, photos, cache_dir, tmp_path, capsys):
    run = tmp_path / "run"
    train = ["train", "weak", "--images", str(photos["images"]), "--comparisons", str(photos["comparisons"]),
             "--labels", str(photos["labels"]), "--backbone", f"hf:{tiny_vit}", "--samples", "3k"]
    assert main([*train, "--out", str(run), "--quiet"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"]["image_size"] == 32 and cfg["data"]["channels"] == 3 and cfg["data"]["feature_dim"] == 32
    assert cfg["data"]["encoder"] == f"hf:{tiny_vit}" and len(list(cache_dir.glob("*.npy"))) == 1
    capsys.readouterr()
    assert main([*train, "--out", str(tmp_path / "again")]) == 0  # progress on: it says where embeddings came from
    assert "read from the cache" in capsys.readouterr().err
    first = photos["images"] / "a" / "img00000.png"
    assert main(["predict", str(run), str(first), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["probabilities"]) == 10
    assert main(["rank", str(run), str(photos["images"]), "--out", str(tmp_path / "rank")]) == 0
    assert (tmp_path / "rank" / "ranking.png").exists()
    assert len((tmp_path / "rank" / "ranking.csv").read_text().splitlines()) == 201
    for fmt in ("safetensors", "onnx"):
        assert main(["export", str(run), "--format", fmt]) == 0
        desc = json.loads((run / "export" / f"model.{fmt}.json").read_text())
        assert desc["inputs"]["x"]["shape"] == ["batch", 32] and "frozen hf:" in desc["inputs"]["x"]["made_by"]
    out = capsys.readouterr().out
    assert out.count("max |difference| vs PyTorch") == 2
    assert main(["embed", "--with", f"hf:{tiny_vit}", "--images", str(photos["images"]),
                 "--out", str(tmp_path / "f.parquet"), "--quiet"]) == 0
    from relcomp.data.features import load_features

    fs = load_features(tmp_path / "f.parquet")
    assert fs.images.shape == (200, 32) and fs.names[0] == "a/img00000.png"


@pytest.mark.slow
def test_finetune_and_onnx(tiny_vit, photos, cache_dir, tmp_path, capsys):
    run = tmp_path / "ft"
    assert main(["train", "siamese", "--images", str(photos["images"]), "--comparisons", str(photos["comparisons"]),
                 "--backbone", f"hf:{tiny_vit}", "--finetune", "--samples", "512", "--out", str(run), "--quiet",
                 "--no-eval"]) == 0
    from relcomp.checkpoint import read_weights

    weights, _ = read_weights(run / "best.safetensors")
    assert any(k.startswith("backbone.0.model.") for k in weights)  # the ViT is part of the trained model
    assert not list(cache_dir.glob("*.npy"))                      # and nothing was embedded ahead
    capsys.readouterr()
    assert main(["export", str(run), "--format", "onnx"]) == 0
    line = capsys.readouterr().out
    diff = float(line.split("max |difference| vs PyTorch ")[1].split()[0])
    assert diff < 1e-4, line
    desc = json.loads((run / "export" / "model.onnx.json").read_text())
    assert desc["inputs"]["a"]["shape"] == ["batch", 3, 32, 32] and "normalises" in desc["inputs"]["a"]["preprocessing"]


def test_hf_errors(photos, tmp_path, monkeypatch, capsys):
    base = ["train", "weak", "--images", str(photos["images"]), "--comparisons", str(photos["comparisons"]),
            "--classes", "10", "--samples", "256", "--quiet", "--out", str(tmp_path / "never")]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main([*base, "--backbone", "hf:nobody/not-a-cached-model"]) == 2
    err = capsys.readouterr().err
    assert "no model of that id in the local Hugging Face cache" in err and "hf download nobody/not-a-cached-model" in err
    assert main([*base, "--backbone", "hf:./no-such-folder"]) == 2
    assert f"no folder {tmp_path.cwd() / 'no-such-folder'} here" in capsys.readouterr().err
    assert main([*base, "--backbone", "hf:"]) == 2
    assert "needs a model id or a folder" in capsys.readouterr().err
    assert main([*base, "--backbone", "resnet"]) == 2
    assert "--backbone must be one of" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)
    assert main([*base, "--backbone", f"hf:{tmp_path}"]) == 2
    assert "pip install 'relcomp[hf]'" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_a_relative_folder_is_recorded_as_an_absolute_path(tiny_vit, photos, cache_dir, monkeypatch):
    """A run made with --backbone hf:FOLDER from one directory works from any other."""
    from relcomp.config import TrainConfig, resolve
    from relcomp.data.sources import UserSource

    monkeypatch.chdir(tiny_vit.parent)
    cfg = TrainConfig(model="weak", backbone=f"hf:{tiny_vit.name}",
                      data=UserSource(images=str(photos["images"]), comparisons=str(photos["comparisons"])))
    assert resolve(cfg).cfg.backbone == f"hf:{tiny_vit}"
