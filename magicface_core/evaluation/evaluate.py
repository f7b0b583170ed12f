"""``python -m magicface_core evaluate``: the paper's metrics for a set of edits.

    # edits you already have: a CSV with columns identity, au_delta, edited
    python -m magicface_core evaluate --triples edits.csv --out results/
    # or let it make the edits: every identity image x every AU delta line
    python -m magicface_core evaluate --generate --identities portraits/ --deltas deltas.txt \\
        --weights mengtingwei/magicface --out results/

Writes ``per_edit.csv`` and ``summary.md`` / ``summary.json`` (means, beside the paper's Table I).
AUs come from our LibreFace port, parsing from BiSeNet, landmarks from 2D-FAN, identity
embeddings from dlib's 128-d face descriptor, computed as the face_recognition package does
(as in the paper) but by calling dlib directly with the model files of the
face_recognition_models package (pip install dlib-bin face_recognition_models).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import metrics
from ..au import AUVector
from ..devices import DeviceSettings
from ..errors import MagicFaceError, NoFaceError
from ..faces.toolkit import FaceSettings
from ..imaging import as_portrait, load_image, resize, save_image
from ..settings import EditSettings, ModelSettings, as_path, check_au_delta, group, option, require

logger = logging.getLogger(__name__)

PAPER_TABLE_I = {"au_mse": 0.261, "id_distance": 0.473, "background_rmse": 0.044, "pose_rmse": 0.032}
METRICS = tuple(PAPER_TABLE_I)
ID_BACKENDS = ("face_recognition", "none")
IDENTITY_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class EvaluateJob:
    """Everything ``python -m magicface_core evaluate`` takes, checked when made; with ``generate``,
    :meth:`generation_inputs` reads and checks the identities and deltas before any model loads."""

    triples: Path | None = option(None, "CSV with columns identity, au_delta, edited")
    generate: bool = option(False, "make the edits first (needs --identities, --deltas)")
    identities: Path | None = option(None, "folder of 512x512 portraits")
    deltas: Path | None = option(None, "text file, one AU delta per line (e.g. AU12=3,AU6=2)")
    model: ModelSettings = group(ModelSettings)
    sampling: EditSettings = group(EditSettings)
    out: Path | None = option(None, "output folder for per_edit.csv and the summaries", required=True)
    id_backend: str = option("face_recognition", "identity embeddings: dlib's face descriptor as face_recognition "
                                                 "computes it, or none", choices=ID_BACKENDS)
    device: DeviceSettings = group(DeviceSettings)
    faces: FaceSettings = group(FaceSettings)

    def __post_init__(self):
        require(self, "out")
        for name in ("triples", "identities", "deltas", "out"):
            object.__setattr__(self, name, as_path(getattr(self, name)))
        if self.id_backend not in ID_BACKENDS:
            raise MagicFaceError(f"unknown id backend {self.id_backend!r}: choose one of {', '.join(ID_BACKENDS)}")
        if self.generate and not (self.identities and self.deltas):
            raise MagicFaceError("--generate needs --identities and --deltas")
        if not self.generate and not self.triples:
            raise MagicFaceError("give --triples, or --generate with --identities and --deltas")

    def generation_inputs(self) -> tuple[list[Path], list[AUVector]]:
        """The identity images and the AU deltas, each delta checked (before any model loads)."""
        if not self.identities.is_dir():
            raise MagicFaceError(f"--identities {self.identities} is not a folder of portraits")
        identities = sorted(p for p in self.identities.iterdir() if p.suffix.lower() in IDENTITY_SUFFIXES)
        if not identities:
            raise MagicFaceError(f"--identities {self.identities} holds no {'/'.join(IDENTITY_SUFFIXES)} images")
        try:
            lines = self.deltas.read_text(encoding="utf-8-sig").splitlines()  # an Excel byte-order mark
        except OSError as exc:
            raise MagicFaceError(f"cannot read --deltas {self.deltas}: {exc}") from None
        deltas = [check_au_delta(AUVector.parse(line)) for line in lines if line.strip()]
        if not deltas:
            raise MagicFaceError(f"--deltas {self.deltas} holds no AU delta")
        return identities, deltas


@dataclass
class EvalTools:
    """The measuring instruments; tests give simple ones with known answers."""

    estimate_aus: Callable[[list[np.ndarray]], AUVector]
    parse: Callable[[np.ndarray], np.ndarray]
    landmarks: Callable[[np.ndarray], np.ndarray]
    embed: Callable[[np.ndarray], np.ndarray | None]


def face_recognition_embedder() -> Callable[[np.ndarray], np.ndarray | None]:
    """face_recognition's default ``face_encodings(image)[0]``, without that package (it needs pkg_resources)."""
    from ..faces.dlib_backend import DlibFaceEncoder

    return DlibFaceEncoder()


def default_tools(toolkit, id_backend: str = "face_recognition") -> EvalTools:
    embed = face_recognition_embedder() if id_backend == "face_recognition" else (lambda image: None)
    return EvalTools(estimate_aus=toolkit.estimate_aus, parse=toolkit.parse, landmarks=toolkit.landmarks, embed=embed)


def evaluate_edit(identity: np.ndarray, edited: np.ndarray, delta: AUVector, tools: EvalTools) -> dict[str, float]:
    if edited.shape != identity.shape:
        edited = resize(edited, (identity.shape[1], identity.shape[0]))
    aus = tools.estimate_aus([identity, edited])
    source, measured = aus[0], aus[1]
    intended = metrics.intended_aus(source, delta)
    face = metrics.face_region(tools.parse(identity)) | metrics.face_region(tools.parse(edited))
    pose_a = metrics.head_pose(tools.landmarks(identity), identity.shape[:2])
    pose_b = metrics.head_pose(tools.landmarks(edited), edited.shape[:2])
    return {
        "au_mse": float(metrics.au_mse(measured, intended)[0]),
        "id_distance": metrics.id_distance(tools.embed(identity), tools.embed(edited)),
        "background_rmse": metrics.background_rmse(identity, edited, face),
        "pose_rmse": metrics.pose_rmse(pose_a, pose_b),
    }


def read_triples(path: Path) -> list[tuple[Path, AUVector, Path]]:
    # utf-8-sig: Excel starts a CSV with a byte-order mark, which would otherwise be part of the first column's name.
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        columns = set(reader.fieldnames or ())
    if not columns:
        raise MagicFaceError(f"{path} is empty: it needs a header line identity,au_delta,edited and one line per edit")
    missing = {"identity", "au_delta", "edited"} - columns
    if missing:
        raise MagicFaceError(f"{path} needs the columns identity, au_delta, edited (missing {', '.join(sorted(missing))})")
    if not rows:
        raise MagicFaceError(f"{path} has no rows under its header: add one line per edit (identity, au_delta, edited)")
    base = path.parent
    return [(base / r["identity"], AUVector.parse(r["au_delta"]), base / r["edited"]) for r in rows]


def evaluate(triples: list[tuple[Path, AUVector, Path]], tools: EvalTools, out: Path) -> dict[str, float]:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for identity_path, delta, edited_path in triples:
        row = {"identity": str(identity_path), "au_delta": _delta_text(delta), "edited": str(edited_path)}
        try:
            row.update(evaluate_edit(load_image(identity_path), load_image(edited_path), delta, tools))
        except NoFaceError as exc:
            logger.warning("%s: %s", edited_path, exc)
            row.update({m: float("nan") for m in METRICS})
        rows.append(row)
    with open(out / "per_edit.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["identity", "au_delta", "edited", *METRICS])
        writer.writeheader()
        writer.writerows(rows)
    summary = {m: _nanmean([r[m] for r in rows]) for m in METRICS}
    summary["edits"] = len(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(summary_table(summary))
    return summary


def summary_table(summary: dict) -> str:
    lines = ["| metric | ours | paper (Table I) |", "|---|---|---|"]
    for m in METRICS:
        ours = summary[m]
        lines.append(f"| {m} | {'n/a' if math.isnan(ours) else f'{ours:.3f}'} | {PAPER_TABLE_I[m]:.3f} |")
    lines.append(f"\n{summary['edits']} edits. AU MSE on the 0..5 scale; background RMSE on 0..1 pixels; "
                 "pose RMSE in radians.")
    return "\n".join(lines) + "\n"


def generate_edits(identities: list[Path], deltas: list[AUVector], model, sd15, toolkit, out: Path,
                   settings) -> list[tuple[Path, AUVector, Path]]:
    """Edit every identity with every delta; returns (identity, delta, edited) and writes triples.csv."""
    from ..edit import edit_photo

    folder = out / "edits"
    triples = []
    for identity in identities:
        portrait = as_portrait(load_image(identity))
        batch = AUVector.cat(deltas)
        edited = edit_photo(portrait, batch, model, sd15, faces=toolkit, settings=settings)
        for k, (delta, image) in enumerate(zip(deltas, edited)):
            path = folder / f"{identity.stem}_{k:03d}.png"
            save_image(image, path)
            triples.append((identity, delta, path))
    with open(out / "triples.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["identity", "au_delta", "edited"])
        writer.writerows([(str(i.resolve()), _delta_text(d), str(e.resolve())) for i, d, e in triples])
    return triples


def _delta_text(delta: AUVector) -> str:
    return ",".join(f"{k}={v:g}" for k, v in delta.to_dicts(skip_zeros=True)[0].items())


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def run(job: EvaluateJob, toolkit, device, dtype) -> dict[str, float]:
    """The evaluate command: make the edits (with ``generate``) or read them, measure, write the tables."""
    if job.generate:
        identities, deltas = job.generation_inputs()  # checked before the models load
        from ..model.magicface import MagicFace
        from ..model.sd15 import load_sd15

        model = MagicFace.from_pretrained(job.model.weights, device=device, dtype=dtype)
        sd15 = load_sd15(job.model.sd15, device, dtype)
        triples = generate_edits(identities, deltas, model, sd15, toolkit, job.out, job.sampling)
    else:
        triples = read_triples(job.triples)
    summary = evaluate(triples, default_tools(toolkit, job.id_backend), job.out)
    print(summary_table(summary))
    return summary
