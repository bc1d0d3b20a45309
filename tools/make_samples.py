"""Render vidreal's small synthetic sample media, offline, with pybullet's CPU renderer.

    python tools/make_samples.py [OUT_DIR]          # default: samples/ beside tools/

Needs ``pip install pybullet`` (the ``samples`` extra). What it writes (~1 MB in all):

* ``humanoid_{walk,punch}_{ground,air}.mp4`` - 48 frames, 256x256, 24 fps, H.264: pybullet's
  DeepMimic humanoid (dressed: skin, shirt, trousers, shoes, hair and a face, so pose detectors
  find it) playing the DeepMimic motion clips, seen from the ground (a tracking camera at
  chest height) and from the air (looking down at about 55 degrees).
* ``humanoid_pair_{ground,air}.mp4`` - 48 frames, 384x256: two dressed humanoids side by side
  (walking in place and punching, never crossing), from a still camera at chest height and from
  high above (small people seen from above), for multi-person pose.
* ``humanoid_walk_audio.mp4`` - the ground walk with a 2 s AAC audio track (a synthesized chirp
  with footstep-like clicks), to exercise audio passthrough.
* ``objects/<class>/<class>_<n>.png`` - 256x256 renders of single objects on plain backgrounds,
  VisDA-2017-style (classes car, bicycle, person, plant), and ``objects/image_list.txt`` with
  ``relative/path label`` lines; a label indexes the sorted class names (bicycle 0, car 1, person 2,
  plant 3), as the class folders give them, so the list trains as it is.

Deterministic: the renderer, x264 and the AAC encoder give the same bytes on every run.
Everything is written through ``vidreal.io.write_video``.
"""
from __future__ import annotations

import json
import math
import sys
import tempfile
import wave
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import numpy as np
import pybullet as pb
import pybullet_data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vidreal.io import write_video  # noqa: E402

SIZE = 256
FPS = 24
N_FRAMES = 48
SCALE = 0.25  # DeepMimic loads its humanoid at a quarter of the URDF's units

SKIN = (0.92, 0.74, 0.62)
HAIR = (0.22, 0.13, 0.07)
OUTFITS = {  # shirt, trousers, shoes
    "walk": ((0.72, 0.14, 0.14), (0.16, 0.22, 0.42), (0.12, 0.10, 0.08)),
    "punch": ((0.10, 0.50, 0.48), (0.25, 0.25, 0.27), (0.85, 0.85, 0.82)),
}
# Pose layout of a DeepMimic motion frame: (joint, first column, size); quaternions are w, x, y, z.
MOTION_LAYOUT = [("chest", 8, 4), ("neck", 12, 4), ("right_hip", 16, 4), ("right_knee", 20, 1),
                 ("right_ankle", 21, 4), ("right_shoulder", 25, 4), ("right_elbow", 29, 1),
                 ("left_hip", 30, 4), ("left_knee", 34, 1), ("left_ankle", 35, 4),
                 ("left_shoulder", 39, 4), ("left_elbow", 43, 1)]


# ------------------------------------------------------------------------------------ humanoid


def dressed_humanoid_urdf(outfit: str, folder: Path) -> Path:
    """pybullet's DeepMimic humanoid.urdf (collision shapes only) with coloured visuals added:
    clothes, a torso, shoulders, hips, a neck, hair and a face (eyes, nose, mouth)."""
    shirt, trousers, shoes = OUTFITS[outfit]
    source = Path(pybullet_data.getDataPath()) / "humanoid" / "humanoid.urdf"
    tree = ET.ElementTree(ET.fromstring(source.read_bytes().rstrip(b"\0\r\n ")))  # ends in a NUL
    colours = {"root": trousers, "chest": shirt, "neck": SKIN, "right_hip": trousers,
               "left_hip": trousers, "right_knee": trousers, "left_knee": trousers,
               "right_ankle": shoes, "left_ankle": shoes, "right_shoulder": shirt,
               "left_shoulder": shirt, "right_elbow": SKIN, "left_elbow": SKIN,
               "right_wrist": SKIN, "left_wrist": SKIN}
    up = "-1.5708 0 0"  # turns a capsule/cylinder (z axis) upright (y axis)
    extras = {  # link -> [(xyz, rpy, geometry tag, geometry attributes, colour)]
        "root": [("0 0.2 0", "0 0 0", "capsule", {"length": "0.45", "radius": "0.3"}, trousers)],
        "chest": [("0 0.12 0", up, "capsule", {"length": "0.75", "radius": "0.36"}, shirt),
                  ("-0.05 0.85 0", "0 0 0", "capsule", {"length": "1.1", "radius": "0.2"}, shirt)],
        "neck": [("0 0.12 0", up, "cylinder", {"length": "0.35", "radius": "0.15"}, SKIN),
                 ("-0.09 0.82 0", "0 0 0", "sphere", {"radius": "0.4"}, HAIR),
                 ("0.35 0.78 0.14", "0 0 0", "sphere", {"radius": "0.064"}, (1, 1, 1)),
                 ("0.35 0.78 -0.14", "0 0 0", "sphere", {"radius": "0.064"}, (1, 1, 1)),
                 ("0.41 0.78 0.14", "0 0 0", "sphere", {"radius": "0.036"}, (0.1, 0.07, 0.05)),
                 ("0.41 0.78 -0.14", "0 0 0", "sphere", {"radius": "0.036"}, (0.1, 0.07, 0.05)),
                 ("0.39 0.66 0", "0 0 0", "sphere", {"radius": "0.072"}, (0.88, 0.66, 0.55)),
                 ("0.34 0.52 0", "0 0 0", "sphere", {"radius": "0.08"}, (0.6, 0.25, 0.25))],
    }
    for link in tree.getroot().iter("link"):
        name = link.get("name")
        collision = link.find("collision")
        if collision is not None:
            origin, geometry = collision.find("origin"), collision.find("geometry")
            shape = geometry[0]
            _add_visual(link, origin.get("xyz"), origin.get("rpy"), shape.tag, dict(shape.attrib),
                        colours.get(name, SKIN))
        for xyz, rpy, tag, attrib, colour in extras.get(name, []):
            _add_visual(link, xyz, rpy, tag, attrib, colour)
    path = folder / f"humanoid_{outfit}.urdf"
    tree.write(path)
    return path


def _add_visual(link, xyz, rpy, tag, attrib, colour) -> None:
    visual = ET.SubElement(link, "visual")
    ET.SubElement(visual, "origin", {"xyz": xyz, "rpy": rpy})
    ET.SubElement(ET.SubElement(visual, "geometry"), tag, attrib)
    material = ET.SubElement(visual, "material", {"name": "c" + "_".join(f"{c:.2f}" for c in colour)})
    ET.SubElement(material, "color", {"rgba": " ".join(f"{c:g}" for c in (*colour, 1))})


def _quat(wxyz) -> list[float]:
    w, x, y, z = wxyz
    return [x, y, z, w]


def motion_poses(name: str, n_frames: int, fps: int):
    """Sample a DeepMimic clip at ``fps``: (root position, root xyzw, {joint: value}) per frame.

    Frames are interpolated (linear positions, slerped rotations); a looping clip continues
    with its per-cycle root displacement, as DeepMimic plays it."""
    path = Path(pybullet_data.getDataPath()) / "data" / "motions" / f"humanoid3d_{name}.txt"
    frames = json.loads(path.read_text())["Frames"]
    step = frames[0][0]
    cycle = step * (len(frames) - 1)
    shift = np.array(frames[-1][1:4]) - np.array(frames[0][1:4])
    shift[1] = 0.0
    poses = []
    for i in range(n_frames):
        laps, t = divmod(i / fps, cycle)
        k = min(int(t / step), len(frames) - 2)
        a, b, u = frames[k], frames[k + 1], t / step - k
        position = (1 - u) * np.array(a[1:4]) + u * np.array(b[1:4]) + laps * shift
        orientation = pb.getQuaternionSlerp(_quat(a[4:8]), _quat(b[4:8]), u)
        joints = {}
        for joint, col, size in MOTION_LAYOUT:
            if size == 4:
                joints[joint] = pb.getQuaternionSlerp(_quat(a[col:col + 4]), _quat(b[col:col + 4]), u)
            else:
                joints[joint] = [(1 - u) * a[col] + u * b[col]]
        poses.append((position, orientation, joints))
    return poses


def ground_texture(kind: str, folder: Path) -> Path:
    """A seeded 64x64 texture tile (one tile per metre on pybullet's plane)."""
    rng = np.random.default_rng(7)
    noise = rng.integers(-14, 15, (64, 64, 1))
    if kind == "pavement":
        tile = np.full((64, 64, 3), (128, 124, 116)) + noise
        tile[:2, :] = tile[:, :2] = (92, 90, 86)
    else:  # grass
        tile = np.full((64, 64, 3), (76, 118, 56)) + noise * np.array([1, 1.4, 0.8])
    path = folder / f"{kind}.png"
    write_video(path, np.clip(tile, 0, 255).astype(np.uint8)[None])
    return path


def sky(height: int) -> np.ndarray:
    top, horizon = np.array([120, 170, 228]), np.array([214, 228, 242])
    return np.linspace(top, horizon, height)[:, None, :].astype(np.uint8)


def render(view, size, background: np.ndarray, fov: float = 45.0) -> np.ndarray:
    """ER_TINY_RENDERER frame, uint8 (height, width, 3) for ``size`` = side or (height, width);
    empty pixels take ``background``."""
    height, width = (size, size) if isinstance(size, int) else size
    projection = pb.computeProjectionMatrixFOV(fov, width / height, 0.05, 60.0)
    _, _, rgba, _, seg = pb.getCameraImage(width, height, view, projection, renderer=pb.ER_TINY_RENDERER,
                                           lightDirection=[2, 4, 3], shadow=1, lightAmbientCoeff=0.55,
                                           lightDiffuseCoeff=0.6, lightSpecularCoeff=0.05)
    image = np.asarray(rgba, np.uint8).reshape(height, width, 4)[..., :3].copy()
    empty = np.asarray(seg).reshape(height, width) < 0
    image[empty] = np.broadcast_to(background, image.shape)[empty]
    return image


def render_humanoid(motion: str, outfit: str, ground: str, folder: Path, n_frames: int = N_FRAMES, size: int = SIZE,
                    orbit: float = 0.0) -> dict[str, np.ndarray]:
    """{"ground": frames, "air": frames}, each uint8 (n_frames, size, size, 3); the cameras turn
    ``orbit`` degrees around the path over the clip (camera motion)."""
    pb.resetSimulation()
    pb.setAdditionalSearchPath(pybullet_data.getDataPath())
    z_to_y = pb.getQuaternionFromEuler([-math.pi / 2, 0, 0])  # DeepMimic's world is y-up
    plane = pb.loadURDF("plane.urdf", [0, 0, 0], z_to_y, useFixedBase=True)
    pb.changeVisualShape(plane, -1, textureUniqueId=pb.loadTexture(str(ground_texture(ground, folder))))
    body = pb.loadURDF(str(dressed_humanoid_urdf(outfit, folder)), [0, 0.9, 0], globalScaling=SCALE,
                       useFixedBase=True, flags=pb.URDF_MAINTAIN_LINK_ORDER)
    joint_ids = {pb.getJointInfo(body, j)[1].decode(): j for j in range(pb.getNumJoints(body))}
    poses = motion_poses(motion, n_frames, FPS)
    start, end = poses[0][0], poses[-1][0]
    forward = np.array(pb.getMatrixFromQuaternion(poses[0][1])).reshape(3, 3)[:, 0]  # body's +x
    heading = math.atan2(-forward[2], forward[0])
    cameras = {"ground": (heading + math.radians(35), 2.7, 1.0, 0.82),  # azimuth, distance, eye y, target y
               "air": (heading + math.radians(30), 1.6, 2.7, 0.75)}
    frames = {view: [] for view in cameras}
    background = sky(size)
    for i, (position, orientation, joints) in enumerate(poses):
        pb.resetBasePositionAndOrientation(body, position.tolist(), orientation)
        for joint, value in joints.items():
            pb.resetJointStateMultiDof(body, joint_ids[joint], list(value))
        centre = start + (end - start) * i / max(len(poses) - 1, 1)  # the camera tracks the path
        for view, (azimuth, distance, eye_y, target_y) in cameras.items():
            azimuth += math.radians(orbit) * i / max(len(poses) - 1, 1)
            eye = [centre[0] + distance * math.cos(azimuth), eye_y, centre[2] - distance * math.sin(azimuth)]
            matrix = pb.computeViewMatrix(eye, [centre[0], target_y, centre[2]], [0, 1, 0])
            frames[view].append(render(matrix, size, background))
    return {view: np.stack(images) for view, images in frames.items()}


# Two people side by side (walking in place and punching), and the same pair from above.
PAIR_SIZE = (256, 384)  # height, width
PAIR_PEOPLE = (  # motion, outfit, position (x, z) in metres, heading in degrees (-90: facing the camera)
    ("walk", "walk", (-0.8, 0.0), -60.0),
    ("punch", "punch", (0.8, 0.0), -115.0),
)
PAIR_CAMERAS = {"ground": ((0.0, 1.0, 4.6), (0.0, 0.8, 0.0)),  # eye, target
                "air": ((0.0, 5.6, 3.4), (0.0, 0.4, 0.0))}


def render_pair(ground: str, folder: Path) -> dict[str, np.ndarray]:
    """{"ground": frames, "air": frames}, each uint8 (N_FRAMES, *PAIR_SIZE, 3): two dressed
    humanoids about 1.6 m apart that never cross, one walking in place, one punching, seen by a
    still camera at chest height and from high above (the people small, seen from above)."""
    pb.resetSimulation()
    pb.setAdditionalSearchPath(pybullet_data.getDataPath())
    z_to_y = pb.getQuaternionFromEuler([-math.pi / 2, 0, 0])
    plane = pb.loadURDF("plane.urdf", [0, 0, 0], z_to_y, useFixedBase=True)
    pb.changeVisualShape(plane, -1, textureUniqueId=pb.loadTexture(str(ground_texture(ground, folder))))
    people = []
    for motion, outfit, (x, z), heading in PAIR_PEOPLE:
        body = pb.loadURDF(str(dressed_humanoid_urdf(outfit, folder)), [x, 0.9, z], globalScaling=SCALE,
                           useFixedBase=True, flags=pb.URDF_MAINTAIN_LINK_ORDER)
        joint_ids = {pb.getJointInfo(body, j)[1].decode(): j for j in range(pb.getNumJoints(body))}
        poses = motion_poses(motion, N_FRAMES, FPS)
        forward = np.array(pb.getMatrixFromQuaternion(poses[0][1])).reshape(3, 3)[:, 0]
        turn = pb.getQuaternionFromEuler([0, math.radians(heading) - math.atan2(-forward[2], forward[0]), 0])
        people.append((body, joint_ids, poses, (x, z), turn))
    frames = {view: [] for view in PAIR_CAMERAS}
    background = sky(PAIR_SIZE[0])
    for i in range(N_FRAMES):
        for body, joint_ids, poses, (x, z), turn in people:
            position, orientation, joints = poses[i]
            _, orientation = pb.multiplyTransforms([0, 0, 0], turn, [0, 0, 0], orientation)
            pb.resetBasePositionAndOrientation(body, [x, float(position[1]), z], orientation)  # in place
            for joint, value in joints.items():
                pb.resetJointStateMultiDof(body, joint_ids[joint], list(value))
        for view, (eye, target) in PAIR_CAMERAS.items():
            matrix = pb.computeViewMatrix(list(eye), list(target), [0, 1, 0])
            frames[view].append(render(matrix, PAIR_SIZE, background, fov=40.0))
    return {view: np.stack(images) for view, images in frames.items()}


def chirp_wav(path: Path, seconds: float = 2.0, rate: int = 22050) -> Path:
    """A mono 16-bit WAV: a 330->660 Hz chirp with a click at every footstep (2 per second)."""
    t = np.arange(int(seconds * rate)) / rate
    frequency = 330 * 2 ** (t / seconds)
    tone = 0.25 * np.sin(2 * np.pi * np.cumsum(frequency) / rate)
    clicks = 0.5 * np.exp(-((t % 0.5) * 80)) * np.sin(2 * np.pi * 90 * t)
    samples = np.clip(tone + clicks, -1, 1)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


# ------------------------------------------------------------------------------------- objects


def plant_body() -> int:
    """A potted plant from primitives: a terracotta pot, a stem and leafy green spheres."""
    def visual(shape, colour, **kw):
        return pb.createVisualShape(shape, rgbaColor=(*colour, 1), **kw)
    pot = visual(pb.GEOM_CYLINDER, (0.72, 0.36, 0.2), radius=0.16, length=0.28)
    soil = visual(pb.GEOM_CYLINDER, (0.25, 0.17, 0.1), radius=0.145, length=0.02)
    stem = visual(pb.GEOM_CYLINDER, (0.3, 0.45, 0.15), radius=0.02, length=0.4)
    rng = np.random.default_rng(3)
    leaves = []
    for _ in range(14):
        angle, lift = rng.uniform(0, 2 * math.pi), rng.uniform(0.38, 0.75)
        reach = rng.uniform(0.04, 0.2)
        green = (rng.uniform(0.12, 0.25), rng.uniform(0.45, 0.65), rng.uniform(0.12, 0.22))
        leaves.append((visual(pb.GEOM_SPHERE, green, radius=rng.uniform(0.07, 0.11)),
                       [reach * math.cos(angle), reach * math.sin(angle), lift]))
    links = [(soil, [0, 0, 0.28]), (stem, [0, 0, 0.45])] + leaves
    return pb.createMultiBody(
        baseMass=0, baseVisualShapeIndex=pot, basePosition=[0, 0, 0.14],
        linkMasses=[0] * len(links), linkCollisionShapeIndices=[-1] * len(links),
        linkVisualShapeIndices=[v for v, _ in links],
        linkPositions=[[p[0], p[1], p[2] - 0.14] for _, p in links],
        linkOrientations=[[0, 0, 0, 1]] * len(links), linkInertialFramePositions=[[0, 0, 0]] * len(links),
        linkInertialFrameOrientations=[[0, 0, 0, 1]] * len(links), linkParentIndices=[0] * len(links),
        linkJointTypes=[pb.JOINT_FIXED] * len(links), linkJointAxis=[[0, 0, 1]] * len(links))


def standing_person(folder: Path) -> int:
    """The dressed humanoid, z-up, in the first pose of the walk clip."""
    body = pb.loadURDF(str(dressed_humanoid_urdf("walk", folder)), [0, 0, 0.87],
                       pb.getQuaternionFromEuler([math.pi / 2, 0, 0]), globalScaling=SCALE,
                       useFixedBase=True, flags=pb.URDF_MAINTAIN_LINK_ORDER)
    joint_ids = {pb.getJointInfo(body, j)[1].decode(): j for j in range(pb.getNumJoints(body))}
    _, _, joints = motion_poses("walk", 1, FPS)[0]
    for joint, value in joints.items():
        pb.resetJointStateMultiDof(body, joint_ids[joint], list(value))
    return body


def render_objects(out: Path, folder: Path) -> list[str]:
    """Two views of each class on plain backgrounds; returns image_list.txt lines."""
    data = Path(pybullet_data.getDataPath())
    scenes = {  # class -> (loader, look-at point, camera distance)
        "car": (lambda: pb.loadURDF(str(data / "racecar" / "racecar.urdf"), [0, 0, 0]), [0.12, 0, 0.06], 1.0),
        "bicycle": (lambda: pb.loadURDF(str(data / "bicycle" / "bike.urdf"), [0, 0, 0.59]), [0, 0, 0.5], 3.4),
        "person": (lambda: standing_person(folder), [0, 0, 0.85], 2.6),
        "plant": (plant_body, [0, 0, 0.42], 1.5),
    }
    views = [(35, -20, (246, 246, 246)), (-120, -12, (196, 206, 222))]  # yaw, pitch, background
    lines = []
    for name, (load, target, distance) in scenes.items():
        pb.resetSimulation()
        load()
        for n, (yaw, pitch, colour) in enumerate(views):
            matrix = pb.computeViewMatrixFromYawPitchRoll(target, distance, yaw, pitch, 0, 2)
            image = render(matrix, SIZE, np.array(colour, np.uint8))
            relative = f"{name}/{name}_{n:03d}.png"
            write_video(out / "objects" / relative, image[None])
            lines.append(f"{relative} {sorted(scenes).index(name)}")
    return lines


def long_clip(path: Path, n_frames: int = 320, size: int = 128) -> Path:
    """A long walk seen from the ground with an orbiting camera (not committed: made at run time
    by ``tools/compare_modes.py --long``), ``n_frames`` at 24 fps."""
    pb.connect(pb.DIRECT)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            clips = render_humanoid("walk", "walk", "pavement", Path(tmp), n_frames=n_frames, size=size, orbit=120.0)
            return write_video(path, clips["ground"], Fraction(FPS), crf=18)
    finally:
        pb.disconnect()


def main(out: Path) -> None:
    pb.connect(pb.DIRECT)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            for motion, ground in (("walk", "pavement"), ("punch", "grass")):
                clips = render_humanoid(motion, motion, ground, folder)
                for view, frames in clips.items():
                    print(write_video(out / f"humanoid_{motion}_{view}.mp4", frames, Fraction(FPS), crf=23))
                if motion == "walk":
                    wav = chirp_wav(folder / "chirp.wav")
                    print(write_video(out / "humanoid_walk_audio.mp4", clips["ground"], Fraction(FPS),
                                      audio_from=wav, crf=23))
            for view, frames in render_pair("pavement", folder).items():
                print(write_video(out / f"humanoid_pair_{view}.mp4", frames, Fraction(FPS), crf=23))
            lines = render_objects(out, folder)
            (out / "objects" / "image_list.txt").write_text("\n".join(lines) + "\n")
            print(out / "objects", f"({len(lines)} images)")
    finally:
        pb.disconnect()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "samples")
