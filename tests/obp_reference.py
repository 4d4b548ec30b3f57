"""Open Bandit Pipeline 0.5.7 as a reference: its estimators and the Open Bandit Dataset sample.

obp 0.5.7 declares Python < 3.11, so it is not installed: its source distribution is
fetched from PyPI once into `.cache/obp/` (pip download, no dependencies) and its
discrete estimators (`obp.ope.estimators`, numpy + scikit-learn) are imported straight
from the unpacked source. `obp.utils` imports torch at the top for its continuous
estimators; when torch is not installed an empty placeholder module stands in for it,
and none of the functions used here touches it. The sdist also carries the Open
Bandit Dataset's 10,000-row samples (`obp/dataset/obd/{random,bts}/{all,men,women}`).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tarfile
import types
from pathlib import Path

VERSION = "0.5.7"
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "obp"


def obp_source() -> Path:
    """The unpacked obp sdist (downloaded on first use); raises RuntimeError if it cannot be had."""
    root = CACHE / f"obp-{VERSION}"
    if (root / "obp" / "ope" / "estimators.py").is_file():
        return root
    tar = CACHE / f"obp-{VERSION}.tar.gz"
    if not tar.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", f"obp=={VERSION}", "--no-deps", "--no-binary", ":all:",
             "--ignore-requires-python", "-d", str(CACHE)], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not tar.is_file():
            raise RuntimeError(f"pip download obp=={VERSION} failed: {proc.stderr[-800:]}")
    with tarfile.open(tar) as t:
        t.extractall(CACHE, filter="data")
    return root


def obp_estimators() -> types.ModuleType:
    """`obp.ope.estimators` of the sdist, without running obp/__init__ (it imports every subpackage)."""
    root = obp_source()
    placeholder = None
    if "torch" not in sys.modules:
        try:
            import torch  # noqa: F401
        except ImportError:
            placeholder = types.ModuleType("torch")

            class _NoTensor:  # nothing is an instance: annotations only
                pass

            placeholder.Tensor = placeholder.tensor = _NoTensor  # type: ignore[attr-defined]
            sys.modules["torch"] = placeholder
    for name, path in (("obp", root / "obp"), ("obp.ope", root / "obp" / "ope")):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(path)]
            sys.modules[name] = pkg
    try:
        return importlib.import_module("obp.ope.estimators")
    finally:
        # Other libraries look torch up in sys.modules (matplotlib's unit converters do).
        if placeholder is not None and sys.modules.get("torch") is placeholder:
            del sys.modules["torch"]


def obp_bernoulli_ts() -> type:
    """`obp.policy.contextfree.BernoulliTS` of the sdist (the policy that logged OBD's bts samples)."""
    obp_estimators()  # the packages and the torch placeholder
    root = obp_source()
    if "obp.policy" not in sys.modules:
        pkg = types.ModuleType("obp.policy")
        pkg.__path__ = [str(root / "obp" / "policy")]
        sys.modules["obp.policy"] = pkg
    return importlib.import_module("obp.policy.contextfree").BernoulliTS


def obd_sample(policy: str, campaign: str = "all") -> Path:
    """The Open Bandit Dataset sample logged by `policy` ("random" or "bts")."""
    return obp_source() / "obp" / "dataset" / "obd" / policy / campaign / f"{campaign}.csv"
