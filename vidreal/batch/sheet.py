"""A batch at a glance: a contact sheet (PNG) and a self-contained ``report.html``.

    write_report("out/ground", "out/ground/sheet.png")               # seeded choice of 8 items
    write_report("out/ground", "sheet.png", worst="edge_f1", n=12)   # the 12 lowest edge F1

The sheet has one row per chosen item: the middle frame of the source | its canny and pose
conditions | the output's middle frame, under a line with the item's name, status and scores
(the gate's ``scores`` or the ``metrics`` of ``--metrics``; rejected items in red).
``report.html`` (beside the sheet) embeds the sheet, a histogram per score over every item, and
the table of rejected items, all as data URIs: it opens in a browser without a server. Both are
written atomically. Items come from ``OUT_DIR/manifest.jsonl`` (done or rejected, output present);
their sources are found under the input root the batch recorded (or ``root``).
"""
from __future__ import annotations

import base64
import html
import io as _io
import logging
import random
from pathlib import Path

import cv2
import numpy as np

from vidreal.batch.manifest import MANIFEST_NAME, read_manifest
from vidreal.errors import ConfigError, InputError

PANEL = 160  # panel height in px
LABEL = 22  # label strip height in px
SCORE_KEYS = ("edge_f1", "pose_pck")
KINDS = ("canny", "pose")

log = logging.getLogger(__name__)


def check_sheet_path(path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"the contact sheet must be a .png file, got {str(path)!r}")
    return path


def item_scores(record: dict) -> dict:
    """{"edge_f1", "pose_pck"} of a manifest record: the gate's scores, else its metrics (None if absent)."""
    source = record.get("scores") or record.get("metrics") or {}
    return {key: source.get(key) for key in SCORE_KEYS}


def choose_items(records: list, n: int = 8, seed: int = 0, worst: str | None = None) -> list:
    """``n`` records: a seeded random choice in manifest order, or the ``worst`` n by a score key."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    if worst is not None:
        if worst not in SCORE_KEYS:
            raise ConfigError(f"worst must be one of {', '.join(SCORE_KEYS)}, got {worst!r}")
        scored = [r for r in records if item_scores(r)[worst] is not None]
        return sorted(scored, key=lambda r: item_scores(r)[worst])[:n]
    if len(records) <= n:
        return list(records)
    picked = set(random.Random(seed).sample(range(len(records)), n))
    return [r for i, r in enumerate(records) if i in picked]


def middle_frame(path) -> np.ndarray:
    """The middle frame of a video (or the image): uint8 (H, W, 3)."""
    from vidreal.io import iter_video, probe

    middle = probe(path).n_frames // 2
    seen = 0
    for chunk in iter_video(path, chunk_size=16):
        if seen + len(chunk) > middle:
            return chunk[middle - seen]
        seen += len(chunk)
    raise InputError("the clip has no frames", path)


def _panel(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * PANEL / h)), PANEL), interpolation=cv2.INTER_AREA)


def _label(text: str, width: int, colour=(230, 230, 230)) -> np.ndarray:
    strip = np.full((LABEL, width, 3), 32, np.uint8)
    # Hershey fonts draw ASCII only, and OpenCV crashes on a lone surrogate (a file name that is not
    # UTF-8): anything else is drawn as its escape, e.g. "\udcff".
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    cv2.putText(strip, text, (6, LABEL - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return strip


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_sheet(rows: list) -> np.ndarray:
    """uint8 (H, W, 3) sheet of rows ``(label, status, [panels uint8 (h, w, 3)])``."""
    bodies = [np.concatenate([_panel(p) for p in panels], axis=1) for _, _, panels in rows]
    width = max(body.shape[1] for body in bodies)
    strips = []
    for (label, status, _), body in zip(rows, bodies):
        h, w = body.shape[:2]
        if w != width:  # every row as wide as the widest (scaled, not padded black)
            body = cv2.resize(body, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
        colour = (255, 90, 90) if status == "rejected" else (230, 230, 230)
        strips += [_label(label, width, colour), body]
    header = _label("source | canny | pose | output (middle frames)", width)
    return np.concatenate([header, *strips])


def _png_bytes(image: np.ndarray) -> bytes:
    """uint8 (H, W, 3) RGB -> PNG bytes (Pillow: an encoder failure raises instead of writing an empty file)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def _histograms(records: list) -> bytes | None:
    """PNG bytes of one histogram per score over ``records`` (None when nothing is scored)."""
    values = {key: [item_scores(r)[key] for r in records if item_scores(r)[key] is not None] for key in SCORE_KEYS}
    values = {k: v for k, v in values.items() if v}
    if not values:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(values), figsize=(4 * len(values), 3), squeeze=False)
    for ax, (key, data) in zip(axes[0], values.items()):
        ax.hist(data, bins=20, range=(0, 1), color="#4472c4")
        ax.set_title(f"{key} ({len(data)} items, mean {np.mean(data):.3f})")
        ax.set_xlim(0, 1)
    fig.tight_layout()
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _html(out_dir: Path, sheet_png: bytes, hist_png: bytes | None, records: list, shown: int) -> str:
    rejected = [r for r in records if r.get("status") == "rejected"]
    rows = "".join(
        f"<tr><td>{html.escape(r['input'])}</td><td>{_fmt(item_scores(r)['edge_f1'])}</td>"
        f"<td>{_fmt(item_scores(r)['pose_pck'])}</td><td>{html.escape(str(r.get('rejected', '')))}</td></tr>"
        for r in rejected)
    hist = f'<h2>Scores</h2><img alt="score histograms" src="{_data_uri(hist_png)}">' if hist_png else ""
    table = "" if not rejected else (  # no empty table when nothing was rejected
        f"<h2>Rejected items ({len(rejected)})</h2>\n"
        f"<table><tr><th>item</th><th>edge F1</th><th>pose PCK</th><th>why</th></tr>{rows}</table>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>vidreal report: {html.escape(out_dir.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}}img{{max-width:100%}}</style></head><body>
<h1>vidreal batch report: {html.escape(str(out_dir))}</h1>
<p>{len(records)} translated item(s), {len(rejected)} rejected; the sheet shows {shown}.</p>
<h2>Contact sheet</h2><img alt="contact sheet" src="{_data_uri(sheet_png)}">
{hist}
{table}
</body></html>
"""


def write_report(out_dir, sheet=None, root=None, n: int = 8, seed: int = 0, worst: str | None = None,
                 report: bool = True) -> Path:
    """Write the contact sheet of a batch's OUT_DIR (default ``OUT_DIR/sheet.png``) and, with
    ``report``, ``report.html`` beside it. Returns the sheet's path. InputError when OUT_DIR has
    no manifest or no translated item; OutputError when the sheet or the report would be written over
    a file the batch read or wrote (its manifest, an item's output or source)."""
    from vidreal.conditions import DetectorSet
    from vidreal.io import atomic_output, refuse_overwriting

    out_dir = Path(out_dir)
    sheet = check_sheet_path(sheet if sheet is not None else out_dir / "sheet.png")
    manifest = out_dir / MANIFEST_NAME
    if not manifest.is_file():
        raise InputError("no batch manifest here (run vidreal batch first)", manifest)
    recorded = _batch_record(out_dir)
    root = Path(root) if root is not None else recorded["root"]
    records = [r for r in read_manifest(manifest).values()
               if r.get("status") in ("done", "rejected") and r.get("output") and (out_dir / r["output"]).is_file()]
    if not records:
        raise InputError("the batch has no translated items to show", out_dir)
    inputs = [manifest, *(out_dir / r["output"] for r in records),
              *((root / r["input"] for r in records if r.get("input")) if root is not None else ())]
    for path in (sheet, sheet.with_name("report.html")) if report else (sheet,):
        refuse_overwriting(path, inputs)  # e.g. -o naming a translated .png item
    chosen = choose_items(records, n, seed, worst)
    rows = []
    for record in chosen:
        output = middle_frame(out_dir / record["output"])
        source_path = root / record["input"] if root is not None else None
        found = source_path is not None and source_path.is_file()
        if found:
            source = middle_frame(source_path)
        else:  # black source and condition panels, said in the label and the log
            log.warning("sheet: source of %s not found (%s); pass root=IN_DIR", record["input"], source_path)
            source = np.zeros_like(output)
        # a fresh detector set per item (pose tracks one clip), with the settings the batch translated with
        with DetectorSet(KINDS, recorded["conditions"]) as detectors:
            maps = detectors(source[None])
        scores = item_scores(record)
        label = f"{record['input']}  {record['status']}  edge F1 {_fmt(scores['edge_f1'])}  " \
                f"pose PCK {_fmt(scores['pose_pck'])}" + ("" if found else "  (source not found)")
        rows.append((label, record["status"], [source, maps["canny"][0], maps["pose"][0], output]))
    png = _png_bytes(render_sheet(rows))
    with atomic_output(sheet) as tmp:
        Path(tmp).write_bytes(png)
    if report:
        page = _html(out_dir, png, _histograms(records), records, len(chosen))
        with atomic_output(sheet.with_name("report.html")) as tmp:
            Path(tmp).write_text(page, encoding="utf-8", errors="backslashreplace")  # names that are not UTF-8
    return sheet


def _batch_record(out_dir: Path) -> dict:
    """What ``vidreal batch`` recorded in ``batch.vidreal.yaml``: ``{"root": the input root or None,
    "conditions": {kind: detector options} of the sheet's kinds}`` (empty when absent)."""
    import yaml

    path = out_dir / "batch.vidreal.yaml"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        data = {}
    root = (data.get("result") or {}).get("root")
    conditions = data.get("conditions") or {}
    return {"root": Path(root) if root else None,
            "conditions": {kind: conditions[kind] for kind in KINDS if isinstance(conditions.get(kind), dict)}}
