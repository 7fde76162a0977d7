"""Compiled hot-path modules and the selector that picks them or their pure-Python twins.

Every compiled module ``natsx._speedups._NAME`` (built from ``_NAME.pyx``) has a pure-Python
twin ``natsx._speedups.NAME_py`` with the same API. ``load(NAME)`` returns the compiled one
unless ``NATSX_NO_EXTENSIONS`` is set (to anything but ``0``), in which case it returns the
twin. A missing compiled module is recorded in ``FALLBACKS`` rather than hidden, so a test
can fail when the extension was expected but did not load.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_EXTENSIONS: bool = os.environ.get("NATSX_NO_EXTENSIONS", "") not in ("", "0")

#: Names of modules whose compiled form failed to import, with the error text.
FALLBACKS: dict[str, str] = {}


def load(name: str, *, pure: bool | None = None) -> ModuleType:
    """Return the module implementing ``name``: compiled unless told otherwise.

    Args:
        name: the twin's base name, e.g. ``"sublist"``.
        pure: force the pure twin (True) or the compiled one (False); default from the
            environment.

    Raises:
        ImportError: when ``pure`` is False and the compiled module cannot be imported.
    """
    if pure is None:
        pure = NO_EXTENSIONS
    if pure:
        return importlib.import_module(f"natsx._speedups.{name}_py")
    try:
        return importlib.import_module(f"natsx._speedups._{name}")
    except ImportError as exc:
        if pure is False and not NO_EXTENSIONS and os.environ.get("NATSX_REQUIRE_EXTENSIONS"):
            raise
        FALLBACKS[name] = str(exc)
        return importlib.import_module(f"natsx._speedups.{name}_py")


def compiled(name: str) -> bool:
    """True when the compiled twin of ``name`` imports."""
    try:
        importlib.import_module(f"natsx._speedups._{name}")
    except ImportError:
        return False
    return True
