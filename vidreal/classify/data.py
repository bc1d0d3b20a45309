"""Labelled image or video sets for the classifier: class folders and VisDA/RoCoG-style list files.

Two layouts, as users have them:

- class folders: ``SRC/<class>/**/*.png`` (or ``*.mp4``: RoCoG-v2's ``syn/ground/<Class>/``) —
  class names are the sorted folder names;
- list files: ``SRC.txt`` with one ``relative/path label`` per line (VisDA's ``image_list.txt``,
  RoCoG's ``annotations/*.txt``, the list ``vidreal batch --list`` writes); paths are relative to
  ``root`` when given, else to the list's folder - or, for a list inside an ``annotations/``
  folder, to that folder's parent (the dataset root). The label is an integer index into the
  sorted class list. Class names come from each label's parent folder
  (``aeroplane/src_1_....png 0`` -> ``aeroplane``) or from ``classes``.

Several sources may be combined (e.g. synthetic train + real train lists); the first one sets the
classes. A set holds images or videos, never both. Both give a :class:`Samples` (paths, integer
labels, class names; frame counts for videos). :class:`ImageDataset` decodes one image per item
with PIL and applies the backbone's transform; videos are in :mod:`vidreal.classify.video`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

from PIL import Image

from vidreal.errors import ConfigError, InputError
from vidreal.io import IMAGE_EXTS, VIDEO_EXTS
from vidreal.runtime import read_text

log = logging.getLogger(__name__)

#: VisDA-2017's twelve classes, sorted as their label indices are.
VISDA_CLASSES = (
    "aeroplane", "bicycle", "bus", "car", "horse", "knife",
    "motorcycle", "person", "plant", "skateboard", "train", "truck",
)

BAD_IMAGE_POLICIES = ("skip", "fail")


@dataclass
class Samples:
    """A labelled image or video set.

    paths: image or video files; labels: int index into ``classes`` per path; classes: class names
    in label order; source: the (first) folder or list file it came from; skipped: unreadable
    files left out (``on_bad_image="skip"``); n_frames: each video's frame count once checked
    (empty for images, or when the check was skipped).
    """

    paths: list[Path]
    labels: list[int]
    classes: list[str]
    source: Path
    skipped: list[Path] = field(default_factory=list)
    n_frames: list[int] = field(default_factory=list)

    @property
    def is_video(self) -> bool:
        return bool(self.paths) and self.paths[0].suffix.lower() in VIDEO_EXTS

    def __len__(self) -> int:
        return len(self.paths)

    def class_counts(self) -> list[int]:
        """Number of samples per class, in class order."""
        counts = [0] * len(self.classes)
        for label in self.labels:
            counts[label] += 1
        return counts


def load_samples(
    src: str | Path | Sequence[str | Path],
    root: str | Path | None = None,
    classes: Sequence[str] | None = None,
    on_bad_image: str = "skip",
    check_images: bool = True,
    progress: bool = False,
) -> Samples:
    """Read a labelled image or video set from class-folder trees and/or ``path label`` list files.

    src: a folder (``<class>/`` subfolders of images or videos) or a ``.txt`` list file; or a
        sequence of them, combined in order (the first sets the classes).
    root: folder the lists' relative paths start from (default: the list file's folder, or the
        parent of an ``annotations/`` folder holding it).
    classes: class names in label order to map onto (e.g. the training set's classes when loading
        a validation set); folder names must be among them and list labels index into them.
        None: taken from the data.
    on_bad_image: "skip" (leave unreadable images/videos out, log each one's path and reason in one
        line, count them in ``Samples.skipped``) or "fail" (raise InputError on the first one).
    check_images: open every image with PIL (header + ``verify()``), every video with PyAV and
        decord (its frame count), to find unreadable ones now rather than in the middle of training.
    progress: a progress bar over that check.
    """
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise ConfigError(f"on_bad_image must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {on_bad_image!r}")
    if not isinstance(src, (str, Path)):
        sources = list(src)
        if not sources:
            raise InputError("no data source given")
        first = load_samples(sources[0], root, classes, on_bad_image, check_images, progress)
        for other in sources[1:]:
            more = load_samples(other, root, first.classes, on_bad_image, check_images, progress)
            if more.is_video != first.is_video:
                raise InputError(f"cannot combine videos and images in one set (first source: {first.source})", other)
            first.paths += more.paths
            first.labels += more.labels
            first.skipped += more.skipped
            first.n_frames += more.n_frames
        return first
    src = Path(src)
    if not src.exists():
        raise InputError("image set not found", src)
    if src.is_dir():
        if root is not None:
            log.debug("root is only used with list files; ignoring it for folder %s", src)
        samples = _load_folder(src, classes)
    elif src.suffix.lower() == ".txt":
        samples = _load_list(src, Path(root) if root is not None else list_root(src), classes)
    else:
        raise InputError(f"expected a folder of class folders or a .txt list file, got {src.name!r}", src)
    kinds = {p.suffix.lower() in VIDEO_EXTS for p in samples.paths}
    if len(kinds) > 1:
        raise InputError("the set mixes videos and images; give them as separate sets", src)
    if check_images and samples.is_video:
        _drop_bad_videos(samples, on_bad_image, progress)
    elif check_images:
        _drop_bad_images(samples, on_bad_image, progress)
    if not samples.paths:
        raise InputError(f"no readable {'videos' if kinds == {True} else 'images'} in the set", src)
    return samples


def list_root(list_file: Path) -> Path:
    """The folder a list's relative paths start from: the list's folder, or for a list inside an
    ``annotations/`` folder (RoCoG-v2's ``annotations/syn_ground_train.txt``) that folder's parent."""
    folder = list_file.parent
    return folder.parent if folder.name == "annotations" else folder


def _load_folder(src: Path, classes: Sequence[str] | None) -> Samples:
    class_dirs = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise InputError("no class folders (expected <class>/*.png, or pass a list file)", src)
    names = [d.name for d in class_dirs]
    if classes is None:
        classes = names
    else:
        classes = list(classes)
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise InputError(f"unknown class folder {unknown[0]!r}; known classes: {', '.join(classes)}", src / unknown[0])
    paths, labels = [], []
    for d in class_dirs:
        files = sorted(
            p for p in d.rglob("*")
            if p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(d).parts)  # hidden/temp files
        )
        if not files:
            raise InputError(f"class folder {d.name!r} has no images or videos", d)
        paths += files
        labels += [classes.index(d.name)] * len(files)
    return Samples(paths, labels, list(classes), src)


def _load_list(src: Path, root: Path, classes: Sequence[str] | None) -> Samples:
    entries: list[tuple[int, str, int]] = []
    for lineno, line in enumerate(read_text(src, "list file").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise InputError(f"line {lineno}: expected 'relative/path label', got {line!r}", src)
        try:
            label = int(parts[1])
        except ValueError:
            raise InputError(f"line {lineno}: label must be an integer, got {parts[1]!r}", src) from None
        if label < 0:
            raise InputError(f"line {lineno}: unknown label {label} (labels start at 0)", src)
        if classes is not None and label >= len(classes):
            raise InputError(f"line {lineno}: unknown label {label} (classes are 0..{len(classes) - 1}: {', '.join(classes)})", src)
        entries.append((lineno, parts[0], label))
    if not entries:
        raise InputError("list file has no entries", src)
    classes = list(classes) if classes is not None else _classes_from_entries([e[1:] for e in entries])
    paths, labels = [], []
    for lineno, rel, label in entries:
        path = root / rel
        if not path.is_file():
            kind = "video" if path.suffix.lower() in VIDEO_EXTS else "image"
            raise InputError(f"line {lineno} of {src.name}: listed {kind} is missing (paths are relative to {root})", path)
        paths.append(path)
        labels.append(label)
    return Samples(paths, labels, classes, src)


def _classes_from_entries(entries: list[tuple[str, int]]) -> list[str]:
    """Class names in label order from each label's parent folder; ``class_<i>`` when ambiguous."""
    n = max(label for _, label in entries) + 1
    names: dict[int, set[str]] = {}
    for rel, label in entries:
        parent = PurePosixPath(rel.replace("\\", "/")).parent.name
        names.setdefault(label, set()).add(parent)
    inferred = [names.get(i, set()) for i in range(n)]
    if all(len(s) == 1 and next(iter(s)) for s in inferred):
        result = [next(iter(s)) for s in inferred]
        if len(set(result)) == n:
            return result
    log.warning("class names cannot be read from the list's folders; using class_0..class_%d", n - 1)
    return [f"class_{i}" for i in range(n)]


def _drop_bad_images(samples: Samples, on_bad_image: str, progress: bool = False) -> None:
    from vidreal.progress import bar as tqdm  # tqdm on a terminal, plain lines in a log, off under -q

    keep_paths, keep_labels = [], []
    items = zip(samples.paths, samples.labels)
    for path, label in tqdm(items, total=len(samples.paths), desc=f"checking {samples.source.name}",
                            unit="img", disable=not progress, leave=False):
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as exc:  # PIL raises many types for corrupt files
            if on_bad_image == "fail":
                raise InputError(f"unreadable image ({type(exc).__name__}); use on_bad_image='skip' to leave such images out", path) from None
            samples.skipped.append(path)
            continue
        keep_paths.append(path)
        keep_labels.append(label)
    if samples.skipped:
        log.warning("skipped %d unreadable image(s) in %s, e.g. %s", len(samples.skipped), samples.source, samples.skipped[0])
    samples.paths, samples.labels = keep_paths, keep_labels


def _drop_bad_videos(samples: Samples, on_bad_image: str, progress: bool = False) -> None:
    """Probe every video (PyAV + decord, no frames decoded): keep its frame count, or skip / fail."""
    from vidreal.progress import bar as tqdm  # tqdm on a terminal, plain lines in a log, off under -q

    from vidreal.io import probe

    keep_paths, keep_labels, n_frames = [], [], []
    items = zip(samples.paths, samples.labels)
    for path, label in tqdm(items, total=len(samples.paths), desc=f"checking {samples.source.name}",
                            unit="video", disable=not progress, leave=False):
        try:
            info = probe(path)
        except InputError as exc:
            if on_bad_image == "fail":
                raise InputError(f"unreadable video ({exc.message}); use on_bad_image='skip' to leave such videos out", path) from None
            log.warning("skipping unreadable video %s: %s", path, exc.message)
            samples.skipped.append(path)
            continue
        keep_paths.append(path)
        keep_labels.append(label)
        n_frames.append(info.n_frames)
    if samples.skipped:
        log.warning("skipped %d unreadable video(s) in %s", len(samples.skipped), samples.source)
    samples.paths, samples.labels, samples.n_frames = keep_paths, keep_labels, n_frames


def read_image(path: Path) -> Image.Image:
    """Decode one image as an RGB PIL image (InputError when it cannot be decoded)."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as exc:
        raise InputError(f"cannot decode image ({type(exc).__name__}: {exc})", path) from None


class ImageDataset:
    """Map-style dataset over :class:`Samples`: item i -> (transform(image) float32 (3, H, W), label int)."""

    def __init__(self, samples: Samples, transform: Callable):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return self.transform(read_image(self.samples.paths[index])), self.samples.labels[index]
