"""Command-line flags (and form widgets) generated from documented dataclasses.

A setting is written once, as a dataclass field with a comment beside it::

    @dataclass
    class VideoOptions:
        # --- output ---
        fps: float = 30.0  # frames per second of the mp4
        max_frames: int | None = None  # stop after this many frames (default: all)

and :func:`add_dataclass_arguments` turns it into ``--fps`` with that comment as its help, so the
CLI, ``--help`` and (through :func:`field_specs`) a UI never disagree with the code. This module
sits at the ground level of the package (it imports nothing from it) so every layer can use it.

Field types and the flags they become:

- ``bool`` -> ``--name`` / ``--no-name`` (``argparse.BooleanOptionalAction``);
- ``Literal["a", "b"]`` -> ``--name {a,b}`` (choices, converted to the literals' type);
- ``int`` / ``float`` / ``str`` / ``Path`` -> ``--name VALUE``;
- ``tuple[float, float, float]`` -> ``--name X X X``; ``tuple[int, ...]`` and ``list[int]`` take
  one or more values;
- ``T | None`` -> the flag of ``T``; None is the "automatic" default;
- a nested dataclass -> a group of flags, see the naming rule;
- a field without a default -> a required flag.

Anything else raises ``TypeError`` when the flags are built; give such a field
``metadata=NO_FLAG`` to leave it off the command line.

**Naming rule.** A field ``name`` of the dataclass is ``--name`` (underscores become dashes); a
field ``inner`` of a nested dataclass field ``outer`` is ``--outer-inner``, and so on down. A
nested field declared with ``metadata=FLAT`` lends its fields its parent's namespace instead:
``FusionConfig.reconstruct.iterations`` is ``--iterations`` when ``reconstruct`` is flat, else
``--reconstruct-iterations``. The argparse destination always spells the full path with ``__``
(``reconstruct__iterations``; a top-level field's is just its name), so it is unique whatever is
flat. Two fields that would share a flag raise ``ValueError`` when the parser is built, so a
collision is caught by the first test that builds it. ``prefix="video"`` puts a whole dataclass
under ``--video-...`` to share a parser with another one.

**Defaults.** Every flag defaults to None ("not given"), so :func:`dataclass_from_args` applies
only what the user typed, over ``base`` or the dataclass defaults (nested defaults included), and
:func:`overrides_from_args` lists exactly that: a resumed run or a mode preset keeps everything
the command line does not change. Help texts end in ``(default: X)``, ``(default: automatic)`` for
None, unless the comment already says ``(default...)`` itself.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import PurePath
from types import MappingProxyType
from typing import Any, Literal

FLAG_METADATA_KEY = "genfusion.flags"
FLAT = MappingProxyType({FLAG_METADATA_KEY: "flat"})  # nested dataclass: its flags carry no prefix
NO_FLAG = MappingProxyType({FLAG_METADATA_KEY: "skip"})  # field gets no flag (and no widget)
PATH_SEPARATOR = "__"  # joins field names in argparse destinations: reconstruct__iterations

Kind = Literal["bool", "choice", "value", "sequence"]
SCALAR_TYPES = (int, float, str)


@dataclass(frozen=True)
class FieldSpec:
    """One setting of a (possibly nested) dataclass, described for a parser or a form."""

    path: tuple[str, ...]  # field names from the outer dataclass down to this field
    flag: str  # the command-line flag, e.g. "--reconstruct-iterations"
    dest: str  # the argparse destination: the path joined by "__"
    kind: Kind  # bool, choice (Literal), value (one scalar) or sequence (tuple / list)
    value_type: type  # the type of one value (int, float, str, Path, ...; bool for kind "bool")
    default: Any  # the dataclass default; None = automatic / unset
    required: bool  # no default: the flag must be given
    optional: bool  # the annotation allows None
    doc: str  # the comment written beside the field ("" if none)
    section: str  # the "# --- heading ---" above the field, else the nested field's doc or name
    choices: tuple[Any, ...] = ()  # kind "choice": the allowed values
    nargs: int | str | None = None  # kind "sequence": a count, or "+" / "*"
    container: type | None = None  # kind "sequence": tuple or list

    @property
    def name(self) -> str:
        """The field's own name (the last element of ``path``)."""
        return self.path[-1]

    @property
    def help(self) -> str:
        """The flag's help text: the comment plus the default (``%`` escaped for argparse)."""
        text = self.doc
        if "(default" not in text.lower():
            if self.required:
                shown = "required"
            elif self.default is None:
                shown = "default: automatic"
            else:
                shown = f"default: {self.default}"
            text = f"{text} ({shown})" if text else f"({shown})"
        return text.replace("%", "%%")


# ------------------------------------------------------------------------------ source comments


def _class_source(cls: type) -> tuple[ast.ClassDef, list[str], dict[int, str]] | None:
    """(class node, source lines, line -> comment) of ``cls``, or None without readable source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return None
    comments: dict[int, str] = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                comments.setdefault(token.start[0], token.string[1:].strip())
        node = ast.parse(source).body[0]
    except (tokenize.TokenError, SyntaxError, IndexError):
        return None
    return (node, source.splitlines(), comments) if isinstance(node, ast.ClassDef) else None


def _is_pragma(comment: str) -> bool:
    return comment.startswith(("type:", "noqa", "fmt:", "pragma"))


def _sources(cls: type) -> Iterable[tuple[ast.ClassDef, list[str], dict[int, str]]]:
    """The parsed source of ``cls`` and of its dataclass bases, base classes first."""
    for klass in reversed(cls.__mro__):
        if klass is not object and dataclasses.is_dataclass(klass):
            parsed = _class_source(klass)
            if parsed is not None:
                yield parsed


def _annotated(node: ast.ClassDef) -> list[ast.AnnAssign]:
    return [i for i in node.body if isinstance(i, ast.AnnAssign) and isinstance(i.target, ast.Name)]


@cache
def _docs(cls: type) -> MappingProxyType:
    docs: dict[str, str] = {}
    for node, _, comments in _sources(cls):
        for item in _annotated(node):
            end = item.end_lineno or item.lineno
            found = [comments[n] for n in range(item.lineno, end + 1) if n in comments]
            found = [c for c in found if not _is_pragma(c)]
            if found:
                docs[item.target.id] = found[0]  # type: ignore[union-attr]
    return MappingProxyType(docs)


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the comment written beside it in ``cls``'s source (first comment of a
    multi-line field; ``# type:`` / ``# noqa`` / ``# fmt:`` pragmas are not docs). Inherited
    fields are documented by their own class. Fields without a comment are absent."""
    return dict(_docs(cls))


@cache
def _sections(cls: type) -> MappingProxyType:
    sections: dict[str, str] = {}
    for node, lines, _ in _sources(cls):
        current, previous_end = "", node.lineno
        for item in _annotated(node):
            for line in lines[previous_end : item.lineno - 1]:
                stripped = line.strip()
                if stripped.startswith("# ---"):
                    heading = stripped.strip("#").strip().strip("-").strip()
                    current = heading.split("(")[0].strip() or current
            if current:
                sections[item.target.id] = current  # type: ignore[union-attr]
            previous_end = item.end_lineno or item.lineno
    return MappingProxyType(sections)


def field_sections(cls: type) -> dict[str, str]:
    """Field name -> the ``# --- heading ---`` comment above it in ``cls``'s source (its text up
    to any parenthesis); fields before the first heading are absent. Forms group widgets by it."""
    return dict(_sections(cls))


# ------------------------------------------------------------------------------ field specs


def unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """``int | None`` -> (int, True); ``int`` -> (int, False). Other unions are left as they are."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        inner = [arg for arg in args if arg is not type(None)]
        if len(inner) == 1 and len(args) == 2:
            return inner[0], True
    return hint, False


def _is_nested(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _marker(f: dataclasses.Field) -> str | None:
    return f.metadata.get(FLAG_METADATA_KEY)


def _default(f: dataclasses.Field) -> tuple[Any, bool]:
    """(default value, required) of a field; factories are called to show their value."""
    if f.default is not dataclasses.MISSING:
        return f.default, False
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory(), False
    return None, True


def _nested_default(f: dataclasses.Field) -> Any:
    """The default instance of a nested dataclass field (MISSING when it has none)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _scalar(kind: Any, where: str) -> type:
    if kind in SCALAR_TYPES or (isinstance(kind, type) and issubclass(kind, PurePath)):
        return kind
    raise TypeError(
        f"{where}: a flag cannot hold {kind!r}; use int, float, str, Path, bool, Literal, a tuple or "
        "list of those or a nested dataclass, or give the field metadata=NO_FLAG"
    )


def _spec_fields(hint: Any, where: str) -> dict[str, Any]:
    """The kind-specific parts of a :class:`FieldSpec` for a (non-optional) annotation."""
    origin = typing.get_origin(hint)
    if hint is bool:
        return {"kind": "bool", "value_type": bool}
    if origin is Literal:
        choices = typing.get_args(hint)
        types_ = {type(c) for c in choices}
        kind = types_.pop() if len(types_) == 1 else str
        return {"kind": "choice", "value_type": _scalar(kind, where), "choices": choices}
    if origin in (tuple, list):
        args = typing.get_args(hint)
        if origin is list and len(args) == 1:
            nargs: int | str = "*"
        elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            nargs = "+"
        elif origin is tuple and args and len(set(args)) == 1:
            nargs = len(args)
        else:
            raise TypeError(f"{where}: only homogeneous tuples and lists become flags, not {hint!r}")
        item = _scalar(args[0], where)
        return {"kind": "sequence", "value_type": item, "nargs": nargs, "container": origin}
    return {"kind": "value", "value_type": _scalar(hint, where)}


def _flag_name(parts: Iterable[str]) -> str:
    return "--" + "-".join(part.replace("_", "-") for part in parts)


def _walk(
    cls: type,
    instance: Any,
    path: tuple[str, ...],
    dest_root: tuple[str, ...],
    flag_parts: tuple[str, ...],
    section: str,
    skip: frozenset[str],
) -> Iterable[FieldSpec]:
    """Specs of ``cls``'s fields at ``path``; defaults from ``instance`` when there is one (a
    nested default, a preset), else from the field declarations."""
    hints = typing.get_type_hints(cls)
    docs, sections = _docs(cls), _sections(cls)
    for f in dataclasses.fields(cls):
        here = (*path, f.name)
        if not f.init or _marker(f) == "skip" or ".".join(here) in skip:
            continue
        hint, optional = unwrap_optional(hints[f.name])
        where = f"{cls.__name__}.{f.name}"
        if _is_nested(hint):
            if optional:
                raise TypeError(f"{where}: an optional nested dataclass cannot become flags")
            inner = getattr(instance, f.name) if instance is not None else _nested_default(f)
            inner = inner if isinstance(inner, hint) else None
            parts = flag_parts if _marker(f) == "flat" else (*flag_parts, f.name)
            title = docs.get(f.name) or f.name.replace("_", " ")
            yield from _walk(hint, inner, here, dest_root, parts, title, skip)
            continue
        default, required = (getattr(instance, f.name), False) if instance is not None else _default(f)
        yield FieldSpec(
            path=here,
            flag=_flag_name((*flag_parts, f.name)),
            dest=PATH_SEPARATOR.join((*dest_root, *here)),
            default=default,
            required=required,
            optional=optional,
            doc=docs.get(f.name, ""),
            section=sections.get(f.name, section),
            **_spec_fields(hint, where),
        )


def _prefix_parts(prefix: str) -> tuple[str, ...]:
    return tuple(part for part in prefix.replace("-", "_").split("_") if part) if prefix else ()


def field_specs(
    cls: type, *, skip: Iterable[str] = (), prefix: str = "", defaults: Any = None
) -> list[FieldSpec]:
    """Every flag-able field of dataclass ``cls`` (nested ones flattened, declaration order).

    ``skip`` names fields to leave out by dotted path (``"seed"``, ``"reconstruct.seed"``);
    ``prefix`` puts everything under ``--<prefix>-...`` (destinations ``<prefix>__...``);
    ``defaults`` (an instance of ``cls``, e.g. a mode preset) supplies the defaults shown.
    Raises ``ValueError`` when two fields would share a flag, ``TypeError`` for a field type no
    flag can hold.
    """
    if not _is_nested(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if defaults is not None and not isinstance(defaults, cls):
        raise TypeError(f"defaults must be a {cls.__name__}, got {type(defaults).__name__}")
    root = (prefix.replace("-", "_"),) if prefix else ()
    specs = list(_walk(cls, defaults, (), root, _prefix_parts(prefix), "", frozenset(skip)))
    seen: dict[str, str] = {}
    for item in specs:
        for flag in (item.flag, *((f"--no-{item.flag[2:]}",) if item.kind == "bool" else ())):
            if flag in seen:
                raise ValueError(
                    f"{cls.__name__}: {'.'.join(item.path)} and {seen[flag]} both want the flag {flag}; "
                    "rename one or drop FLAT from the nested field"
                )
            seen[flag] = ".".join(item.path)
    return specs


# ------------------------------------------------------------------------------ argparse


def add_dataclass_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    skip: Iterable[str] = (),
    prefix: str = "",
    title: str | None = None,
    defaults: Any = None,
) -> list[FieldSpec]:
    """Add one flag per field of ``cls`` to ``parser`` (see the module docstring for the rules);
    returns the specs. Flags are grouped by the ``# --- heading ---`` sections of the source and
    by nested dataclass, under ``title`` (default: "<ClassName> settings"); ``defaults`` (an
    instance, e.g. a preset) sets the defaults the help shows. Every flag's argparse default is
    None all the same, so only the flags given on the command line count."""
    specs = field_specs(cls, skip=skip, prefix=prefix, defaults=defaults)
    title = title or f"{cls.__name__} settings"
    groups: dict[str, argparse._ArgumentGroup] = {}
    for item in specs:
        heading = f"{title}: {item.section}" if item.section else title
        if heading not in groups:
            groups[heading] = parser.add_argument_group(heading)
        group = groups[heading]
        common: dict[str, Any] = {"dest": item.dest, "help": item.help, "default": None}
        if item.required:
            common["required"] = True
        if item.kind == "bool":
            group.add_argument(item.flag, action=argparse.BooleanOptionalAction, **common)
        elif item.kind == "choice":
            group.add_argument(item.flag, type=item.value_type, choices=item.choices, **common)
        elif item.kind == "sequence":
            group.add_argument(item.flag, type=item.value_type, nargs=item.nargs, metavar="X", **common)
        else:
            group.add_argument(item.flag, type=item.value_type, metavar=item.name.upper(), **common)
    return specs


def _given(args: argparse.Namespace, item: FieldSpec) -> Any:
    """The value the user gave for ``item`` (None if not given), as the field's type."""
    value = getattr(args, item.dest, None)
    if value is not None and item.container is not None:
        value = item.container(value)
    return value


def _changes(
    cls: type, args: argparse.Namespace, specs: dict[tuple[str, ...], FieldSpec], path: tuple[str, ...]
) -> dict[str, Any]:
    """Given values for ``cls``'s fields (nested dataclasses as nested dicts), only those given."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint, _ = unwrap_optional(hints[f.name])
        if _is_nested(hint):
            inner = _changes(hint, args, specs, (*path, f.name))
            if inner:
                out[f.name] = inner
        elif (*path, f.name) in specs:
            value = _given(args, specs[(*path, f.name)])
            if value is not None:
                out[f.name] = value
    return out


def _apply(cls: type, base: Any, changes: dict[str, Any]) -> Any:
    """``base`` (or a default ``cls()``) with ``changes`` applied, nested dataclasses rebuilt
    through their constructors so their validation runs."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in changes:
            continue
        change = changes[f.name]
        hint, _ = unwrap_optional(hints[f.name])
        if _is_nested(hint) and isinstance(change, dict):
            inner_base = getattr(base, f.name) if base is not None else _nested_default(f)
            inner_base = inner_base if isinstance(inner_base, hint) else None
            change = _apply(hint, inner_base, change)
        values[f.name] = change
    if base is None:
        return cls(**values)
    return dataclasses.replace(base, **values)


def _spec_index(cls: type, prefix: str) -> dict[tuple[str, ...], FieldSpec]:
    return {item.path: item for item in field_specs(cls, prefix=prefix)}


def overrides_from_args(cls: type, args: argparse.Namespace, *, prefix: str = "") -> dict[str, Any]:
    """Only the fields given on the command line: ``{"iterations": 500, "reconstruct":
    {"seed": 1}}`` (nested dataclasses as nested dicts; tuples as tuples)."""
    return _changes(cls, args, _spec_index(cls, prefix), ())


def dataclass_from_args(cls: type, args: argparse.Namespace, base: Any = None, *, prefix: str = "") -> Any:
    """A ``cls`` with every flag the user gave applied over ``base`` (default: the dataclass
    defaults, nested default factories included). The result is built through the constructors,
    so ``__post_init__`` validation runs on what the user typed; ``base`` is not modified."""
    if base is not None and not isinstance(base, cls):
        raise TypeError(f"base must be a {cls.__name__}, got {type(base).__name__}")
    changes = overrides_from_args(cls, args, prefix=prefix)
    return _apply(cls, base, changes)


__all__ = [
    "FLAT",
    "NO_FLAG",
    "FieldSpec",
    "add_dataclass_arguments",
    "dataclass_from_args",
    "field_docs",
    "field_sections",
    "field_specs",
    "overrides_from_args",
    "unwrap_optional",
]
