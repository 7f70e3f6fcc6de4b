"""``none``: no loader for this stage (validation or test switched off)."""
from __future__ import annotations

from regressor.training.sources import DataSource, register_data_source


@register_data_source("none")
class NoSource(DataSource):
    stages = ("val", "test")

    def build(self, data, stage: str) -> None:
        return None
