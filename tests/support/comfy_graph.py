"""ComfyUI's workflow (UI) format: node definitions, widget order, and conversion to the API format.

A UI workflow stores each node's socket inputs with their links and its widget values as a
list, in the order of the node's widget inputs (required, then optional), with the extra
values the frontend adds: the "control after generate" choice after a seed, the upload
button's value after an image picker. Frontend-only nodes (notes) have no definition.
"""

from __future__ import annotations

import json
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote"}
BUILTINS_FILE = Path(__file__).parents[1] / "data" / "comfyui_v0.8.0_builtin_nodes.json"


def load_builtins() -> dict:
    return json.loads(BUILTINS_FILE.read_text())


def our_definitions(pack) -> dict:
    """Our nodes in the shape of ComfyUI's /object_info."""
    defs = {}
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        defs[key] = {
            "input": spec,
            "input_order": {section: list(spec[section]) for section in ("required", "optional") if section in spec},
            "output": list(cls.RETURN_TYPES),
            "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
        }
    return defs


def input_kind(spec) -> str:
    """The socket type of an input, or "COMBO" for a list of choices."""
    kind = spec[0]
    return "COMBO" if isinstance(kind, list) else kind


def combo_options(spec) -> list | None:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO":
        return (spec[1] if len(spec) > 1 else {}).get("options", [])
    return None


def ordered_inputs(definition) -> list[tuple[str, list, bool]]:
    """(name, spec, optional) in the node's declared order."""
    order = definition.get("input_order") or {s: list(definition["input"].get(s, {})) for s in ("required", "optional")}
    rows = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            rows.append((name, definition["input"][section][name], section == "optional"))
    return rows


def widget_slots(definition) -> list[tuple[str, list | None]]:
    """The widgets_values layout: (input name, spec) per value; extra frontend values have spec None."""
    slots = []
    for name, spec, _ in ordered_inputs(definition):
        if input_kind(spec) not in WIDGET_TYPES:
            continue
        options = spec[1] if len(spec) > 1 else {}
        slots.append((name, spec))
        if options.get("control_after_generate"):
            slots.append((f"{name}:control_after_generate", None))
        if options.get("image_upload"):
            slots.append((f"{name}:upload", None))
    return slots


def socket_inputs(definition) -> list[tuple[str, str, bool]]:
    return [(name, input_kind(spec), optional) for name, spec, optional in ordered_inputs(definition)
            if input_kind(spec) not in WIDGET_TYPES]


def linked_input(definition, node, slot: int) -> tuple[str, str]:
    """(name, type) of a node's input slot: a socket, or a widget converted to an input (``"widget"`` set)."""
    entry = node["inputs"][slot]
    spec = dict((name, spec) for name, spec, _ in ordered_inputs(definition))[entry["name"]]
    return entry["name"], input_kind(spec)


def socket_slots(node) -> list[dict]:
    """A UI node's socket inputs, without the widgets converted to inputs."""
    return [slot for slot in node.get("inputs", []) if "widget" not in slot]


def to_api(workflow: dict, definitions: dict) -> dict:
    """What the frontend queues for a UI workflow: {node id: {class_type, inputs}}."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) != 0:
            continue
        definition = definitions[node["type"]]
        inputs = {}
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                _, source, source_slot, _, _, _ = links[slot["link"]]
                inputs[slot["name"]] = [str(source), source_slot]
        values = node.get("widgets_values", [])
        for (name, spec), value in zip(widget_slots(definition), values):
            if spec is not None and name not in inputs:
                inputs[name] = value
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
