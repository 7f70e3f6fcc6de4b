"""regressor.training.critic_data: the critic's pools follow their ``synthetic`` argument (overrides or a preset)."""
from __future__ import annotations

import pytest
import torch

from regressor.face_model import build_face_model
from regressor.synthetic.config import SyntheticConfig
from regressor.synthetic.generator import SyntheticFaceGenerator
from regressor.synthetic.splits import SPLIT_SEEDS
from regressor.training.critic_data import SyntheticPool, synthetic_config

SIZE = 32


def test_a_preset_name_renders_the_same_faces_as_its_config():
    face_model = build_face_model()
    pool = SyntheticPool(face_model, 2, image_size=SIZE, split="critic_val", synthetic="model_only")
    seeds = [SPLIT_SEEDS["critic_val"] + i for i in range(2)]
    expected = SyntheticFaceGenerator(face_model, SIZE, SyntheticConfig.model_only()).generate(seeds)
    assert torch.allclose(pool.images, expected.image.float())
    assert not torch.allclose(pool.images, SyntheticFaceGenerator(face_model, SIZE, SyntheticConfig()).generate(seeds).image)


def test_overrides_and_presets_are_checked_before_any_generation():
    assert synthetic_config(None) == SyntheticConfig()
    assert synthetic_config({"shape_scale_range": [0.2, 1.4]}).shape_scale_range == (0.2, 1.4)
    assert synthetic_config("default-jpeg").jpeg is False
    with pytest.raises(ValueError, match="synthetic preset"):
        SyntheticPool(build_face_model(), 2, image_size=SIZE, synthetic="model_only+glitter")
    with pytest.raises(KeyError, match="shininess"):
        SyntheticPool(build_face_model(), 2, image_size=SIZE, synthetic={"shininess": 1.0})
