"""One home for every setting (issue 20): each job's settings dataclass holds its defaults, limits and
help; the CLI's flags and the nodes' widgets are made from it, and the library never sees argparse."""

import argparse
import ast
import dataclasses
import typing

import pytest

from magicface_core import cli
from magicface_core.devices import DTYPE_CHOICES, DeviceSettings
from magicface_core.edit import EditJob
from magicface_core.faces.toolkit import DETECTORS, JAW_SOURCES, PARSERS, FaceToolsChoice
from magicface_core.fineface.generate import GenerateSettings
from magicface_core.samplers import SAMPLER_NAMES
from magicface_core.settings import EditSettings
from magicface_core.training.config import TrainConfig
from magicface_core.video.edit import VideoJob, VideoSettings
from tests.support.paths import REPO

CORE = REPO / "magicface_core"


def _defaults(kind: type) -> dict:
    """Every field's default, nested settings flattened: read from the dataclass, not from the CLI."""
    hints, out = typing.get_type_hints(kind), {}
    for f in dataclasses.fields(kind):
        if not f.init:
            continue
        if f.metadata.get("group"):
            out.update({k: v for k, v in _defaults(hints[f.name]).items() if k not in f.metadata["skip"]})
        else:
            out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return out


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_flag_is_a_field_and_defaults_to_it(name):
    parser, job = _subcommands()[name], cli.COMMANDS[name].job
    expected = _defaults(job)
    flags = {a.dest for a in parser._actions if not isinstance(a, argparse._HelpAction)}
    assert flags == set(expected)  # no flag outside the dataclass, no field without its flag
    assert {dest: parser.get_default(dest) for dest in flags} == expected


def test_train_flags_are_the_config_fields():
    from magicface_core.cli.train import build_parser

    flags = {a.dest for a in build_parser()._actions if not isinstance(a, argparse._HelpAction)}
    assert flags == {f.name for f in dataclasses.fields(TrainConfig)} | {"config"}


def test_prepare_and_evaluate_flags_kept_their_names_and_defaults():
    """The move to dataclasses changed no flag a user types (the evaluate sampler gained its choices)."""
    prepare = _subcommands()["prepare"].parse_args(["--videos", "v", "--out", "d"])
    assert (prepare.frame_step, prepare.max_frames, prepare.min_gap, prepare.pairs_per_clip, prepare.seed) == \
        (5, 200, 30, 50, 0)
    evaluate = _subcommands()["evaluate"].parse_args(["--triples", "t.csv", "--out", "o"])
    assert (evaluate.steps, evaluate.guidance, evaluate.seed, evaluate.sampler, evaluate.id_backend) == \
        (50, 3.0, 0, "uni_pc", "face_recognition")
    with pytest.raises(SystemExit):
        _subcommands()["evaluate"].parse_args(["--triples", "t.csv", "--out", "o", "--sampler", "plms"])


# (node, input) -> (dataclass, field, a CLI command with that flag). FineFace Apply's weights are a list of
# the folders in models/magicface (and a download choice), where --fineface-weights takes a path or hub id.
NODE_DEFAULTS = [
    ("MagicFaceKSampler", "seed", EditSettings, "seed", "edit"),
    ("MagicFaceKSampler", "steps", EditSettings, "steps", "edit"),
    ("MagicFaceKSampler", "au_guidance", EditSettings, "guidance", "edit"),
    ("MagicFaceKSampler", "sampler", EditSettings, "sampler", "edit"),
    ("MagicFaceKSampler", "frames_per_chunk", VideoSettings, "frames_per_chunk", "video"),
    ("MagicFaceFaceTrack", "face_index", VideoSettings, "face_index", "animate"),
    ("MagicFaceFaceTrack", "detect_every", VideoSettings, "detect_every", "video"),
    ("MagicFaceAUSmooth", "cutoff_hz", VideoSettings, "au_cutoff_hz", "video"),
    ("MagicFaceAUKeyframes", "interpolation", VideoJob, "interpolation", "video"),
    ("MagicFaceAUEstimate", "face_index", EditJob, "face_index", "estimate"),
    ("MagicFaceFaceCrop", "face_index", EditJob, "face_index", "edit"),
    ("MagicFaceFaceCrop", "detector", FaceToolsChoice, "detector", "edit"),
    ("MagicFaceFaceParseContour", "parser", FaceToolsChoice, "parser", "condition"),
    ("MagicFaceFaceParseContour", "jaw", FaceToolsChoice, "jaw", "condition"),
    ("MagicFaceFaceTools", "detector", FaceToolsChoice, "detector", "prepare"),
    ("MagicFaceFaceTools", "parser", FaceToolsChoice, "parser", "evaluate"),
    ("MagicFaceFaceTools", "jaw", FaceToolsChoice, "jaw", "video"),
    ("MagicFaceModelLoader", "dtype", DeviceSettings, "dtype", "edit"),
    ("MagicFaceFineFaceApply", "lora_strength", GenerateSettings, "lora_strength", "generate"),
    ("MagicFaceFineFaceApply", "au_scale", GenerateSettings, "au_scale", "generate"),
]
CHOICES = {("MagicFaceKSampler", "sampler"): SAMPLER_NAMES, ("MagicFaceFaceCrop", "detector"): DETECTORS,
           ("MagicFaceFaceParseContour", "parser"): PARSERS, ("MagicFaceFaceParseContour", "jaw"): JAW_SOURCES,
           ("MagicFaceModelLoader", "dtype"): DTYPE_CHOICES}


@pytest.fixture(scope="module")
def node_inputs(pack):
    out = {}
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        types = cls.INPUT_TYPES()
        out[key] = {**types.get("required", {}), **types.get("optional", {})}
    return out


@pytest.mark.parametrize("node, name, kind, field_name, command", NODE_DEFAULTS)
def test_nodes_and_cli_share_one_default(node_inputs, node, name, kind, field_name, command):
    spec = node_inputs[node][name]
    options = spec[1] if len(spec) > 1 else {}
    expected = _defaults(kind)[field_name]
    assert options["default"] == expected, (node, name)
    assert _subcommands()[command].get_default(field_name) == expected, (command, field_name)
    if (node, name) in CHOICES:
        listed = spec[0] if isinstance(spec[0], list) else options["options"]
        assert set(listed) == set(CHOICES[node, name])


def test_frames_per_chunk_is_one_number_everywhere(node_inputs):
    """It was 8 in the CLI and 16 in the KSampler node; VideoSettings now holds the one default."""
    assert node_inputs["MagicFaceKSampler"]["frames_per_chunk"][1]["default"] == VideoSettings().frames_per_chunk
    for command in ("video", "animate"):
        assert _subcommands()[command].get_default("frames_per_chunk") == VideoSettings().frames_per_chunk


# --- the library never takes an argparse Namespace ---------------------------------------------

def _library_files():
    return [p for p in sorted(CORE.rglob("*.py")) if "cli" not in p.relative_to(CORE).parts]


def test_no_library_function_takes_a_namespace():
    offenders = []
    for path in _library_files():
        text = path.read_text()
        tree = ast.parse(text)
        if "argparse" in text or "Namespace" in text or "HfArgumentParser" in text:
            offenders.append(f"{path.relative_to(REPO)}: mentions argparse")
        for node in ast.walk(tree):
            # A Namespace is read by attribute (args.steps); a hook's positional ``args`` tuple is not.
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "args":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} args.{node.attr}")
    assert offenders == []


def test_no_flag_is_written_outside_the_builder():
    """Only magicface_core/cli/flags.py adds arguments from settings (train's --config is the one extra flag)."""
    places = {str(p.relative_to(REPO)) for p in CORE.rglob("*.py") if "add_argument(" in p.read_text()}
    assert places == {"magicface_core/cli/flags.py", "magicface_core/cli/train.py"}


def test_the_sampler_table_is_on_the_ground_floor():
    """settings.py reads the sampler table without importing the model package (which imports settings)."""
    imports = [n for n in ast.walk(ast.parse((CORE / "samplers.py").read_text()))
               if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert all(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in imports)
    settings = ast.parse((CORE / "settings.py").read_text())
    modules = {n.module for n in ast.walk(settings) if isinstance(n, ast.ImportFrom)}
    assert not any(m and m.startswith("model") for m in modules)
