"""The V3 nodes declare what the V1 nodes did: class keys, display names, outputs, and every input with its
section, order, type and widget options (saved workflows store widget values by position and name the rest).

``tests/data/v1_node_schema.json`` is the V1 nodes' ``INPUT_TYPES()`` and outputs captured before the rewrite
(with no weights in models/magicface, so the loader lists only its download choice)."""

import json

import pytest

from tests.support.paths import REPO

V1 = json.loads((REPO / "tests" / "data" / "v1_node_schema.json").read_text())
# Inputs added since, all optional sockets without a widget (they take no widget value slot).
ADDED = {"face_tools"}
NEW_NODES = {"MagicFaceFaceTools", "MagicFaceFineFaceApply", "MagicFaceFineFaceAUConditioning"}
# Defaults changed on purpose since the capture (a saved workflow keeps its own widget values): the
# KSampler's frames_per_chunk was 16 against the CLI's 8; VideoSettings now holds the one default (issue 20).
CHANGED_DEFAULTS = {("MagicFaceKSampler", "frames_per_chunk"): 8}
# Keys V3 adds to every combo; the frontend reads the options from "options" or the list alike.
V3_ONLY = {"multiselect", "options"}


def _normalized(section: dict, skip=()) -> list:
    out = []
    for name, spec in section.items():
        if name in skip:
            continue
        kind, options = (spec[0], spec[1] if len(spec) > 1 else {})
        if isinstance(kind, list):  # V1 combo
            kind, options = "COMBO", {**options, "options": kind}
        out.append((name, kind, options))
    return out


@pytest.fixture(scope="module")
def v3(pack, tmp_path_factory):
    import os

    old = os.environ.get("MAGICFACE_MODELS")
    os.environ["MAGICFACE_MODELS"] = str(tmp_path_factory.mktemp("no-weights"))
    try:
        return {key: (cls, cls.INPUT_TYPES()) for key, cls in pack.NODE_CLASS_MAPPINGS.items()}
    finally:
        if old is None:
            del os.environ["MAGICFACE_MODELS"]
        else:
            os.environ["MAGICFACE_MODELS"] = old


def test_every_v1_node_is_there_under_its_key_and_name(pack, v3):
    assert set(v3) - NEW_NODES == set(V1)
    for key, saved in V1.items():
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[key] == saved["display_name"]
        cls = v3[key][0]
        assert list(cls.RETURN_TYPES) == saved["return_types"], key
        assert list(cls.RETURN_NAMES) == saved["return_names"], key
        assert cls.CATEGORY == saved["category"]


@pytest.mark.parametrize("key", sorted(V1))
def test_inputs_keep_their_section_order_type_and_widget_options(v3, key):
    saved, now = V1[key]["input"], v3[key][1]
    assert set(now) - {"optional"} == set(saved) - {"optional"}
    for section in ("required", "optional"):
        old = _normalized(saved.get(section, {}))
        new = _normalized(now.get(section, {}), skip=ADDED)
        assert [n for n, *_ in new] == [n for n, *_ in old], (key, section)  # order: widget values are positional
        for (name, kind_old, opts_old), (_, kind_new, opts_new) in zip(old, new):
            assert kind_new == kind_old, (key, name)
            for option, value in opts_old.items():
                if option == "default" and (key, name) in CHANGED_DEFAULTS:
                    value = CHANGED_DEFAULTS[key, name]
                assert opts_new.get(option) == value, (key, name, option, opts_new.get(option), value)
            assert set(opts_new) - set(opts_old) <= V3_ONLY, (key, name, set(opts_new) - set(opts_old))
