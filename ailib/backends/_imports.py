"""Importing an array library for a backend: any failure, and any warning while warnings are
errors, becomes `BackendUnavailable` with the reason and the fix, never a crash."""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any

from ._base import BackendUnavailable

INSTALL_HINTS = {
    "cupy": "pip install 'ailib[cuda12]' (or 'ailib[cuda13]' for CUDA 13)",
    "torch": "pip install 'ailib[torch]'",
    "jax": "pip install 'ailib[jax]'",
    "array_api_strict": "pip install array-api-strict (part of 'ailib[test]')",
    "array_api_compat": "pip install array-api-compat (a dependency of ailib)",
}

#: the warnings each library's first import raised, re-issued on every later import
_import_warnings: dict[str, list[warnings.WarningMessage]] = {}


def _hint(name: str) -> str:
    root = name.split(".")[0]
    library = name.split(".")[1] if root == "array_api_compat" and "." in name else root
    return INSTALL_HINTS.get(library, INSTALL_HINTS.get(root, f"pip install {root}"))


def import_library(name: str) -> Any:
    """``importlib.import_module(name)``, or `BackendUnavailable` saying why not.

    Warnings raised by the import are recorded (so a warning turned into an error cannot abort
    the import half-way) and then issued again under the caller's filters: where warnings are
    errors, a library that warns on import is unavailable, with the warning as the reason, every
    time it is asked for."""
    if name not in _import_warnings or sys.modules.get(name) is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise BackendUnavailable(f"{name} is not installed: {_hint(name)} ({exc})") from exc
            except Exception as exc:  # a broken install: missing shared library, bad version, ...
                raise BackendUnavailable(
                    f"{name} is installed but importing it failed ({type(exc).__name__}: {exc}); "
                    f"reinstall it: {_hint(name)}"
                ) from exc
        _import_warnings[name] = list(caught)
    for w in _import_warnings[name]:
        try:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        except Warning as exc:
            raise BackendUnavailable(
                f"importing {name} warns and warnings are errors here ({type(exc).__name__}: {exc})"
            ) from exc
    return sys.modules[name]


def compat(library: str) -> Any:
    """array-api-compat's namespace for ``library`` ("numpy", "cupy", "torch")."""
    return import_library(f"array_api_compat.{library}")
