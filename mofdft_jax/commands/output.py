"""The ``--json`` convention of every ``mofdft`` command.

``--json`` prints exactly one JSON object, on one line, on stdout (progress and messages go to
stderr), so ``mofdft CMD --json ... | jq`` and ``json.loads(stdout)`` work for every command. Its
first key is ``"schema": "mofdft.<command>/<version>"`` (:data:`JSON_SCHEMA_VERSION`, raised when
a key is renamed or removed; adding keys keeps it). Numbers are in atomic units unless the key says
otherwise (``_kcal``, ``_ev``, ``_debye``, ``_s``); a value that is not finite (NaN, ±inf) is written
as ``null``, as strict JSON has no NaN.
"""

from __future__ import annotations

import json
import math

#: Version of the ``--json`` objects (the ``schema`` key).
JSON_SCHEMA_VERSION = 1


def json_schema(command: str) -> str:
    """``"mofdft.<command>/<version>"``, the ``schema`` key of ``mofdft <command> --json``."""
    return f"mofdft.{command}/{JSON_SCHEMA_VERSION}"


def to_json_value(value):
    """``value`` with NumPy scalars and arrays as Python numbers and lists, tuples as lists,
    paths as strings and non-finite floats as ``None`` (recursively)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json_value(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)  # Path and friends


def format_json(command: str, payload: dict) -> str:
    """The one-line ``--json`` text of ``mofdft <command>``: ``{"schema": ..., **payload}``."""
    return json.dumps({"schema": json_schema(command), **to_json_value(payload)},
                      allow_nan=False)


def echo_json(command: str, payload: dict) -> None:
    """Print :func:`format_json` on stdout."""
    import typer

    typer.echo(format_json(command, payload))
