"""``make demo``: the project's main job, grown issue by issue.

For now: build the built-in face model (generated and cached on first use), print a summary
and export example .obj files to ``outputs/demo/model/``.
"""
from __future__ import annotations

import sys
import time

from regressor.face_model import FaceModel
from regressor.face_model.cli import export_obj

OUTPUT_DIR = "outputs/demo"


def main() -> int:
    start = time.perf_counter()
    model = FaceModel.builtin()
    print(model.summary())
    print(f"(model ready in {time.perf_counter() - start:.1f} s)")
    for path in export_obj(model, f"{OUTPUT_DIR}/model"):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
