"""Type check of the plans' ``"nnunet_ext"`` block against the annotations of what it configures.

JSON gives ``str``, ``int``, ``float``, ``bool``, ``None``, lists and objects; a config dataclass, a loss constructor or
a trainer attribute declares what it takes. :func:`check_types` refuses a value of the wrong kind with a message that
names the entry and the key (``'mean_teacher' entry: 'ema_late' must be a number, got '0.99' (a string)``) before the
value reaches a ``__post_init__`` comparison or a tensor operation, where it would fail without naming its key.

Rules: ``float`` takes JSON integers and reals, ``int`` integers only, ``bool`` only ``true``/``false`` (never 0/1),
``Literal`` one of its values, ``tuple``/``Sequence`` a list, ``Mapping`` an object; unions take any member. An
annotation this module does not know (or cannot resolve) is not checked.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union, get_args, get_origin

_SEQUENCES = (tuple, list, collections.abc.Sequence)
_MAPPINGS = (dict, collections.abc.Mapping)


def type_hints(obj: Callable | type) -> dict[str, Any]:
    """Resolved annotations of a dataclass or a function (``{}`` when they cannot be resolved)."""
    try:
        hints = typing.get_type_hints(obj)
    except Exception:  # noqa: BLE001 - an unresolvable annotation only disables the check
        return {}
    hints.pop("return", None)
    return hints


def _is_union(hint: Any) -> bool:
    return get_origin(hint) is Union or isinstance(hint, types.UnionType)


def matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits ``hint`` (see the module docstring for the rules)."""
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    if _is_union(hint):
        return any(matches(value, h) for h in get_args(hint))
    if hint is None or hint is type(None):
        return value is None
    origin = get_origin(hint)
    if origin is Literal:
        return any(value == v and type(value) is type(v) for v in get_args(hint))
    if origin is typing.ClassVar:
        return matches(value, get_args(hint)[0]) if get_args(hint) else True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in _SEQUENCES or hint in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        args = get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value) and all(matches(v, h) for v, h in zip(value, args))
        return not args or all(matches(v, args[0]) for v in value)
    if origin in _MAPPINGS or hint in _MAPPINGS:
        if not isinstance(value, Mapping):
            return False
        args = get_args(hint)
        return not args or all(matches(k, args[0]) and matches(v, args[1]) for k, v in value.items())
    return True  # an annotation without a rule here (a class, a Callable): not checked


def describe(hint: Any) -> str:
    """``hint`` in the words of a JSON value."""
    if _is_union(hint):
        parts = [describe(h) for h in get_args(hint)]
        return " or ".join(dict.fromkeys(parts))
    if hint is None or hint is type(None):
        return "null"
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(hint))
    if hint is bool:
        return "true or false"
    if hint is int:
        return "a whole number"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if origin in _SEQUENCES or hint in _SEQUENCES:
        args = [a for a in get_args(hint) if a is not Ellipsis]
        return f"a list of {_plural(args[0])}" if len(set(args)) == 1 else "a list"
    if origin in _MAPPINGS or hint in _MAPPINGS:
        args = get_args(hint)
        return f"an object of {_plural(args[1])}" if args else "an object"
    return getattr(hint, "__name__", str(hint))


def _plural(hint: Any) -> str:
    return {float: "numbers", int: "whole numbers", str: "strings", bool: "true/false values"}.get(hint, "values")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def check_types(where: str, entries: Mapping[str, Any], hints: Mapping[str, Any]) -> None:
    """Refuse an entry whose value does not fit its annotation.

    Args:
        where: What holds the entries, for the message, e.g. ``'mean_teacher' entry``.
        entries: Key -> JSON value.
        hints: Key -> annotation; keys without one are not checked.

    Raises:
        ValueError: ``"<where>: <key> must be <kind>, got <value> (<its kind>); <fix>"``.
    """
    for key, value in entries.items():
        if key in hints and not matches(value, hints[key]):
            raise ValueError(
                f'the plans\' "nnunet_ext" {where}: {key!r} must be {describe(hints[key])}, got {value!r} '
                f"({_json_kind(value)}); write it as {describe(hints[key])} in the plans file"
            )
