"""Shared helpers for the regressor tests: tiny configs, tiny critics, tiny batches.

``shrink_config`` walks any LightningCLI yaml (regressor, critic, ...) and overrides the
sizes that make a run slow, by key name, so configs added later are covered automatically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_ROOT = REPO_ROOT / "configs"
QUICKSTART = CONFIG_ROOT / "regressor" / "quickstart.yaml"
SHIPPED_CRITIC = REPO_ROOT / "checkpoints" / "critic.pt"
TINY_SIZE = 32
TINY_BACKBONE = "mobilenetv3_small_050"
SMALL_BACKBONES = {"mobilenetv3_small_050", "mobilenetv3_small_075", "mobilenetv3_small_100", "resnet10t"}


def lightning_configs() -> list[Path]:
    """Every yaml under configs/ that LightningCLI runs (has ``model`` and ``trainer`` sections)."""
    found = []
    for path in sorted(CONFIG_ROOT.rglob("*.yaml")):
        content = yaml.safe_load(path.read_text()) or {}
        if isinstance(content, dict) and "model" in content and "trainer" in content:
            found.append(path)
    return found


def fitting_configs() -> list[Path]:
    """Every yaml under configs/fitting/, and any other with fitting ``stages`` (``regressor optimize``
    configs, not LightningCLI ones)."""
    found = set((CONFIG_ROOT / "fitting").rglob("*.yaml"))
    for path in CONFIG_ROOT.rglob("*.yaml"):
        content = yaml.safe_load(path.read_text()) or {}
        if isinstance(content, dict) and "stages" in content and "trainer" not in content:
            found.add(path)
    return sorted(found)


def shrink_fitting_config(path: Path, out_dir: Path, critic: Path) -> Path:
    """Tiny copy of a fitting config: small images, one step per stage."""
    from regressor.fitting_config import load_config

    config = _shrink(load_config(path), "", out_dir, critic)  # effective config: `base` resolved
    for stage in config.get("stages", []):
        stage["steps"] = 1
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"tiny_fitting_{path.name}"
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def tiny_critic_checkpoint(path: Path) -> Path:
    """A random, small ``ShapeCritic`` checkpoint (stands in where no shipped critic exists)."""
    from regressor.models.critic import ShapeCritic

    torch.manual_seed(0)
    critic = ShapeCritic(backbone="resnet10t", image_size=TINY_SIZE, backbone_kwargs={"channels": [8, 16, 32, 64], "stem_width": 8})
    critic.save_checkpoint(path, {"note": "random tiny critic for tests"})
    return path


def tiny_fit_error_model(path: Path) -> Path:
    """A fit-error model of the built-in face model's sizes (fits = half the truth + noise), estimated from 40 faces."""
    from regressor.critic.fit_error import FitErrorModel
    from regressor.face_model import build_face_model

    generator = torch.Generator().manual_seed(0)
    truth = build_face_model().zero_params(40)
    truth.shape = torch.randn(truth.shape.shape, generator=generator)
    fit = truth.clone()
    fit.shape = 0.5 * truth.shape + 0.1 * torch.randn(truth.shape.shape, generator=generator)
    FitErrorModel.estimate(truth, fit).save(path)
    return path


def critic_checkpoint(tmp_path: Path) -> Path:
    """The shipped critic if it exists, else a tiny random one in ``tmp_path``."""
    return SHIPPED_CRITIC if SHIPPED_CRITIC.is_file() else tiny_critic_checkpoint(tmp_path / "tiny_critic.pt")


def _shrink(node: Any, parent_key: str, out_dir: Path, critic: Path) -> Any:
    if isinstance(node, list):
        return [_shrink(item, parent_key, out_dir, critic) for item in node]
    if not isinstance(node, dict):
        return node
    result = {}
    for key, value in node.items():
        value = _shrink(value, key, out_dir, critic)
        if key in ("image_size", "render_size", "fit_image_size") and isinstance(value, int):
            value = TINY_SIZE
        elif key == "batch_size" and isinstance(value, int):
            value = 2
        elif key == "num_workers":
            value = 0
        elif key in ("num_samples",) or (key.endswith("_samples") and isinstance(value, int)):
            value = min(value, 4) if isinstance(value, int) else value
        elif key == "num_negatives" and isinstance(value, int):
            value = min(value, 2)
        elif key == "warmup_steps" and isinstance(value, int):
            value = 0
        elif key in ("every_n_steps", "every_n_train_steps", "log_images_every_n_steps", "log_every_n_steps") and isinstance(value, int):
            value = 1
        elif key in ("save_dir", "dirpath", "default_root_dir", "output_dir", "fit_cache", "validation_fits") and value:
            value = str(out_dir / key)
        elif key == "checkpoint" and node.get("name") == "perceptual_shape":
            value = str(critic)
        elif key == "metric_critic" and value is not None:
            value = str(critic)
        elif key == "init_checkpoint" and value:
            value = None  # a shipped 64 px critic cannot initialise the tiny one (tests/test_critic_ascent.py covers it)
        elif key == "fit_error_model" and value:
            value = str(tiny_fit_error_model(out_dir / "fit_error_model.pt"))
        elif key in ("val_gate_faces", "val_batch_size") and isinstance(value, int):
            value = min(value, 2)
        elif parent_key in ("ascent", "gradient") and key in (
                "faces_per_step", "max_steps", "ascent_steps", "negatives") and isinstance(value, int):
            value = min(value, 2)
        result[key] = value
    if result.get("backbone") and result["backbone"] not in SMALL_BACKBONES:
        if "backbone_kwargs" in result:  # a critic-style constructor that passes timm kwargs through
            result["backbone"] = "resnet10t"
            result["backbone_kwargs"] = {"channels": [8, 16, 32, 64], "stem_width": 8}
        else:  # resnet10t, not a MobileNet: the critic's head reads timm's num_features
            result["backbone"] = "resnet10t"
    return result


def shrink_config(path: Path, out_dir: Path, critic: Path, max_steps: int = 2) -> Path:
    """Write a tiny copy of the LightningCLI config ``path`` into ``out_dir``; returns its path."""
    config = yaml.safe_load(path.read_text())
    config = _shrink(config, "", out_dir, critic)
    trainer = config.setdefault("trainer", {})
    trainer.update(
        accelerator="cpu", devices=1, strategy="auto", num_nodes=1, precision="32-true",
        max_steps=max_steps, max_epochs=None, max_time=None, limit_train_batches=2, limit_val_batches=1,
        limit_test_batches=1, limit_predict_batches=2, val_check_interval=2, check_val_every_n_epoch=None,
        num_sanity_val_steps=0, enable_progress_bar=False, default_root_dir=str(out_dir / "root"),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    data = config.get("data", {}).get("init_args", {})
    if data.get("train_source") == "pool":  # a tiny pool in place of the config's pre-rendered one
        from regressor.synthetic.pool import PoolSpec, write_pool

        pool = out_dir / "pool"
        write_pool(PoolSpec(out=pool, num=4, image_size=data.get("image_size", TINY_SIZE), workers=1), show_progress=False)
        data["pool_dir"] = str(pool)
    target = out_dir / f"tiny_{path.parent.name}_{path.name}"
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def random_batch(batch_size: int = 2, size: int = TINY_SIZE, seed: int = 0) -> dict[str, Any]:
    """A batch dict with random images and landmarks (no ground-truth geometry)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(batch_size, 3, size, size, generator=generator),
        "landmarks": torch.rand(batch_size, 68, 2, generator=generator) * size,
        "landmarks_valid": torch.ones(batch_size, 68),
        "mask": torch.ones(batch_size, 1, size, size),
        "index": torch.arange(batch_size),
    }


class BatchDataset(torch.utils.data.Dataset):
    """Serves the samples of one fixed batch dict (for a DataLoader in tests)."""

    def __init__(self, batch: dict[str, Any]) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return len(self.batch["image"])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {key: value[index] for key, value in self.batch.items()}


def loader(batch: dict[str, Any], batch_size: int = 2) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(BatchDataset(batch), batch_size=batch_size)


def tiny_module_kwargs(**overrides: Any) -> dict[str, Any]:
    """``RegressorModule`` arguments of a tiny regressor (typed components, built-in face model)."""
    from regressor.face_model import build_face_model
    from regressor.models.encoder import FaceEncoder

    sizes = dict(n_shape=10, n_expression=5, n_albedo=4)
    kwargs = dict(encoder=FaceEncoder(TINY_BACKBONE, **sizes), face_model=build_face_model(**sizes), image_size=TINY_SIZE)
    kwargs.update(overrides)
    return kwargs
