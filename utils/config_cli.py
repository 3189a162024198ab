"""Typed config trees of nested dataclasses: command-line flags generated from their fields (one `--name`
per leaf field, help from the field's metadata), flat <-> nested conversion and strict loading of saved
dicts (unknown keys give one UserError)."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterator
from typing import Any

from utils.cli import UserError

Config = Any  # a dataclass instance


def option(default: Any = dataclasses.MISSING, help: str = "", **meta: Any) -> Any:
    """A dataclass field with command-line metadata: help, and optionally choices, metavar, default_text
    (the default as the help shows it), flags (other spellings, e.g. ("-s",)), off_flags (other spellings
    of a bool's --no_ flag), required and positional (an argument without dashes, always given)."""
    return dataclasses.field(default=default, metadata={"help": help, **meta})


def section(factory: type, title: str, helps: dict[str, str] | None = None, **meta: Any) -> Any:
    """A nested config field: its flags form the argparse group `title`; `helps` gives the help of leaf
    fields that carry none (a dataclass defined elsewhere), meta["choices"] maps names to choices,
    meta["internal"] names the leaf fields that have no flag (set by the program) and meta["prefix"] starts
    the flag names of its fields (e.g. "track_": field steps, flag --track_steps)."""
    return dataclasses.field(default_factory=factory, metadata={"title": title, "helps": helps or {}, **meta})


def is_section(f: dataclasses.Field) -> bool:
    """True for a nested config field made by section()."""
    return "title" in f.metadata


@dataclasses.dataclass(frozen=True)
class Leaf:
    """A leaf field of a config tree: its section field (None at the top), field, type and metadata."""

    section: dataclasses.Field | None
    field: dataclasses.Field
    type: Any
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        """The flag's name: the field's, after its section's prefix."""
        prefix = "" if self.section is None else self.section.metadata.get("prefix", "")
        return prefix + self.field.name


def _hints(cls: type) -> dict[str, Any]:
    """Resolved type annotations of dataclass `cls`."""
    return typing.get_type_hints(cls)


def leaves(cls: type, flags_only: bool = False) -> Iterator[Leaf]:
    """Every leaf field of config tree `cls` (internal ones too unless `flags_only`)."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not is_section(f):
            yield Leaf(None, f, hints[f.name], dict(f.metadata))
            continue
        sub_hints = _hints(hints[f.name])
        for sub in dataclasses.fields(hints[f.name]):
            if flags_only and sub.name in f.metadata.get("internal", ()):
                continue
            meta = {"help": f.metadata["helps"].get(sub.name, "")}
            meta.update(choices=f.metadata.get("choices", {}).get(sub.name))
            meta.update({k: v for k, v in sub.metadata.items() if v is not None})
            yield Leaf(f, sub, sub_hints[sub.name], meta)


def _unwrap_optional(tp: Any) -> Any:
    """X for `X | None`, else tp."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _default(leaf: Leaf) -> Any:
    """The leaf field's default value."""
    if leaf.field.default_factory is not dataclasses.MISSING:
        return leaf.field.default_factory()
    return leaf.field.default


def _help(leaf: Leaf, default: Any) -> str:
    """Help text with the default, '%' escaped for argparse."""
    if not leaf.meta.get("help"):
        raise TypeError(f"config field {leaf.name!r} has no help text (or mark it internal)")
    shown = leaf.meta.get("default_text")
    worth_showing = default is not None and default is not False and default != ""
    given_always = leaf.meta.get("required") or leaf.meta.get("positional")
    if shown is None and worth_showing and not given_always:
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else str(default)
    text = leaf.meta["help"] + (f" (default {shown})" if shown else "")
    return text.replace("%", "%%")


def _add_flag(group: Any, leaf: Leaf) -> None:
    """Add the flag(s) of one leaf field to `group`."""
    tp, default = _unwrap_optional(leaf.type), _default(leaf)
    names = [*leaf.meta.get("flags", ()), f"--{leaf.name}"]
    kwargs: dict[str, Any] = {"dest": leaf.name, "help": _help(leaf, default)}
    if leaf.meta.get("positional"):
        names = [kwargs.pop("dest")]
    if tp is bool:
        if default:
            both = group.add_mutually_exclusive_group()
            both.add_argument(*names, action="store_true", **kwargs)
            off = leaf.meta.get("off_help", f"turn {leaf.name} off")
            off_names = (f"--no_{leaf.name}", *leaf.meta.get("off_flags", ()))
            both.add_argument(*off_names, dest=leaf.name, action="store_false", help=off)
            return
        group.add_argument(*names, action="store_true", **kwargs)
        return
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        kwargs.update(type=args[0], nargs="+" if args[-1] is Ellipsis else len(args))
    else:
        kwargs.update(type=tp)
    for key in ("choices", "metavar", "required"):
        if leaf.meta.get(key) is not None:
            kwargs[key] = leaf.meta[key]
    group.add_argument(*names, **kwargs)


def add_flags(parser: argparse.ArgumentParser, cls: type, top_title: str) -> dict[str, Any]:
    """Add one flag per leaf field of config tree `cls` (not the internal ones) to `parser`, in argparse
    groups (`top_title` for the top-level fields) -> the groups by title. The parser should use
    argument_default=SUPPRESS so that parse_args returns only the given settings."""
    groups: dict[str, Any] = {}
    for leaf in leaves(cls, flags_only=True):
        title = top_title if leaf.section is None else leaf.section.metadata["title"]
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        _add_flag(groups[title], leaf)
    return groups


def _coerce(leaf: Leaf, value: Any) -> Any:
    """Lists (from argparse nargs or JSON) of a tuple field become tuples."""
    is_tuple = typing.get_origin(_unwrap_optional(leaf.type)) is tuple
    return tuple(value) if isinstance(value, list) and is_tuple else value


def with_values(cfg: Config, values: dict[str, Any]) -> Config:
    """A copy of config tree `cfg` with the leaf settings `values` {flag name: value}; KeyError names an
    unknown one."""
    by_name = {leaf.name: leaf for leaf in leaves(type(cfg))}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise KeyError(f"unknown settings {unknown}")
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        leaf = by_name[name]
        target = top if leaf.section is None else nested.setdefault(leaf.section.name, {})
        target[leaf.field.name] = _coerce(leaf, value)
    for name, changes in nested.items():
        top[name] = dataclasses.replace(getattr(cfg, name), **changes)
    return dataclasses.replace(cfg, **top)


def flat(cfg: Config) -> dict[str, Any]:
    """{flag name: value} of every leaf of config tree `cfg`."""
    out = {}
    for leaf in leaves(type(cfg)):
        owner = cfg if leaf.section is None else getattr(cfg, leaf.section.name)
        out[leaf.name] = getattr(owner, leaf.field.name)
    return out


def unknown_settings(what: str, names: list[str]) -> None:
    """UserError naming the unknown settings `names` of `what`, when there are any."""
    if names:
        raise UserError(f"{what} has unknown settings {', '.join(names)}; was it written by another version?")


def from_dict(cls: type, saved: dict[str, Any], what: str) -> Config:
    """Config tree `cls` from its dataclasses.asdict() form (JSON lists allowed for tuples); missing keys
    take defaults; UserError naming the unknown keys of `what` (e.g. "the model's saved config")."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in saved if k not in fields)
    for name, value in saved.items():
        if name in fields and is_section(fields[name]):
            known = {f.name for f in dataclasses.fields(hints[name])}
            unknown += sorted(f"{name}.{k}" for k in value if k not in known)
    unknown_settings(what, unknown)
    top: dict[str, Any] = {}
    by_name = {(leaf.section.name if leaf.section else None, leaf.field.name): leaf for leaf in leaves(cls)}
    for name, value in saved.items():
        if is_section(fields[name]):
            top[name] = hints[name](**{k: _coerce(by_name[name, k], v) for k, v in value.items()})
        else:
            top[name] = _coerce(by_name[None, name], value)
    return cls(**top)
