"""ComfyUI's workflow (UI) format: node definitions, widget order, and conversion to the API format,
as ComfyUI's frontend does it (checked against the real frontend in tests/test_comfyui_integration.py).

A UI workflow stores each node's socket inputs with their links and its widget values as a list, in
the order of the node's widgets. The frontend makes one widget per widget input (required, then
optional), with the extra values it adds: the "control after generate" choice after a seed, the upload
button's value after a file picker. A dynamic combo (``COMFY_DYNAMICCOMBO_V3``, e.g. Save Video's
``format`` on newer ComfyUIs) is followed by the widgets of its chosen option, named
``format.codec``, rebuilt whenever its value is set. Loading restores the values by position: a
widget without a stored value keeps its default, and stored values past the last widget are ignored
(this is how a workflow saved on one ComfyUI loads on another). Frontend-only nodes (notes) have no
definition.
"""

from __future__ import annotations

import json
from pathlib import Path

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", DYNAMIC_COMBO}
UPLOADS = ("image_upload", "video_upload", "audio_upload")
FRONTEND_ONLY = {"Note", "MarkdownNote"}
DATA = Path(__file__).parents[1] / "data"
# ComfyUI's built-in nodes that the workflows use, as each version's /object_info gives them
# (tests/test_workflows.py checks every workflow against each; tests/test_comfyui_integration.py
# refreshes nothing and checks against the live server instead).
BUILTINS_FILES = {"0.8.0": DATA / "comfyui_v0.8.0_builtin_nodes.json",
                  "0.33.0": DATA / "comfyui_v0.33.0_builtin_nodes.json"}
OLDEST, NEWEST = "0.8.0", "0.33.0"


def load_builtins(version: str = NEWEST) -> dict:
    return json.loads(BUILTINS_FILES[version].read_text())


def _node_classes(pack) -> dict:
    """{class key: class}: a V1 pack's NODE_CLASS_MAPPINGS, or a V3 pack's extension node list."""
    if hasattr(pack, "NODE_CLASS_MAPPINGS"):
        return dict(pack.NODE_CLASS_MAPPINGS)
    import asyncio

    async def node_list():
        extension = await pack.comfy_entrypoint()
        return await extension.get_node_list()

    return {cls.GET_SCHEMA().node_id: cls for cls in asyncio.run(node_list())}


def our_definitions(pack) -> dict:
    """Our nodes in the shape of ComfyUI's /object_info (as its server builds it for V1 and V3 nodes)."""
    defs = {}
    for key, cls in _node_classes(pack).items():
        if hasattr(cls, "GET_NODE_INFO_V1"):
            info = cls.GET_NODE_INFO_V1()
        else:
            spec = cls.INPUT_TYPES()
            info = {"input": spec, "input_order": {section: list(inputs) for section, inputs in spec.items()},
                    "output": list(cls.RETURN_TYPES),
                    "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES))}
        info = json.loads(json.dumps(info))  # tuples to lists, as the server sends it
        defs[key] = {name: info[name] for name in ("input", "input_order", "output", "output_name")}
    return defs


def input_kind(spec) -> str:
    """The socket type of an input, or "COMBO" for a list of choices."""
    kind = spec[0]
    return "COMBO" if isinstance(kind, list) else kind


def spec_options(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_options(spec) -> list | None:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO":
        return spec_options(spec).get("options", [])
    if spec[0] == DYNAMIC_COMBO:
        return [option["key"] for option in spec_options(spec)["options"]]
    return None


def is_widget(spec) -> bool:
    return input_kind(spec) in WIDGET_TYPES and not spec_options(spec).get("forceInput")


def ordered_inputs(definition) -> list[tuple[str, list, bool]]:
    """(name, spec, optional) in the node's declared order."""
    order = definition.get("input_order") or {s: list(definition["input"].get(s, {})) for s in ("required", "optional")}
    rows = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            rows.append((name, definition["input"][section][name], section == "optional"))
    return rows


def _widgets(inputs, prefix: str = "") -> list[tuple[str, list | None]]:
    slots = []
    for name, spec in inputs:
        if not is_widget(spec):
            continue
        name, options = prefix + name, spec_options(spec)
        slots.append((name, spec))
        if input_kind(spec) == DYNAMIC_COMBO:
            slots += _option_widgets(name, spec, options["options"][0]["key"])
        if options.get("control_after_generate"):
            slots.append((f"{name}:control_after_generate", None))
        if any(options.get(upload) for upload in UPLOADS):
            slots.append((f"{name}:upload", None))
    return slots


def _option_widgets(name: str, spec, key) -> list[tuple[str, list | None]]:
    """The widgets a dynamic combo shows for one of its options (none for an unknown key)."""
    option = next((o for o in spec_options(spec)["options"] if o["key"] == key), None)
    if option is None:
        return []
    inputs = [(n, s) for section in ("required", "optional") for n, s in option["inputs"].get(section, {}).items()]
    return _widgets(inputs, prefix=name + ".")


def widget_slots(definition) -> list[tuple[str, list | None]]:
    """A new node's widgets, in widgets_values order: (name, spec); the frontend's extra values have
    spec None. Dynamic combos show their first option's widgets."""
    return _widgets((name, spec) for name, spec, _ in ordered_inputs(definition))


def default_value(name: str, spec):
    """The value a widget starts with."""
    if spec is None:
        return "fixed" if name.endswith(":control_after_generate") else "image"
    options, kind = spec_options(spec), input_kind(spec)
    if kind == DYNAMIC_COMBO:
        return options["options"][0]["key"]  # the frontend ignores a declared default here
    if "default" in options:
        return options["default"]
    if kind == "COMBO":
        choices = combo_options(spec)
        return choices[0] if choices else None
    return {"INT": options.get("min", 0), "FLOAT": options.get("min", 0.0), "STRING": "", "BOOLEAN": False}[kind]


def restored_widgets(definition, values: list) -> list[tuple[str, list | None, object]]:
    """(name, spec, value) of each widget once the frontend has loaded ``values`` into a node: by
    position, a dynamic combo's option widgets rebuilt as its value is set, defaults where values run
    out, values beyond the last widget ignored."""
    slots, restored, position = widget_slots(definition), [], 0
    while position < len(slots):
        name, spec = slots[position]
        if position < len(values):
            value = values[position]
            if spec is not None and input_kind(spec) == DYNAMIC_COMBO:
                rest = [slot for slot in slots[position + 1:] if not slot[0].startswith(name + ".")]
                slots = slots[:position + 1] + _option_widgets(name, spec, value) + rest
        else:
            value = default_value(name, spec)
        restored.append((name, spec, value))
        position += 1
    return restored


def value_fits(spec, value, any_choice: bool = False) -> bool:
    """Whether a widget accepts ``value`` (``any_choice``: a combo of the user's files takes any name)."""
    kind, options = input_kind(spec), spec_options(spec)
    if kind in ("INT", "FLOAT"):
        number = int if kind == "INT" else (int, float)
        return (isinstance(value, number) and not isinstance(value, bool)
                and options.get("min", value) <= value <= options.get("max", value))
    if kind == "BOOLEAN":
        return isinstance(value, bool)
    if kind == "STRING":
        return isinstance(value, str)
    return isinstance(value, str) if any_choice else value in combo_options(spec)


def socket_inputs(definition) -> list[tuple[str, str, bool]]:
    return [(name, input_kind(spec), optional) for name, spec, optional in ordered_inputs(definition)
            if not is_widget(spec)]


def linked_input(definition, node, slot: int) -> tuple[str, str]:
    """(name, type) of a node's input slot: a socket, or a widget converted to an input (``"widget"`` set)."""
    entry = node["inputs"][slot]
    spec = dict((name, spec) for name, spec, _ in ordered_inputs(definition))[entry["name"]]
    return entry["name"], input_kind(spec)


def socket_slots(node) -> list[dict]:
    """A UI node's socket inputs, without the widgets converted to inputs."""
    return [slot for slot in node.get("inputs", []) if "widget" not in slot]


def to_api(workflow: dict, definitions: dict) -> dict:
    """What the frontend queues for a UI workflow (graphToPrompt): {node id: {class_type, inputs}}."""
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
        for name, spec, value in restored_widgets(definition, node.get("widgets_values", [])):
            if spec is not None and name not in inputs:
                inputs[name] = value
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
