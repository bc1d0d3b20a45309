"""Adaptive keyframes (vidreal.keyframes), chosen from the source alone, and their use by Translator."""
from __future__ import annotations

import cv2
import numpy as np

from vidreal.keyframes import KeyframeChooser

PROMPT = "a person"
CONTROLNETS = ("canny",)  # the ControlNets of the shared translator fixture (conftest.py)
KW = dict(num_inference_steps=2, guidance_scale=9.0, seed=3, progress=False, size=None)


def texture(h, w, seed):
    rng = np.random.default_rng(seed)
    big = np.kron(rng.integers(0, 255, (h // 8, w // 8, 3)), np.ones((8, 8, 1))).astype(np.float32)
    return cv2.GaussianBlur(big, (0, 0), 3).clip(0, 255).astype(np.uint8)


def pan(seed, n, h=64, step=1):
    """A texture sliding left by ``step`` px per frame (h x h frames)."""
    big = texture(h, h + step * n + 8, seed)
    return np.stack([big[:, step * t:step * t + h] for t in range(n)])


def keys(chooser, frames):
    return list(np.flatnonzero(chooser.choose(frames)))


def test_static_clip_gets_only_the_first_keyframe_and_gaps_stay_under_the_maximum():
    still = np.repeat(texture(64, 64, 0)[None], 12, axis=0)
    assert keys(KeyframeChooser("auto", max_gap=16), still) == [0]  # (the clip's runner adds the last)
    assert keys(KeyframeChooser("auto", max_gap=5), still) == [0, 5, 10]


def test_hard_cut_gets_a_keyframe_at_the_cut():
    clip = np.concatenate([pan(0, 8), pan(1, 8)])  # a slow pan, then another shot
    chosen = keys(KeyframeChooser("auto", max_gap=16), clip)
    assert chosen[0] == 0 and 8 in chosen and len(chosen) <= 4


def test_faster_motion_gets_more_keyframes_and_the_threshold_decides():
    slow, fast = pan(0, 24, step=1), pan(0, 24, step=4)
    n_slow, n_fast = len(keys(KeyframeChooser("auto"), slow)), len(keys(KeyframeChooser("auto"), fast))
    assert 1 <= n_slow < n_fast
    assert len(keys(KeyframeChooser("auto", threshold=0.5), fast)) < n_fast


def test_fixed_interval_and_chunk_invariance():
    clip = np.concatenate([pan(0, 8), pan(1, 9)])
    assert keys(KeyframeChooser(4), clip) == [0, 4, 8, 12, 16]
    assert keys(KeyframeChooser(None), clip[:3]) == [0, 1, 2]
    whole = keys(KeyframeChooser("auto", max_gap=6), clip)
    chooser = KeyframeChooser("auto", max_gap=6)
    pieces = np.concatenate([chooser.choose(clip[i:i + 3]) for i in range(0, len(clip), 3)])
    assert list(np.flatnonzero(pieces)) == whole


def test_auto_keyframes_in_translation(translator):
    """A static clip: the first and the last frame are denoised, the rest propagated (identical
    frames); a cut: a keyframe at the cut; chunking does not change the choice nor the output."""
    still = np.repeat(texture(32, 32, 0)[None], 6, axis=0)
    stats = {}
    out = translator(still, {"canny": still}, PROMPT, keyframe_every="auto", chunk_size=2, stats=stats, **KW)
    assert stats["keyframes"] == [0, 5] and stats["propagated"] == 4
    assert max(int(np.abs(out[i].astype(int) - out[0]).max()) for i in range(6)) <= 1
    cut = np.concatenate([pan(0, 4, h=32), pan(1, 4, h=32)])
    stats, again = {}, {}
    out = translator(cut, {"canny": cut}, PROMPT, keyframe_every="auto", chunk_size=2, stats=stats, **KW)
    assert 4 in stats["keyframes"] and stats["keyframes"][0] == 0 and stats["keyframes"][-1] == 7
    whole = translator(cut, {"canny": cut}, PROMPT, keyframe_every="auto", chunk_size=8, stats=again, **KW)
    assert again["keyframes"] == stats["keyframes"] and int(np.abs(whole.astype(int) - out).max()) <= 1


def test_detectors_run_on_keyframes_only_unless_something_reads_every_map(translator, samples, tmp_path, monkeypatch):
    """translate_file with K=4 on 10 frames: the canny detector sees the 4 keyframes (0, 4, 8 and the last) only;
    with a preview (which shows every frame's map) or refine (which denoises every frame) it sees all 10."""
    from vidreal.conditions import canny
    from vidreal.config import load_config
    from vidreal.translate import translate_file

    seen = []
    real = canny.CannyDetector.process

    def counting(self, frames, *args, **kwargs):
        seen.append(len(frames))
        return real(self, frames, *args, **kwargs)

    monkeypatch.setattr(canny.CannyDetector, "process", counting)
    clip = samples / "humanoid_walk_ground.mp4"
    config = load_config(controlnets={"canny": "unused"}, size=32, steps=1, keyframe_every=4, max_frames=10,
                         chunk_size=4)
    for extra, expected in (({}, 4), ({"preview": tmp_path / "side.mp4"}, 10),
                            ({"config": load_config(controlnets={"canny": "unused"}, size=32, steps=1, refine=0.3,
                                                    keyframe_every=4, max_frames=10, chunk_size=4)}, 10)):
        seen.clear()
        kwargs = {"config": config, **extra}
        result = translate_file(clip, tmp_path / f"out{expected}{len(extra)}.mp4", translator=translator,
                                progress=False, **kwargs)
        assert result.n_frames == 10 and sum(seen) == expected, (extra, seen)


def test_pose_detection_passes_keep_their_cadence_across_gaps(samples):
    """Conditions on keyframes only (every 3rd frame): the person detector runs where its cadence
    (every 8 frames) falls due, at the first keyframe after a due frame, not at every keyframe."""
    from vidreal.conditions.pose import PoseDetector
    from vidreal.io import read_video

    frames = read_video(samples / "humanoid_walk_ground.mp4").frames[:19]
    with PoseDetector(detect_every=8) as det:
        real, passes = det._people, []

        class Counting:
            def __call__(self, frame):
                passes.append(det._index)
                return real(frame)

            def close(self):
                real.close()

        det._people = Counting()
        for key in range(0, 19, 3):
            det.skip(key - det._index)
            det.process(frames[key:key + 1])
        assert not det.multi and passes == [0, 9, 18]
