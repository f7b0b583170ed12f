"""``python -m magicface_core evaluate``: the paper's metrics for a set of edits.

    # edits you already have: a CSV with columns identity, au_delta, edited
    python -m magicface_core evaluate --triples edits.csv --out results/
    # or let it make the edits: every identity image x every AU delta line
    python -m magicface_core evaluate --generate --identities portraits/ --deltas deltas.txt \\
        --weights mengtingwei/magicface --out results/

Writes ``per_edit.csv`` and ``summary.md`` / ``summary.json`` (means, beside the paper's Table I),
and with ``--generate`` ``triples.csv`` and ``edits/``; files already in ``--out`` are never
replaced (the run refuses before any model loads). With ``--generate`` the identities are split over
processes (``torchrun``/``accelerate launch``) and jobs (``--shard I/N``) as ``prepare`` splits clips
(:mod:`magicface_core.scaleout`): each process edits and measures its identities and records their
rows in ``edits/<identity>.json``; one process writes the tables from every record once all are
there, so the tables equal a one-process run's (or ``--merge`` writes them). Each record keeps the
sampling settings and deltas it was made with; a shard or a rerun with others is refused before any
model loads, so one table never mixes two settings.
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import metrics
from ..au import AUVector
from .. import scaleout
from ..devices import DeviceSettings
from ..errors import MagicFaceError, NoFaceError, OutputPathError, SettingsError
from ..faces.toolkit import FaceSettings
from ..files import atomic_path
from ..imaging import as_portrait, load_image, resize, save_image
from ..scaleout import Shard
from ..settings import EditSettings, ModelSettings, as_path, check_au_delta, group, option, require

logger = logging.getLogger(__name__)

PAPER_TABLE_I = {"au_mse": 0.261, "id_distance": 0.473, "background_rmse": 0.044, "pose_rmse": 0.032}
METRICS = tuple(PAPER_TABLE_I)
RESULTS = ("per_edit.csv", "summary.json", "summary.md")
TRIPLES = "triples.csv"
EDITS = "edits"


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
    shard: str = option("0/1", "I/N: with --generate, this job's part of the identities when N jobs share the work "
                               "(a Slurm array); the last to finish writes the tables")
    merge: bool = option(False, "with --generate: only write the tables from the records the shards wrote")
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
        if self.merge and not self.generate:
            raise MagicFaceError("--merge goes with --generate (it writes the tables of the shards' edits)")
        if not self.generate and not self.triples:
            raise MagicFaceError("give --triples, or --generate with --identities and --deltas")
        Shard.parse(self.shard)

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

    def made_with(self, deltas: list[AUVector], dtype) -> dict:
        """What decides the edits (kept in every identity's record, compared by every shard): the
        model, the sampling, the deltas and the resolved precision (not the device: each process has its own)."""
        return json.loads(json.dumps({"model": asdict(self.model), "sampling": asdict(self.sampling),
                                      "deltas": [_delta_text(d) for d in deltas], "dtype": str(dtype)}, default=str))


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


def measure(triples: list[tuple[Path, AUVector, Path]], tools: EvalTools) -> list[dict]:
    """One row of metrics per (identity, delta, edited) triple (NaN where a face is not found)."""
    rows = []
    for identity_path, delta, edited_path in triples:
        row = {"identity": str(identity_path), "au_delta": _delta_text(delta), "edited": str(edited_path)}
        try:
            row.update(evaluate_edit(load_image(identity_path), load_image(edited_path), delta, tools))
        except NoFaceError as exc:
            logger.warning("%s: %s", edited_path, exc)
            row.update({m: float("nan") for m in METRICS})
        rows.append(row)
    return rows


def check_results_free(out: Path, names: tuple[str, ...] = RESULTS) -> None:
    """Refuse an ``--out`` that already holds results (a user's or an earlier run's): nothing is replaced."""
    taken = [name for name in names if (out / name).exists()]
    if taken:
        raise OutputPathError(f"{out} already holds {', '.join(taken)}; choose another --out (nothing is replaced)")


def write_results(rows: list[dict], out: Path) -> dict[str, float]:
    """``per_edit.csv``, ``summary.json`` and ``summary.md``, each written whole and never over a file."""
    out.mkdir(parents=True, exist_ok=True)
    check_results_free(out)
    summary = {m: _nanmean([r[m] for r in rows]) for m in METRICS}
    summary["edits"] = len(rows)
    with atomic_path(out / "per_edit.csv", overwrite=False) as temporary:
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["identity", "au_delta", "edited", *METRICS])
            writer.writeheader()
            writer.writerows(rows)
    for name, text in (("summary.json", json.dumps(summary, indent=2)), ("summary.md", summary_table(summary))):
        with atomic_path(out / name, overwrite=False) as temporary:
            temporary.write_text(text)
    return summary


def evaluate(triples: list[tuple[Path, AUVector, Path]], tools: EvalTools, out: Path) -> dict[str, float]:
    check_results_free(out)  # before any measuring
    return write_results(measure(triples, tools), out)


def summary_table(summary: dict) -> str:
    lines = ["| metric | ours | paper (Table I) |", "|---|---|---|"]
    for m in METRICS:
        ours = summary[m]
        lines.append(f"| {m} | {'n/a' if math.isnan(ours) else f'{ours:.3f}'} | {PAPER_TABLE_I[m]:.3f} |")
    lines.append(f"\n{summary['edits']} edits. AU MSE on the 0..5 scale; background RMSE on 0..1 pixels; "
                 "pose RMSE in radians.")
    return "\n".join(lines) + "\n"


Edit = Callable[[np.ndarray, AUVector], list[np.ndarray]]  # portrait, a batch of deltas -> one edit per delta


def _edit_paths(out: Path, identity: Path, deltas: list[AUVector]) -> list[Path]:
    return [out / EDITS / f"{identity.stem}_{k:03d}.png" for k in range(len(deltas))]


def _record_path(out: Path, identity: Path) -> Path:
    return out / EDITS / f"{identity.stem}.json"


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, or cut short: the identity is done again
    return record if isinstance(record, dict) and isinstance(record.get("rows"), list) else None


def check_records_match(identities: list[Path], out: Path, made_with: dict | None) -> None:
    """Refuse records made with other settings or deltas (another shard's flags, an earlier run)."""
    if made_with is None:
        return
    for identity in identities:
        record = _read_record(_record_path(out, identity))
        theirs = None if record is None else record.get("made_with")
        if theirs is not None and theirs != made_with:
            differ = ", ".join(k for k in made_with if theirs.get(k) != made_with[k])
            raise SettingsError(f"{identity.name}'s edits in {out / EDITS} were made with other settings ({differ} "
                                f"differ): give every shard the same flags, or choose another --out")


def check_generate_outputs(identities: list[Path], deltas: list[AUVector], out: Path, shard: Shard = Shard(),
                           made_with: dict | None = None) -> None:
    """Before any model loads: no result table in ``--out`` yet, no record made with other settings,
    and no edit file this process would write that is not its own (an identity's edits belong to
    the run once its record is written)."""
    check_results_free(out, (TRIPLES, *RESULTS))
    check_records_match(identities, out, made_with)
    own = set(shard.split(scaleout.launched()).take(p.name for p in identities))
    todo = [i for i in identities if i.name in own and _read_record(_record_path(out, i)) is None]
    taken = [path for identity in todo for path in (*_edit_paths(out, identity, deltas), _record_path(out, identity))
             if path.exists()]
    if taken:
        raise OutputPathError(f"{out} already holds {', '.join(str(p) for p in taken[:3])}"
                              f"{' ...' if len(taken) > 3 else ''}; choose another --out (nothing is replaced)")


def generate_and_evaluate(identities: list[Path], deltas: list[AUVector], edit: Edit, tools: EvalTools, out: Path,
                          shard: Shard = Shard(), made_with: dict | None = None) -> dict[str, float] | None:
    """Edit every identity with every delta, measure each edit, and write the tables.

    ``shard``: this job's part of the identities (each identity's edits are one batch, so the split
    never changes an edit); under a launcher it is split again over the job's processes. An
    identity whose record exists is not done again, so an interrupted run resumes. Returns the
    summary, or None where another process writes the tables (rank 0, or the shard finishing last).
    ``made_with`` (what decides the edits) is kept in each record and must match the others'."""
    identities = sorted(identities)
    check_generate_outputs(identities, deltas, out, shard, made_with)
    processes = scaleout.launched()
    own = set(shard.split(processes).take(p.name for p in identities))
    for identity in identities:
        if identity.name not in own or _read_record(_record_path(out, identity)) is not None:
            continue
        edited = edit(as_portrait(load_image(identity)), AUVector.cat(deltas))
        paths = _edit_paths(out, identity, deltas)
        for image, path in zip(edited, paths, strict=True):
            save_image(image, path, overwrite=False)
        rows = measure([(identity, delta, path) for delta, path in zip(deltas, paths)], tools)
        with atomic_path(_record_path(out, identity)) as temporary:  # written last: the identity is done
            temporary.write_text(json.dumps({"rows": rows, "made_with": made_with}))
    scaleout.barrier(processes)
    try:
        if processes.index != 0:
            return None
        records = [_read_record(_record_path(out, identity)) for identity in identities]
        if any(r is None for r in records):
            logger.info("shard %s done; identities of other shards are not done yet; the shard that finishes "
                        "last writes the tables", shard)
            return None
        try:
            return merge_generated(identities, out, made_with)
        except OutputPathError:
            if all((out / name).exists() for name in (TRIPLES, *RESULTS)):
                return None  # another shard, finishing at the same moment, wrote the same tables
            raise
    finally:
        scaleout.finish()


def merge_generated(identities: list[Path], out: Path, made_with: dict | None = None) -> dict[str, float]:
    """``triples.csv`` and the result tables from every identity's record, in identity order."""
    check_records_match(identities, out, made_with)
    rows = []
    for identity in sorted(identities):
        record = _read_record(_record_path(out, identity))
        if record is None:
            raise MagicFaceError(f"{identity.name} has no edits in {out / EDITS} yet: "
                                 "run the shard that holds it first")
        rows.extend(record["rows"])
    if (out / TRIPLES).exists() and all((out / name).exists() for name in RESULTS):
        # two shards finishing at once: the other wrote the same tables first
        return json.loads((out / "summary.json").read_text())
    check_results_free(out, (TRIPLES, *RESULTS))
    with atomic_path(out / TRIPLES, overwrite=False) as temporary:
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["identity", "au_delta", "edited"])
            writer.writerows([(str(Path(r["identity"]).resolve()), r["au_delta"], str(Path(r["edited"]).resolve()))
                              for r in rows])
    return write_results(rows, out)


def _delta_text(delta: AUVector) -> str:
    return ",".join(f"{k}={v:g}" for k, v in delta.to_dicts(skip_zeros=True)[0].items())


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def run(job: EvaluateJob, toolkit, device, dtype) -> dict[str, float] | None:
    """The evaluate command: make the edits (with ``generate``: this shard's, this process's identities)
    or read them, measure, write the tables."""
    if job.generate:
        from ..edit import edit_photo
        from ..model.magicface import MagicFace
        from ..model.sd15 import load_sd15

        shard = Shard.parse(job.shard)
        identities, deltas = job.generation_inputs()  # checked before the models load
        made_with = job.made_with(deltas, dtype)
        if job.merge:
            summary = merge_generated(identities, job.out, made_with)
            print(summary_table(summary))
            return summary
        check_generate_outputs(identities, deltas, job.out, shard, made_with)
        model = MagicFace.from_pretrained(job.model.weights, device=device, dtype=dtype)
        sd15 = load_sd15(job.model.sd15, device, dtype)

        def edit(portrait, batch):
            return edit_photo(portrait, batch, model, sd15, faces=toolkit, settings=job.sampling)

        tools = default_tools(toolkit, job.id_backend)
        summary = generate_and_evaluate(identities, deltas, edit, tools, job.out, shard, made_with)
        if summary is None:
            print(f"this process's identities are done (shard {shard}, process {scaleout.launched()}); the tables "
                  f"are written once every identity is: by rank 0, or by the shard that finishes last")
            return None
    else:
        check_results_free(job.out)  # before the face networks load
        summary = evaluate(read_triples(job.triples), default_tools(toolkit, job.id_backend), job.out)
    print(summary_table(summary))
    return summary
