"""The example workflows: node types exist, links join matching types, widget values fit the inputs."""

import json

import pytest

from tests.support.comfy_graph import (FRONTEND_ONLY, combo_options, input_kind, linked_input, load_builtins,
                                       our_definitions, socket_inputs, socket_slots, to_api, widget_slots)
from tests.support.paths import REPO

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
# Combos whose choices are the user's files: any name is valid in a shared workflow.
FILE_CHOICES = {("LoadImage", "image"), ("LoadVideo", "file"), ("CheckpointLoaderSimple", "ckpt_name"),
                ("UpscaleModelLoader", "model_name"), ("MagicFaceModelLoader", "weights")}


@pytest.fixture(scope="module")
def definitions(pack):
    return {**load_builtins(), **our_definitions(pack)}


def test_the_workflows_are_there():
    assert [p.name for p in WORKFLOWS] == ["1_edit_portrait.json", "2_expression_transfer.json", "3_au_sweep.json",
                                           "4_edit_then_upscale.json", "5_animate_portrait.json", "6_edit_video.json",
                                           "7_edit_with_ksampler.json"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_nodes_links_and_widgets_fit(path, definitions):
    graph = json.loads(path.read_text())
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert len(nodes) == len(graph["nodes"])
    for node in graph["nodes"]:
        assert node["type"] in definitions or node["type"] in FRONTEND_ONLY, node["type"]
    used_types = {n["type"] for n in graph["nodes"]} - FRONTEND_ONLY
    assert used_types <= set(definitions)
    assert any(t.startswith("MagicFace") for t in used_types)

    for link_id, source, out_slot, target, in_slot, kind in graph["links"]:
        source_node, target_node = nodes[source], nodes[target]
        assert definitions[source_node["type"]]["output"][out_slot] == kind, link_id
        name, input_type = linked_input(definitions[target_node["type"]], target_node, in_slot)
        assert input_type == kind, (link_id, name)
        assert target_node["inputs"][in_slot]["link"] == link_id
        assert link_id in source_node["outputs"][out_slot]["links"]

    for node in graph["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        definition = definitions[node["type"]]
        sockets = socket_inputs(definition)
        assert [s["name"] for s in socket_slots(node)] == [name for name, _, _ in sockets], node["type"]
        widget_names = {name for name, _ in widget_slots(definition)}
        for slot in node["inputs"]:
            if "widget" in slot:  # a widget converted to an input: named after its widget, and linked
                assert slot["widget"]["name"] == slot["name"] in widget_names and slot["link"] is not None
        for slot, (name, _, optional) in zip(socket_slots(node), sockets):
            assert optional or slot["link"] is not None, f"{node['type']}.{name} is required but not connected"
        slots = widget_slots(definition)
        values = node["widgets_values"]
        assert len(values) == len(slots), node["type"]
        for (name, spec), value in zip(slots, values):
            if spec is None:
                continue
            kind, options = input_kind(spec), (spec[1] if len(spec) > 1 else {})
            if kind == "INT":
                assert isinstance(value, int) and options.get("min", value) <= value <= options.get("max", value)
            elif kind == "FLOAT":
                assert isinstance(value, (int, float)) and options.get("min", value) <= value <= options.get("max", value)
            elif kind == "BOOLEAN":
                assert isinstance(value, bool)
            elif kind == "STRING":
                assert isinstance(value, str)
            elif (node["type"], name) not in FILE_CHOICES:
                assert value in combo_options(spec), (node["type"], name, value)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_converts_to_a_complete_api_prompt(path, definitions):
    prompt = to_api(json.loads(path.read_text()), definitions)
    for node_id, node in prompt.items():
        required = definitions[node["class_type"]]["input"]["required"]
        assert set(required) <= set(node["inputs"]), (node_id, set(required) - set(node["inputs"]))
        for value in node["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                assert value[0] in prompt


def test_workflows_are_what_the_builder_writes(pack):
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_workflows", REPO / "tools" / "build_workflows.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    definitions = {**load_builtins(), **our_definitions(pack)}
    for name, build in builder.WORKFLOWS.items():
        assert json.loads((REPO / "workflows" / name).read_text()) == build(definitions), name
