"""2-process CPU DDP (gloo): metrics are synchronised and the critic stays frozen on every rank.

The run happens in a subprocess (tests/ddp_regression_worker.py) so pytest itself is never forked.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.regression_helpers import REPO_ROOT, critic_checkpoint


@pytest.mark.slow
def test_two_process_cpu_ddp_syncs_metrics_and_keeps_the_critic_frozen(tmp_path):
    critic = critic_checkpoint(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "ddp_regression_worker.py"), str(tmp_path), str(critic)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["global_step"] for r in ranks] == [3, 3]

    for report in ranks:  # the critic is frozen on every rank
        assert report["critic_after"] == report["critic_before"]
        assert not report["critic_training"] and not report["critic_requires_grad"]
    assert ranks[0]["critic_before"] == ranks[1]["critic_before"]
    # Gradients were all-reduced: both replicas of the encoder are still identical.
    assert ranks[0]["encoder_after"] == pytest.approx(ranks[1]["encoder_after"], rel=1e-9)

    local = [r["local_landmark_error"][0] for r in ranks]
    assert local[0] != pytest.approx(local[1]), "ranks should have validated different samples"
    for report in ranks:  # every rank logs the mean over both ranks
        assert report["synced_landmark_error"] == pytest.approx(sum(local) / 2, rel=1e-5)
