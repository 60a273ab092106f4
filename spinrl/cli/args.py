"""Dataclass configs -> argparse flags: the config class is the single source of truth.

Each field's help text is the string literal written under it in the class body (as tyro does),
so ``--help``, the Python API and the ``config.json`` of a run directory cannot drift apart.

Why in-house and not tyro: tyro would replace these ~200 lines, but (1) it is not a dependency and the CLI
is the one place every user meets, (2) spinrl needs what tyro does not give directly: one-line errors with
exit code 2 (``_Parser``), flags told apart from defaults so ``--resume`` keeps a run's saved values
(:func:`given_fields`), free ``--name value`` environment options after the known flags, and the flat
``--iql-beta`` spelling of per-algorithm dict fields (:func:`add_nested_args`). What it supports is small
and loud: bool, int, float, str, Literal, tuple/list, ``int | Literal[...]``, each optional; a field typed
``dict`` has no flag form and must be filled by the caller (named in ``skip``), else building the parser
raises. Field ``metadata`` may give ``metavar`` and ``action="append"`` (a repeatable flag).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import lru_cache
from typing import Any, get_args, get_origin

from spinrl.errors import ConfigError


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Map field name -> the docstring literal that follows it in the class body."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                    if isinstance(nxt.value.value, str):
                        docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _int_or(*words: str):
    """argparse type for ``int | Literal[words]``: one of the words as given, else an int."""

    def parse(text: str) -> int | str:
        return text if text in words else int(text)

    parse.__name__ = "int or " + " or ".join(repr(w) for w in words)  # argparse's "invalid <name> value: 'x'"
    return parse


def _flag_fields(cls: type, skip: tuple[str, ...] = ()):
    """(field, its type without Optional, its help text) for each init field of ``cls`` not in ``skip``."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name not in skip and f.init:
            yield f, _unwrap_optional(hints[f.name])[0], docs.get(f.name, "")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_args(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    positional: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
    defaults: dict | None = None,
    suppress: bool = False,
) -> None:
    """Add one flag per dataclass field (``positional`` ones as positionals); ``suppress`` leaves a flag that
    is not given out of the namespace (to tell given flags from defaults)."""
    for f, tp, doc in _flag_fields(cls, skip):
        default = (defaults or {}).get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        if f.default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        help_ = doc
        if default not in (None, "", ()) and not isinstance(default, (dict, list)):
            help_ += f" (default: {default})"
        kw: dict[str, Any] = {"help": help_.replace("%", "%%")}  # argparse %-formats help ("80% [MASK]")
        origin = get_origin(tp)
        if tp is dict or origin is dict:  # a silent skip would drop the field from --help and the CLI
            raise TypeError(
                f"{cls.__name__}.{f.name} is a dict and has no flag form; name it in skip= and fill it "
                "from the command line yourself (parse_kwargs, add_nested_args)"
            )
        if f.metadata.get("action") == "append":  # a repeatable flag collecting strings
            kw["action"] = "append"
        elif origin is typing.Literal:
            kw["choices"] = list(get_args(tp))
            kw["type"] = type(get_args(tp)[0])
        elif tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin in (tuple, list):
            args = [a for a in get_args(tp) if a is not Ellipsis]
            kw["type"] = args[0] if args else str
            kw["nargs"] = len(get_args(tp)) if origin is tuple and Ellipsis not in get_args(tp) else "+"
        elif tp in (int, float, str):
            kw["type"] = tp
        elif origin in (typing.Union, types.UnionType) and int in get_args(tp):  # e.g. int | Literal["auto"]
            kw["type"] = _int_or(*(c for a in get_args(tp) if get_origin(a) is typing.Literal for c in get_args(a)))
        else:
            kw["type"] = str
        if "metavar" in f.metadata:
            kw["metavar"] = f.metadata["metavar"]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name in positional:
            if default not in (None, ""):
                kw["nargs"] = "?"
                parser.add_argument(f.name, default=default, **kw)
            else:
                parser.add_argument(f.name, **kw)  # required
        elif required and not suppress:
            parser.add_argument(flag(f.name), dest=f.name, required=True, **kw)
        else:
            parser.add_argument(flag(f.name), dest=f.name, default=argparse.SUPPRESS if suppress else default, **kw)


def add_nested_args(
    parser: argparse.ArgumentParser,
    title: str,
    classes: dict[str, type],
    dest: str,
    skip: tuple[str, ...] = (),
    default_note: str = "default",
) -> None:
    """Flags ``--<key>-<field>`` for the fields of each class in ``classes`` (e.g. ``--iql-beta`` from
    IQLConfig.beta), in one help group; values land in ``<dest>:<key>:<field>`` only when given, so the
    caller builds the dict fields (``algo_kwargs``, ``model_kwargs``) from what the user typed."""
    group = parser.add_argument_group(title)
    for key, cls in classes.items():
        for f, tp, doc in _flag_fields(cls, skip):
            kw: dict[str, Any] = {"type": tp if tp in (int, float, str) else parse_literal}
            if tp is bool:
                kw = {"action": argparse.BooleanOptionalAction}
            help_ = doc + (f" ({default_note}: {f.default})" if f.default is not dataclasses.MISSING else "")
            group.add_argument(
                f"--{key}-{f.name}".replace("_", "-"),
                dest=f"{dest}:{key}:{f.name}",
                metavar=f.name.upper(),
                default=argparse.SUPPRESS,
                help=help_.replace("%", "%%"),
                **kw,
            )


def nested_from_args(ns: argparse.Namespace, dest: str) -> dict[str, dict[str, Any]]:
    """The flags of :func:`add_nested_args` the user gave, as {key: {field: value}}."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in vars(ns).items():
        if name.startswith(dest + ":"):
            _, key, field_ = name.split(":")
            out.setdefault(key, {})[field_] = value
    return out


def resumed_config(cls: type, cfg: Any, argv: list[str], saved: dict, positional: tuple[str, ...] = ()):
    """``cfg`` with each field whose flag is not in ``argv`` taken from ``saved`` (the run's own config): a
    ``--resume`` continues the run as it was made, not with today's defaults; what is given (a larger
    ``--steps``, a changed setting the run then refuses) still counts."""
    given = given_fields(cls, argv, skip=positional) | set(positional) | {"out", "resume"}
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        v = getattr(cfg, f.name) if f.name in given or f.name not in saved else saved[f.name]
        if isinstance(v, list) and get_origin(_unwrap_optional(hints[f.name])[0]) is tuple:
            v = tuple(v)
        values[f.name] = v
    return cls(**values)


def given_fields(cls: type, argv: list[str], skip: tuple[str, ...] = ()) -> set[str]:
    """The fields of ``cls`` whose flags appear in ``argv`` (positionals and subcommands are skipped), abbreviations and
    ``--no-`` forms included: what a resume must take from the command line rather than the saved run."""
    p = argparse.ArgumentParser(add_help=False)
    dicts = tuple(f.name for f, tp, _ in _flag_fields(cls) if tp is dict or get_origin(tp) is dict)  # no flag form
    add_config_args(p, cls, skip=skip + dicts, suppress=True)
    ns, _ = p.parse_known_args(argv)
    return set(vars(ns))


def config_from_args(cls: type, ns: argparse.Namespace, **overrides: Any):
    """Build ``cls`` from parsed flags (fields absent from the namespace keep their defaults)."""
    values = {}
    for f in dataclasses.fields(cls):
        if hasattr(ns, f.name):
            v = getattr(ns, f.name)
            if isinstance(v, list) and get_origin(typing.get_type_hints(cls)[f.name]) is tuple:
                v = tuple(v)
            values[f.name] = v
    values.update(overrides)
    return cls(**values)


def parse_literal(text: str) -> Any:
    """Parse a CLI value: int, float, bool, list (``1,2,3`` or ``[1,2]``) or string."""
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    try:
        return ast.literal_eval(t)
    except (ValueError, SyntaxError):
        pass
    if "," in t:
        return [parse_literal(p) for p in t.split(",")]
    return t


def parse_kwargs(tokens: list[str], what: str = "environment") -> dict:
    """Turn leftover ``--key value`` tokens into keyword arguments (dashes become underscores)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            raise ConfigError(f"unexpected argument {tok!r}; {what} options are given as --name value")
        key = tok[2:]
        if "=" in key:
            key, val = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise ConfigError(f"{tok} needs a value; {what} options are given as --name value")
            val = tokens[i + 1]
            i += 2
        out[key.replace("-", "_")] = parse_literal(val)
    return out
