"""OpenPose body maps from controlnet-aux's OpenposeDetector (needs the user's annotator weights)."""
from __future__ import annotations

import os

import cv2
import numpy as np
from huggingface_hub.errors import (
    EntryNotFoundError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)

from vidreal.conditions.base import Detector, check_range, import_controlnet_aux
from vidreal.errors import ModelError
from vidreal.runtime import first_line, resolve_device

DEFAULT_MODEL = "lllyasviel/Annotators"
# OpenposeDetector.from_pretrained loads all three, even when only the body is drawn.
WEIGHT_FILES = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")
HOW_TO_GET = (
    f"download them with `hf download {DEFAULT_MODEL} {' '.join(WEIGHT_FILES)}` "
    "or pass a local folder holding them as the openpose `model` option"
)


class OpenposeDetector(Detector):
    """controlnet-aux's OpenPose annotator: uint8 ``(T, H, W, 3)`` skeleton maps.

    ``model`` is a hub id or a local folder with the annotator weights; they load on the first
    frames (ModelError when they are not available). The annotator works at
    ``detect_resolution`` (shorter side, rounded to multiples of 64) on ``device`` (a torch
    device name) and its map is resized back to the frame size. Frames are independent.
    The annotator reads its ``.pth`` weights with ``torch.load`` (pickle files can run code when
    loaded), so it loads only with ``allow_pickle=True`` (``--allow-pickle``), as other pickles.
    """

    name = "openpose"

    def __init__(self, model: str | os.PathLike = DEFAULT_MODEL, detect_resolution: int = 512,
                 include_hand: bool = False, include_face: bool = False, device: str = "cpu",
                 allow_pickle: bool = False):
        self.model = str(model)
        self.device = str(device)
        self.detect_resolution = int(check_range("openpose detect_resolution", detect_resolution, 64, 4096))
        self.include_hand = bool(include_hand)
        self.include_face = bool(include_face)
        self.allow_pickle = bool(allow_pickle)
        self._annotator = None

    def load(self):
        """Load the annotator weights now; ModelError (one line) when they are missing."""
        if self._annotator is not None:
            return self._annotator
        if os.path.isdir(self.model):
            missing = [f for f in WEIGHT_FILES if not os.path.isfile(os.path.join(self.model, f))]
            if missing:
                raise ModelError(f"OpenPose weights {', '.join(missing)} not found; {HOW_TO_GET}", path=self.model)
        if not self.allow_pickle:
            raise ModelError(f"refusing to load the OpenPose annotator's pickle weights ({', '.join(WEIGHT_FILES)}, "
                             "read with torch.load; a pickle file can run code when loaded); pass --allow-pickle "
                             "if you trust them", path=self.model)
        annotator_class = import_controlnet_aux().OpenposeDetector
        try:
            self._annotator = annotator_class.from_pretrained(self.model).to(resolve_device(self.device))
        except (LocalEntryNotFoundError, RepositoryNotFoundError, EntryNotFoundError, HFValidationError) as exc:
            raise ModelError(
                f"OpenPose weights {self.model!r} are neither a local folder nor in the Hugging Face cache "
                f"(offline or unknown repo: {type(exc).__name__}); {HOW_TO_GET}"
            ) from exc
        except Exception as exc:  # unreadable or incompatible checkpoints
            raise ModelError(
                f"cannot load OpenPose weights from {self.model!r} ({first_line(exc, with_type=True)}); {HOW_TO_GET}"
            ) from exc
        return self._annotator

    def process(self, frames: np.ndarray) -> np.ndarray:
        annotator = self.load()
        _, height, width, _ = frames.shape
        out = np.empty_like(frames)
        for i, frame in enumerate(frames):
            detected = annotator(
                frame,
                detect_resolution=self.detect_resolution,
                image_resolution=self.detect_resolution,
                include_body=True,
                include_hand=self.include_hand,
                include_face=self.include_face,
                output_type="np",
            )
            out[i] = cv2.resize(detected, (width, height), interpolation=cv2.INTER_LINEAR)
        return out

    def close(self) -> None:
        self._annotator = None
