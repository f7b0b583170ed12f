"""The example workflows, and the workflows as shipped in v0.1 (users' saved graphs), against the node
definitions of every tested ComfyUI: node types exist, links join matching types, the widget values
the frontend restores fit the inputs, and the prompt it builds is complete."""

import importlib.util
import json

import pytest

from tests.support.comfy_graph import (BUILTINS_FILES, FRONTEND_ONLY, NEWEST, linked_input, load_builtins,
                                       our_definitions, restored_widgets, socket_inputs, socket_slots, to_api,
                                       value_fits, widget_slots)
from tests.support.paths import REPO

EXAMPLES = REPO / "example_workflows"
WORKFLOWS = sorted(EXAMPLES.glob("*.json"))
SHIPPED_V0_1 = sorted((REPO / "tests" / "data" / "workflows_shipped_v0_1").glob("*.json"))
VERSIONS = list(BUILTINS_FILES)
# Combos whose choices are the user's files: any name is valid in a shared workflow.
FILE_CHOICES = {("LoadImage", "image"), ("LoadVideo", "file"), ("CheckpointLoaderSimple", "ckpt_name"),
                ("UpscaleModelLoader", "model_name"), ("MagicFaceModelLoader", "weights"),
                ("MagicFaceFineFaceApply", "fineface_weights")}
CASES = [(version, path) for path in WORKFLOWS + SHIPPED_V0_1 for version in VERSIONS]


def _case_id(case) -> str:
    version, path = case
    return f"{path.parent.name}/{path.name}@{version}"


def _builder():
    spec = importlib.util.spec_from_file_location("build_workflows", REPO / "tools" / "build_workflows.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    return builder


@pytest.fixture(scope="module")
def ours(pack):
    return our_definitions(pack)


def test_the_workflows_are_there_each_with_its_thumbnail():
    names = [p.name for p in WORKFLOWS]
    assert set(_builder().WORKFLOWS) <= set(names)
    assert [p.name for p in SHIPPED_V0_1] == list(_builder().WORKFLOWS)[:7]
    for path in WORKFLOWS:  # ComfyUI's template browser shows <name>.jpg beside <name>.json
        thumbnail = path.with_suffix(".jpg")
        assert thumbnail.is_file() and thumbnail.read_bytes()[:3] == b"\xff\xd8\xff", thumbnail.name


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_nodes_links_and_widgets_fit(case, ours):
    version, path = case
    definitions = {**load_builtins(version), **ours}
    graph = json.loads(path.read_text())
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert len(nodes) == len(graph["nodes"])
    for node in graph["nodes"]:
        assert node["type"] in definitions or node["type"] in FRONTEND_ONLY, node["type"]
    assert any(n["type"].startswith("MagicFace") for n in graph["nodes"])

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
        saved = [s["name"] for s in socket_slots(node)]
        if path.parent == EXAMPLES:
            assert saved == [name for name, _, _ in sockets], node["type"]
        else:  # a graph saved before an optional socket was added lacks it, and runs without it
            assert saved == [name for name, _, optional in sockets if name in saved or not optional], node["type"]
        widget_names = {name for name, _ in widget_slots(definition)}
        for slot in node["inputs"]:
            if "widget" in slot:  # a widget converted to an input: named after its widget, and linked
                assert slot["widget"]["name"] == slot["name"] in widget_names and slot["link"] is not None
        slots = {slot["name"]: slot for slot in socket_slots(node)}
        for name, _, optional in sockets:
            assert optional or slots[name]["link"] is not None, f"{node['type']}.{name} is required but not connected"
        if path.parent == EXAMPLES and version == NEWEST:  # as the newest frontend saves it: no value missing
            assert len(node["widgets_values"]) == len(widget_slots(definition)), node["type"]
        for name, spec, value in restored_widgets(definition, node["widgets_values"]):
            if spec is not None:
                assert value_fits(spec, value, (node["type"], name) in FILE_CHOICES), (node["type"], name, value)


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_converts_to_a_complete_api_prompt(case, ours):
    version, path = case
    definitions = {**load_builtins(version), **ours}
    prompt = to_api(json.loads(path.read_text()), definitions)
    for node_id, node in prompt.items():
        required = definitions[node["class_type"]]["input"]["required"]
        assert set(required) <= set(node["inputs"]), (node_id, set(required) - set(node["inputs"]))
        for value in node["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                assert value[0] in prompt


def test_the_frontends_restore_rule():
    """Save Video as v0.8.0 saved it, loaded on v0.33.0: the new widgets (the format's codec, the hidden
    codec) take their defaults; and as v0.33.0 saves it, on v0.8.0: the values past its widgets are ignored."""
    old, new = load_builtins("0.8.0")["SaveVideo"], load_builtins("0.33.0")["SaveVideo"]
    assert [(n, v) for n, _, v in restored_widgets(new, ["clips/x", "auto", "auto"])] == [
        ("filename_prefix", "clips/x"), ("format", "auto"), ("format.codec", "auto"), ("codec", "auto")]
    assert [(n, v) for n, _, v in restored_widgets(old, ["clips/x", "mp4", "auto", "auto"])] == [
        ("filename_prefix", "clips/x"), ("format", "mp4"), ("codec", "auto")]


def test_workflows_are_what_the_builder_writes(pack):
    builder = _builder()
    definitions = builder.definitions_for_workflows(pack)
    for name, build in builder.WORKFLOWS.items():
        assert json.loads((EXAMPLES / name).read_text()) == build(definitions), name


def test_v3_nodes_are_read_as_the_server_reads_them():
    """A V3 pack (comfy_entrypoint, io.ComfyNode) gives the same definitions as ComfyUI's /object_info."""
    import types

    from comfy_api.latest import ComfyExtension, io

    class Node(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="TestV3Node", inputs=[
                io.Image.Input("image"), io.Int.Input("seed", default=3, min=0, max=9, control_after_generate=True),
                io.Combo.Input("mode", options=["a", "b"], default="b"), io.Mask.Input("mask", optional=True)],
                outputs=[io.Image.Output("edited")])

        @classmethod
        def execute(cls, image, seed, mode, mask=None):
            return io.NodeOutput(image)

    class Extension(ComfyExtension):
        async def get_node_list(self):
            return [Node]

    async def comfy_entrypoint():
        return Extension()

    definition = our_definitions(types.SimpleNamespace(comfy_entrypoint=comfy_entrypoint))["TestV3Node"]
    server = json.loads(json.dumps(Node.GET_NODE_INFO_V1()))
    assert definition == {key: server[key] for key in ("input", "input_order", "output", "output_name")}
    assert [name for name, _ in widget_slots(definition)] == ["seed", "seed:control_after_generate", "mode"]
    assert [(name, value) for name, _, value in restored_widgets(definition, [5])] == [
        ("seed", 5), ("seed:control_after_generate", "fixed"), ("mode", "b")]
    assert socket_inputs(definition) == [("image", "IMAGE", False), ("mask", "MASK", True)]
