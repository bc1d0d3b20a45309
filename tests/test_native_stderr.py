"""mediapipe's native log lines stay off stderr, and no other thread's stderr line is lost meanwhile."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import logging
import numpy as np
from vidreal import logs
from vidreal.conditions import DetectorSet
from vidreal.conditions.people import make_person_detector
from vidreal.io import read_video
logs.configure(0)
log = logging.getLogger("vidreal.test")
make_person_detector("blazepose")(read_video("samples/humanoid_pair_ground.mp4").frames[0])
with DetectorSet(("canny", "pose"), {}) as detectors:  # nobody in black frames: every call kept quiet
    future = detectors._threads["pose"].submit(detectors.detectors["pose"], np.zeros((8, 64, 64, 3), np.uint8))
    i = 0
    while not future.done() or i < 100:
        log.warning("line %d", i)
        i += 1
    future.result()
print(i)
"""


def test_other_threads_lines_survive_and_native_lines_are_gone():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    written = int(done.stdout.split()[-1])
    lines = done.stderr.splitlines()
    assert [line for line in lines if line.startswith("warning: line")] == [f"warning: line {i}" for i in range(written)]
    assert [line for line in lines if not line.startswith("warning: line")] == []  # no W0000 / INFO: lines
