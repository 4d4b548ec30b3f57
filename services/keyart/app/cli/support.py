"""What every `keyart` command shares: one-line errors, settings, --json output."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from typing import Any, Callable

import numpy as np
import typer
from rich.console import Console

from keyart.errors import KeyartError
from keyart.settings import KeyartSettings

console = Console(stderr=True, highlight=False, soft_wrap=True)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Expected failures print one `error: ...` line and exit 2; anything else exits 1.

    Never a traceback (KEYART_DEBUG=1 shows it).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyartError as exc:
            console.print(f"[red]error:[/red] {exc}", markup=True)
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if os.environ.get("KEYART_DEBUG"):
                raise
            console.print(f"[red]error:[/red] {type(exc).__name__}: {exc} (KEYART_DEBUG=1 shows the traceback)")
            raise typer.Exit(1) from None

    return wrapper


def load_settings() -> KeyartSettings:
    """KeyartSettings from KEYART_* variables; a bad value is a KeyartError naming it."""
    try:
        return KeyartSettings()
    except Exception as exc:  # pydantic names the variable and the problem
        raise KeyartError(f"invalid KEYART_* setting: {' '.join(str(exc).split())}") from None


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (numpy's included) replaced by None."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def emit(result: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], None]) -> None:
    """Print result as JSON on stdout, or for people via `human`.

    NaN and infinities (an estimate with no rows to stand on) go out as null: JSON has
    no NaN, and a consumer's parser would reject the whole document.
    """
    if as_json:
        sys.stdout.write(json.dumps(json_safe(result), indent=2, default=str, allow_nan=False) + "\n")
    else:
        human(result)
