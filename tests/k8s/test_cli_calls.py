"""Every `keyart ...` call written in the manifests parses against the real CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml

from keyart.app.cli.main import app

K8S = Path(__file__).resolve().parents[2] / "k8s"
SUBCOMMAND_GROUPS = {"log", "models", "world", "features", "artwork"}


def _strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        if node and node[0] == "keyart" and all(isinstance(x, str) for x in node):
            yield shlex.join(node)  # exec form: ["keyart", "log", "migrate"]
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def _calls() -> list[tuple[str, list[str]]]:
    found = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for text in _strings(doc):
                # Shell text: statements split on ; && || | and newlines.
                for statement in re.split(r";|&&|\|\||\||\n", text):
                    if re.match(r"\s*(exec\s+)?keyart\s", statement):  # commands only, not prose
                        words = shlex.split(statement.split(">")[0], comments=True)
                        found.append((str(path.relative_to(K8S)), words[words.index("keyart") + 1:]))
    return found


CALLS = _calls()


def test_manifests_call_the_cli():
    names = {" ".join(a[:2]) if a and a[0] in SUBCOMMAND_GROUPS else a[0] for _, a in CALLS}
    assert {"train", "evaluate", "log migrate", "log export"} <= names, names


@pytest.mark.parametrize("where,args", CALLS, ids=[f"{w}:{' '.join(a[:2])}" for w, a in CALLS])
def test_call_parses(where, args):
    """Unknown commands, unknown options and bad values fail here, not at 3 a.m. in a CronJob."""
    args = [re.sub(r"\$\(?[{A-Za-z_][^ ]*", "x", a) for a in args]  # shell variables -> placeholder
    cmd = typer.main.get_command(app)
    rest, name = list(args), "keyart"
    while hasattr(cmd, "resolve_command"):
        name, sub, rest = cmd.resolve_command(cmd.make_context(name, ["--help"], resilient_parsing=True), rest)
        assert sub is not None, f"{where}: unknown command in keyart {' '.join(args)}"
        cmd = sub
    cmd.make_context(name, rest)  # raises on an unknown option or a bad value
