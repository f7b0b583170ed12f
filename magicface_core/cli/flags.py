"""The one dataclass -> argparse builder: every flag of every command comes from a settings field.

A field made with :func:`magicface_core.settings.option` becomes ``--its-name`` (or the flag its
metadata names) with the field's default, choices, help and limits; a field made with
:func:`~magicface_core.settings.group` holds another settings dataclass, whose fields become flags of
the same command. :func:`build` turns the parsed flags back into the dataclass, whose own checks
then run, before anything loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from pathlib import Path


def _plain(kind):
    """``Path | None`` -> Path, ``list[str]`` -> str, ``int`` -> int."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        (kind,) = [k for k in typing.get_args(kind) if k is not type(None)]
    if typing.get_origin(kind) is list:
        (kind,) = typing.get_args(kind)
    return kind


def _limits(meta: dict) -> str:
    low, high = meta.get("min"), meta.get("max")
    if low is not None and high is not None:
        return f"{low:g} to {high:g}" if isinstance(low, float) else f"{low} to {high}"
    if low is not None:
        return f"at least {low}"
    return f"at most {high}" if high is not None else ""


def _help(meta: dict, default) -> str:
    parts = [meta.get("help") or ""]
    limits = _limits(meta)
    if limits and meta.get("max") != 2**64 - 1:
        parts.append(f"[{limits}]")
    if not (default is None or default is False or default == [] or default == ""):
        parts.append(f"(default: {default})")
    return " ".join(p for p in parts if p).replace("%", "%%")


def settings_fields(kind: type, skip: tuple[str, ...] = ()):
    """(field, type) of every setting of ``kind``, groups flattened, in order."""
    hints = typing.get_type_hints(kind)
    for f in dataclasses.fields(kind):
        if f.name in skip or not f.init:
            continue
        if f.metadata.get("group"):
            yield from settings_fields(hints[f.name], f.metadata.get("skip", ()))
        else:
            yield f, hints[f.name]


_DEFAULTS = object()


def add_flags(parser: argparse.ArgumentParser, kind: type, unset=_DEFAULTS) -> None:
    """One flag per setting of ``kind`` (a name given twice is a programming error, caught here).

    With ``unset``, a flag not given comes back as ``unset`` (so it overrides nothing, e.g. a YAML file's
    value) and its text goes to the dataclass as typed, for the dataclass's own coercion to read
    (``--use-ema false``, ``--max-steps 1e3``); such a flag also answers to its underscore spelling.
    """
    lenient = unset is not _DEFAULTS
    seen = set()
    for f, hint in settings_fields(kind):
        if f.name in seen:
            raise TypeError(f"{kind.__name__}: the setting {f.name} is defined twice")
        seen.add(f.name)
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if meta.get("switches"):
            switches = parser.add_mutually_exclusive_group()
            for flag, value in meta["switches"].items():
                help_text = meta["help"].get(flag, "") if isinstance(meta.get("help"), dict) else ""
                if value == default:
                    help_text += " (default)"
                switches.add_argument(flag, dest=f.name, action="store_const", const=value, help=help_text.strip())
            parser.set_defaults(**{f.name: default})
            continue
        kind_of, choices = _plain(hint), meta.get("choices")
        if typing.get_origin(kind_of) is typing.Literal:
            kind_of, choices = str, typing.get_args(kind_of)
        spec: dict = {"help": _help(meta, default)}
        if meta.get("metavar"):
            spec["metavar"] = meta["metavar"]
        if kind_of is bool:
            spec.update({"nargs": "?", "const": True, "metavar": "true|false"} if lenient else {"action": "store_true"})
        else:
            spec["type"] = str if lenient or kind_of not in (int, float, Path) else kind_of
            if choices is not None:
                spec["choices"] = list(choices)
            if meta.get("repeat"):
                spec["action"] = "append"
            elif typing.get_origin(hint) is list and lenient:
                spec["nargs"] = "+"
            if meta.get("nargs"):
                spec["nargs"] = meta["nargs"]
        if meta.get("positional"):
            parser.add_argument(f.name, **spec)
            continue
        flags = [meta.get("flag") or "--" + f.name.replace("_", "-")]
        if lenient and "_" in f.name:
            flags.append("--" + f.name)
        parser.add_argument(*flags, dest=f.name, default=unset if lenient else default,
                            required=bool(meta.get("required")), **spec)


def build(kind: type, values: argparse.Namespace | dict, skip: tuple[str, ...] = ()):
    """``kind`` made from parsed flags (groups made first); its checks run as it is made."""
    values = vars(values) if isinstance(values, argparse.Namespace) else values
    hints = typing.get_type_hints(kind)
    made = {}
    for f in dataclasses.fields(kind):
        if f.name in skip or not f.init:
            continue
        if f.metadata.get("group"):
            made[f.name] = build(hints[f.name], values, f.metadata.get("skip", ()))
        elif f.name in values:
            made[f.name] = values[f.name]
    return kind(**made)


def defaults(kind: type) -> dict:
    """Every setting's default by name, groups flattened (what the flags default to)."""
    return {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f, _ in settings_fields(kind)}


def attach_keyframes_values(argv: list[str], option: str = "--keyframes") -> list[str]:
    """``--keyframes -5:AU12=2`` given as ``--keyframes=-5:AU12=2``.

    argparse reads a value that starts with '-' as a flag and says only "expected one argument";
    attached, the value reaches :func:`parse_keyframes`, which says what is wrong with it.
    """
    out = []
    for i, arg in enumerate(argv):
        if out and out[-1] == option and re.match(r"-\s*\d", arg) and argv[i - 1] == option:
            out[-1] = f"{option}={arg}"
        else:
            out.append(arg)
    return out
