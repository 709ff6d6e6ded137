"""Checks on untrusted config input, applied before any work: reading the file, parsing YAML within
limits, duplicate keys, plain names and tags, booleans where numbers are expected.

A config arrives from a file, the dashboard or ``igat submit`` and ends up in a run row, a folder name
and a worker. Everything here refuses with an :class:`InputError` naming the field (``config`` for the
text as a whole) and one line of explanation; :mod:`igat.config` turns it into a ``ConfigError``.
"""

from __future__ import annotations

import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

# A full config dumped with every field is ~4 KiB and ~300 YAML nodes; these leave a wide margin for
# hand-written files while stopping a 50 MB or alias-bomb input before it costs time or memory.
MAX_CONFIG_BYTES = 256 * 1024
MAX_YAML_NODES = 10_000  # counted with aliases expanded (billion laughs)
MAX_YAML_ALIASES = 100
MAX_YAML_DEPTH = 32
MAX_NAME_LENGTH = 200
MAX_TAGS = 32
MAX_TAG_LENGTH = 64
MAX_PATH_LENGTH = 4096

_MERGE_TAG = "tag:yaml.org,2002:merge"
# Plain name: starts and ends with a letter or digit, inside letters, digits, space and ``-_.+``; so it
# is a single, visible folder name (no separators, no ``..``, no hidden or trailing-dot names).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 ._+-]*[A-Za-z0-9])?")
PLAIN_NAME_RULE = "letters, digits, space and - _ . + (starting and ending with a letter or digit, no '..')"


class InputError(ValueError):
    """One refused input: ``field`` (dotted path, or ``config``) and a one-line ``message``."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


# --- reading ---------------------------------------------------------------------------------------
def read_config_file(path: str | Path) -> str:
    """The text of a config file: a regular, UTF-8, NUL-free file of at most MAX_CONFIG_BYTES."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError("config", f"file not found: {p}") from None
    except OSError as exc:
        raise InputError("config", f"cannot read {p}: {exc.strerror or exc}") from None
    if p.is_dir():
        raise InputError("config", f"{p} is a directory, not a config file")
    if not p.is_file():  # a FIFO or device would block or never end
        raise InputError("config", f"{p} is not a regular file")
    if st.st_size > MAX_CONFIG_BYTES:
        raise InputError("config", f"{p} is {st.st_size} bytes; a config may have at most {MAX_CONFIG_BYTES} bytes")
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)  # the file may have grown since stat
    except OSError as exc:
        raise InputError("config", f"cannot read {p}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise InputError("config", f"{p} is larger than {MAX_CONFIG_BYTES} bytes, the limit for a config")
    if b"\0" in raw:
        raise InputError("config", f"{p} is a binary file (it contains NUL bytes), not YAML or JSON text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError("config", f"{p} is not UTF-8 text (invalid byte at offset {exc.start})") from None


# --- parsing ---------------------------------------------------------------------------------------
class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """safe_load semantics (no Python tags) plus a refusal of duplicate keys, which YAML would
    otherwise resolve silently by keeping the last one (a second ``train:`` replacing the first)."""

    paths: dict[int, str] = {}  # set per document by parse_yaml
    prefix = ""  # the dotted field an override's value is for

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            # Checked before flatten_mapping: keys brought in by a ``<<`` merge may legitimately be
            # overridden; keys written twice in the same mapping may not.
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in first_line:
                        field = f"{self.prefix}{self.paths.get(id(node), '')}{key}"
                        raise InputError(field, f"duplicate key at line {line} (first given at line "
                                         f"{first_line[key]}); give each field once")
                    first_line[key] = line
                except TypeError:
                    continue  # unhashable: SafeConstructor refuses it with its own message
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: the problem and where it is."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else str(problem)
    return " ".join(str(exc).split())


def _prescan(text: str, what: str) -> None:
    """Stream the YAML events, building nothing, and stop at the first limit passed: a deep nest or a
    flood of nodes costs no more than reading up to that point."""
    depth = nodes = aliases = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > MAX_YAML_NODES:
                raise InputError(what, f"more than {MAX_YAML_NODES} YAML values; a config is much smaller")
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise InputError(what, f"nested deeper than {MAX_YAML_DEPTH} levels "
                                 f"(line {event.start_mark.line + 1})")
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise InputError(what, f"more than {MAX_YAML_ALIASES} YAML aliases (*name)")


def _index_nodes(root: yaml.Node, what: str) -> dict[int, str]:
    """Check the document as it would be once aliases are expanded (size, depth, no cycles) without
    expanding it, and return each mapping's dotted path for duplicate-key messages."""
    paths: dict[int, str] = {}
    done: dict[int, tuple[int, int]] = {}  # id -> (expanded node count, height)
    active: set[int] = set()

    def visit(node: yaml.Node, path: str, level: int) -> tuple[int, int]:
        key = id(node)
        if key in active:
            raise InputError(what, f"an alias refers to its own anchor (line {node.start_mark.line + 1})")
        if key not in done:
            active.add(key)
            children: list[tuple[yaml.Node, str]] = []
            if isinstance(node, yaml.MappingNode):
                paths.setdefault(key, path)
                for k, v in node.value:
                    name = k.value if isinstance(k, yaml.ScalarNode) else "?"
                    children += [(k, path), (v, f"{path}{name}.")]
            elif isinstance(node, yaml.SequenceNode):
                children = [(v, f"{path}{i}.") for i, v in enumerate(node.value)]
            stats = [visit(child, child_path, level + 1) for child, child_path in children]
            done[key] = (1 + sum(s for s, _ in stats), 1 + max((h for _, h in stats), default=0))
            active.discard(key)
        size, height = done[key]
        if size > MAX_YAML_NODES:
            raise InputError(what, f"expands to more than {MAX_YAML_NODES} YAML values through aliases")
        if level + height > MAX_YAML_DEPTH + 1:
            raise InputError(what, f"nested deeper than {MAX_YAML_DEPTH} levels through aliases")
        return size, height

    visit(root, "", 1)
    return paths


def parse_yaml(text: str, what: str = "config") -> Any:
    """``yaml.safe_load`` within limits (size, values, aliases, depth) and without duplicate keys."""
    if len(text) > MAX_CONFIG_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise InputError(what, f"larger than {MAX_CONFIG_BYTES} bytes, the limit for a config")
    try:
        _prescan(text, what)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            loader.paths = _index_nodes(node, what)
            loader.prefix = "" if what == "config" else f"{what}."
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except InputError:
        raise
    except yaml.YAMLError as exc:
        raise InputError(what, f"not valid YAML/JSON: {_yaml_problem(exc)}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a timestamp like 2024-13-40, a 5000-digit int
        raise InputError(what, f"not valid YAML/JSON: {' '.join(str(exc).split())}") from None


# --- field checks ----------------------------------------------------------------------------------
def text_problem(value: Any) -> str | None:
    """Why a string (or the strings inside a list/dict) cannot be stored or printed safely, or None.
    NUL is refused by PostgreSQL; escapes and other control characters would reach terminals raw."""
    if isinstance(value, bytes | bytearray):
        return "must be text, not binary data"
    if isinstance(value, str):
        if value.isprintable():
            return None
        bad = next(c for c in value if not c.isprintable())
        return f"must contain printable characters only (found {bad!r})"
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    if isinstance(items, list | tuple | set | frozenset):
        return next((p for p in map(text_problem, items) if p), None)
    return None


def name_problem(value: str) -> str | None:
    """Why ``value`` is not a plain name (one visible folder name, safe in a URL and a table), or None."""
    if (problem := text_problem(value)) is not None:
        return problem
    if len(value) > MAX_NAME_LENGTH:
        return f"must have at most {MAX_NAME_LENGTH} characters, got {len(value)}"
    if not _PLAIN_NAME.fullmatch(value) or ".." in value:
        shown = value if len(value) <= 40 else value[:40] + "..."
        return f"{shown!r} is not a plain name: use {PLAIN_NAME_RULE}"
    return None


def tags_problem(tags: list[str]) -> str | None:
    if len(tags) > MAX_TAGS:
        return f"at most {MAX_TAGS} tags, got {len(tags)}"
    for i, tag in enumerate(tags):
        if (problem := text_problem(tag)) is not None:
            return f"tag {i} {problem}"
        if not tag.strip() or tag != tag.strip():
            return f"tag {i} must be non-empty, without leading or trailing spaces"
        if len(tag) > MAX_TAG_LENGTH:
            return f"tag {i} has {len(tag)} characters; at most {MAX_TAG_LENGTH}"
        if "," in tag:
            return f"tag {i} must not contain ',' (tags are stored comma-separated)"
    return None


def path_problem(value: str) -> str | None:
    if (problem := text_problem(value)) is not None:
        return problem
    if not value.strip():
        return "must not be empty (leave it out for the default)"
    if len(value) > MAX_PATH_LENGTH:
        return f"must have at most {MAX_PATH_LENGTH} characters, got {len(value)}"
    return None


def holds_model(tp: Any) -> bool:
    """Whether an annotation is or contains a pydantic model (whose own validators see its fields)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return True
    return any(holds_model(a) for a in typing.get_args(tp))


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else None


def _admits_bool(tp: Any) -> bool:
    if tp is bool or tp is Any:
        return True
    if (args := _union_args(tp)) is not None:
        return any(_admits_bool(a) for a in args)
    return typing.get_origin(tp) is typing.Literal and any(isinstance(a, bool) for a in typing.get_args(tp))


def _numeric(tp: Any) -> bool:
    if tp in (int, float):
        return True
    args = _union_args(tp)
    return args is not None and any(_numeric(a) for a in args)


def bool_for_number(annotation: Any, value: Any) -> bool:
    """True when ``value`` is a bool (or holds one) where ``annotation`` expects a number: pydantic
    would read ``num_members: true`` as 1, which is never what the author meant."""
    if isinstance(value, bool):
        return _numeric(annotation) and not _admits_bool(annotation)
    if isinstance(value, list):
        args = _union_args(annotation) or (annotation,)
        elem = [typing.get_args(a)[0] for a in args if typing.get_origin(a) is list and typing.get_args(a)]
        return any(bool_for_number(e, v) for e in elem for v in value)
    return False


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    items = [*value.values()] if isinstance(value, dict) else value
    return isinstance(items, list | tuple) and any(_non_finite(v) for v in items)


def param_problems(model: type[BaseModel], params: dict[str, Any]) -> list[tuple[str, str]]:
    """The checks the config's own models make, for a registry's parameter model (a defense's or an
    attack's ``Params``, which are not config models): no bools for numbers, no inf/nan, text only."""
    errors: list[tuple[str, str]] = []
    for key, value in params.items():
        field = model.model_fields.get(key) if isinstance(key, str) else None
        annotation = field.annotation if field is not None else Any
        if bool_for_number(annotation, value):
            errors.append((str(key), "must be a number, not a boolean"))
        elif _non_finite(value):
            errors.append((str(key), "must be a finite number (not inf or nan)"))
        elif (problem := text_problem(value) or text_problem(key)) is not None:
            errors.append((str(key), problem))
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, dict):
            errors += [(f"{key}.{k}", m) for k, m in param_problems(annotation, value)]
    return errors


def one_line(errors: list[tuple[str, str]], limit: int = 5) -> str:
    """``field: message; ...`` on one line, non-printable characters escaped, at most ``limit`` errors."""

    def clean(s: str) -> str:
        return s if s.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)

    shown = "; ".join(f"{clean(f)}: {clean(m)}" for f, m in errors[:limit])
    return shown + (f" (and {len(errors) - limit} more)" if len(errors) > limit else "")


def config_error_line(errors: list[tuple[str, str]]) -> str:
    """The one line a command prints for a refused config (after ``error: ``)."""
    field = errors[0][0] if errors else "config"
    # "config: file not found" and "--name: ..." are about the file or an argument, not a config field.
    return one_line(errors) if field == "config" or field.startswith("-") else f"invalid config: {one_line(errors)}"
