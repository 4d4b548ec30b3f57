"""LightGBM quality-play model: an artifact that carries its own feature schema.

A model directory holds `model.txt` (the booster), optional `ensemble_<k>.txt`
(bootstrap members for Thompson sampling) and `meta.json`. A two-head model
(`meta.json` heads "start_x_stay") also holds `stay.txt` and `ensemble_<k>_stay.txt`:
`model.txt` then predicts P(play starts | shown), `stay.txt` P(quality | started),
and the model's prediction is their product. `image_offsets.json`, when present,
holds each image's own appeal (a shrunk logit of its start rate, learned from the
log), added to the start head's logit: an image the log has not seen gets 0.
`stay_offsets.json` holds the same for the stay head (a shrunk logit of the image's
quality rate among the plays it started: how well its plays last).
`meta.json` holds the feature space the model learned with (its columns and the
meaning of every category code); serving featurizes with that space, and a model
whose boosters disagree with it is refused at load, so a model can never score
silently wrong columns.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

import lightgbm as lgb
import numpy as np

from keyart.core.feature_space import FeatureSpace, FeatureSpaceError
from keyart.errors import ModelLoadError

CURRENT_POINTER = "CURRENT"
PREVIOUS_POINTER = "PREVIOUS"  # the version CURRENT named before the last promote: the last good one
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a directory name, never a path
ENSEMBLE_OFFSETS_FILE = "ensemble_offsets.json"
OFFSETS_FILE = "image_offsets.json"
STAY_OFFSETS_FILE = "stay_offsets.json"


def _lookup(table: Mapping[str, float], image_ids: Sequence[str]) -> np.ndarray:
    """table[id] per id (0 for an id it lacks), iterated in C: a page looks up 480 ids."""
    return np.fromiter(map(table.get, image_ids, repeat(0.0)), dtype=np.float64, count=len(image_ids))


@dataclass(frozen=True)
class RowOffsets:
    """A model's per-image offsets laid out over a fixed list of image ids (a catalog's
    image rows): a page gathers its 480 candidates' offsets with one indexing per table
    instead of 480 dict lookups each (`QualityPlayModel.row_offsets`)."""

    start: np.ndarray | None  # image-offset per row (None: the model has none)
    stay: np.ndarray | None
    draws: tuple[np.ndarray, ...] = ()  # Thompson's offset draws, per member


@dataclass
class QualityPlayModel:
    """A loaded booster (and ensemble) with its metadata."""

    version: str
    booster: lgb.Booster  # the start head of a two-head model
    ensemble: list[lgb.Booster] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    stay: lgb.Booster | None = None  # P(quality | started), when the model has two heads
    ensemble_stay: list[lgb.Booster] = field(default_factory=list)
    image_offsets: Mapping[str, float] = field(default_factory=dict)  # image_id -> start-logit offset
    stay_offsets: Mapping[str, float] = field(default_factory=dict)  # image_id -> stay-logit offset
    # The columns it learned and what their category codes mean (every saved model has
    # one; None only for an in-memory model of anonymous columns, e.g. DR's reward model).
    space: FeatureSpace | None = None
    # Forests compiled to machine code (keyart.core.compiled), by name: "start", "stay",
    # "start_<k>", "stay_<k>"; rows -> raw score. A forest not in it is scored by LightGBM.
    compiled: Mapping[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    # Thompson sampling's posterior as bootstrap draws of the per-image start offsets (the
    # image's own appeal, where a page's uncertainty about which image lies): member k
    # scores sigmoid(start logit + offsets_k) x stay. Models trained before score forest
    # ensembles (`ensemble`, `ensemble_stay`) instead.
    ensemble_offsets: list[Mapping[str, float]] = field(default_factory=list)
    # row_offsets per catalog index it was asked for (a few at most: the served one, experiment arms).
    _row_cache: dict[int, tuple[object, RowOffsets]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def has_ensemble(self) -> bool:
        """Whether Thompson sampling has posterior draws to sample from."""
        return bool(self.ensemble_offsets or self.ensemble)

    def offsets(self, image_ids: Sequence[str] | None, n: int) -> np.ndarray | float:
        """Start-logit offset per row; a model with offsets needs the rows' image ids."""
        return self._per_row(self.image_offsets, "per-image offsets", image_ids, n)

    def stay_offset(self, image_ids: Sequence[str] | None, n: int) -> np.ndarray | float:
        """Stay-logit offset per row (0.0 for a model without stay offsets)."""
        return self._per_row(self.stay_offsets, "per-image stay offsets", image_ids, n)

    def _per_row(self, table: Mapping[str, float], what: str, image_ids: Sequence[str] | None,
                 n: int) -> np.ndarray | float:
        if not table:
            return 0.0
        if image_ids is None or len(image_ids) != n:
            raise ValueError(f"model {self.version} adds {what}: pass the {n} rows' image ids")
        return _lookup(table, image_ids)

    def row_offsets(self, image_ids: Sequence[str]) -> RowOffsets:
        """Every offset table of the model over `image_ids` (0 for an id a table lacks)."""
        return RowOffsets(
            start=_lookup(self.image_offsets, image_ids) if self.image_offsets else None,
            stay=_lookup(self.stay_offsets, image_ids) if self.stay_offsets else None,
            draws=tuple(_lookup(t, image_ids) for t in self.ensemble_offsets),
        )

    def row_offsets_over(self, owner: object, image_ids: Callable[[], Sequence[str]]) -> RowOffsets:
        """`row_offsets` of `image_ids()`, the image rows of `owner` (a catalog index), made
        once per owner: a ranker is built per page, the tables once per catalog and model."""
        hit = self._row_cache.get(id(owner))
        if hit is not None and hit[0] is owner:
            return hit[1]
        table = self.row_offsets(image_ids())
        if len(self._row_cache) >= 4:
            self._row_cache.clear()
        self._row_cache[id(owner)] = (owner, table)  # holding owner keeps its id from being reused
        return table

    def _head_offsets(self, image_ids: Sequence[str] | None, n: int, rows: np.ndarray | None,
                      table: RowOffsets | None) -> tuple[np.ndarray | float, np.ndarray | float]:
        """(start, stay) logit offsets of n rows: gathered from `table` at `rows` when given."""
        if table is not None and rows is not None:
            return (0.0 if table.start is None else table.start[rows],
                    0.0 if table.stay is None else table.stay[rows])
        return self.offsets(image_ids, n), self.stay_offset(image_ids, n)

    def _raw(self, name: str, booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
        """One forest's raw score (logit), compiled when it is."""
        compiled = self.compiled.get(name)
        if compiled is not None:
            return compiled(x)
        return np.asarray(booster.predict(x, raw_score=True, num_threads=1), dtype=np.float64)

    def _p(self, name: str, booster: lgb.Booster, x: np.ndarray, off: np.ndarray | float = 0.0) -> np.ndarray:
        """P(positive) of one forest (logit + offset, through the sigmoid): compiled when it is."""
        compiled = self.compiled.get(name)
        if compiled is not None:
            raw = compiled(x)
        elif isinstance(off, float) and off == 0.0:
            return np.asarray(booster.predict(x, num_threads=1), dtype=np.float64)
        else:
            raw = np.asarray(booster.predict(x, raw_score=True, num_threads=1), dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-(raw + off)))

    def predict(self, x: np.ndarray, image_ids: Sequence[str] | None = None, *, rows: np.ndarray | None = None,
                table: RowOffsets | None = None) -> np.ndarray:
        """P(quality play) per row of x, shape (n,). Single-threaded: pages are small.

        The per-image offsets come from `table` at `rows` (the rows' indices into the ids
        `table` was made for) when both are given, else from looking up `image_ids`."""
        start_off, stay_off = self._head_offsets(image_ids, len(x), rows, table)
        if self.compiled:  # the compiled forests read float64: converted once, not per forest
            x = np.ascontiguousarray(x, dtype=np.float64)
        p = self._p("start", self.booster, x, start_off)
        if self.stay is not None:
            p = p * self._p("stay", self.stay, x, stay_off)
        return p

    def predict_ensemble(self, x: np.ndarray, image_ids: Sequence[str] | None = None, *,
                         rows: np.ndarray | None = None, table: RowOffsets | None = None) -> np.ndarray:
        """Per-member predictions, shape (members, n); offsets as in `predict`."""
        gathered = table is not None and rows is not None
        if self.ensemble_offsets:
            if not gathered and (image_ids is None or len(image_ids) != len(x)):
                raise ValueError(f"model {self.version} samples per-image offsets: pass the {len(x)} rows' image ids")
            _, stay_off = self._head_offsets(image_ids, len(x), rows, table)
            raw = self._raw("start", self.booster, x)
            stay = self._p("stay", self.stay, x, stay_off) if self.stay is not None else 1.0
            if gathered:
                assert table is not None and rows is not None
                draws = [d[rows] for d in table.draws]
            else:
                assert image_ids is not None
                draws = [_lookup(t, image_ids) for t in self.ensemble_offsets]
            return np.stack([stay / (1.0 + np.exp(-(raw + off_k))) for off_k in draws])
        off, stay_off = self._head_offsets(image_ids, len(x), rows, table)
        out = np.stack([self._p(f"start_{k}", b, x, off) for k, b in enumerate(self.ensemble)])
        if self.ensemble_stay:
            out = out * np.stack([self._p(f"stay_{k}", b, x, stay_off) for k, b in enumerate(self.ensemble_stay)])
        return out

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """SHAP contributions in logit space, shape (n, n_features + 1) (both heads' summed)."""
        c = np.asarray(self.booster.predict(x, pred_contrib=True, num_threads=1))
        if self.stay is not None:
            c = c + np.asarray(self.stay.predict(x, pred_contrib=True, num_threads=1))
        return c


def save_model(
    directory: Path,
    version: str,
    booster: lgb.Booster,
    space: FeatureSpace,
    ensemble: list[lgb.Booster] | None = None,
    extra_meta: dict | None = None,
    stay: lgb.Booster | None = None,
    ensemble_stay: list[lgb.Booster] | None = None,
    image_offsets: Mapping[str, float] | None = None,
    ensemble_offsets: Sequence[Mapping[str, float]] | None = None,
    stay_offsets: Mapping[str, float] | None = None,
) -> Path:
    """Write a model artifact under directory/version and return its path."""
    if booster.feature_name() != list(space.names):
        raise ValueError("the booster's features are not the feature space's columns")
    out = directory / version
    out.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(out / "model.txt"))
    for k, member in enumerate(ensemble or []):
        member.save_model(str(out / f"ensemble_{k}.txt"))
    if stay is not None:
        stay.save_model(str(out / "stay.txt"))
        if ensemble_stay and len(ensemble_stay) != len(ensemble or []):
            raise ValueError("the stay head's ensemble must pair the start head's")
        for k, member in enumerate(ensemble_stay or []):
            member.save_model(str(out / f"ensemble_{k}_stay.txt"))
    if image_offsets:
        (out / OFFSETS_FILE).write_text(json.dumps({str(k): float(v) for k, v in image_offsets.items()}))
    if stay_offsets:
        if stay is None:
            raise ValueError("stay offsets need a stay head")
        (out / STAY_OFFSETS_FILE).write_text(json.dumps({str(k): float(v) for k, v in stay_offsets.items()}))
    if ensemble_offsets:
        (out / ENSEMBLE_OFFSETS_FILE).write_text(json.dumps(
            [{str(k): float(v) for k, v in table.items()} for table in ensemble_offsets]))
    meta = {
        "version": version,
        "feature_names": list(space.names),
        "feature_schema": space.schema_id,
        "feature_space": space.to_dict(),
        "ensemble_size": len(ensemble or []),
        **(extra_meta or {}),
        "heads": "start_x_stay" if stay is not None else "quality",
        "image_offsets": len(image_offsets or {}),
        "ensemble_offsets": len(ensemble_offsets or []),
        "stay_offsets": len(stay_offsets or {}),
    }
    # Every file's SHA-256, verified by every load before LightGBM parses anything: a file cut
    # inside its trees can crash the native parser (SIGSEGV/SIGABRT), not just raise.
    meta["checksums"] = {f.name: _sha256(f) for f in sorted(out.iterdir()) if f.is_file() and f.name != "meta.json"}
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify_checksums(path: Path, meta: dict, needed: list[str]) -> None:
    """Every file the load will parse is listed in meta.json and has its recorded SHA-256.

    Artifacts saved before checksums existed have none and load unverified (promote still
    parses them in a separate process first)."""
    sums = meta.get("checksums")
    if sums is None:
        return
    if not isinstance(sums, dict):
        raise ModelLoadError(f"{path / 'meta.json'}: checksums is not a mapping of file to SHA-256")
    for name in needed:
        if name not in sums:
            raise ModelLoadError(f"{path / 'meta.json'}: no checksum for {name}")
        file = path / name
        if not file.is_file():
            raise ModelLoadError(f"{file}: missing")
        if _sha256(file) != sums[name]:
            raise ModelLoadError(f"{file}: SHA-256 differs from meta.json (the file was cut or altered)")


def load_model(path: Path) -> QualityPlayModel:
    """Load and check a model artifact; raises ModelLoadError naming what is wrong."""
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise ModelLoadError(f"{meta_path}: missing model metadata")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{meta_path}: not valid JSON ({exc})") from exc
    if "feature_space" not in meta:
        raise ModelLoadError(
            f"{meta_path}: no feature_space (a model of an older Keyart, whose vocabularies were code "
            "constants); retrain the model with this version of Keyart"
        )
    try:
        space = FeatureSpace.from_dict(meta["feature_space"])
    except FeatureSpaceError as exc:
        raise ModelLoadError(f"{meta_path}: {exc}") from exc
    if meta.get("feature_names") != list(space.names):
        raise ModelLoadError(f"{meta_path}: feature_names differ from its feature_space's columns")
    if meta.get("feature_schema") != space.schema_id:
        raise ModelLoadError(f"{meta_path}: feature schema {meta.get('feature_schema')!r} is not the id of its "
                             f"feature_space ({space.schema_id!r}): the metadata was altered")
    heads = meta.get("heads", "quality")
    if heads not in ("quality", "start_x_stay"):
        raise ModelLoadError(f"{meta_path}: heads {heads!r} is not 'quality' or 'start_x_stay'")
    size = int(meta.get("ensemble_size", 0))
    needed = ["model.txt", *(f"ensemble_{k}.txt" for k in range(size))]
    if heads == "start_x_stay":
        needed += ["stay.txt", *(f"ensemble_{k}_stay.txt" for k in range(size))]
    needed += [OFFSETS_FILE] if int(meta.get("image_offsets", 0)) else []
    needed += [ENSEMBLE_OFFSETS_FILE] if int(meta.get("ensemble_offsets", 0)) else []
    needed += [STAY_OFFSETS_FILE] if int(meta.get("stay_offsets", 0)) else []
    if int(meta.get("stay_offsets", 0)) and heads != "start_x_stay":
        raise ModelLoadError(f"{meta_path}: stay_offsets without a stay head")
    _verify_checksums(path, meta, needed)
    try:
        booster = lgb.Booster(model_file=str(path / "model.txt"))
        ensemble = [lgb.Booster(model_file=str(path / f"ensemble_{k}.txt")) for k in range(size)]
        stay = lgb.Booster(model_file=str(path / "stay.txt")) if heads == "start_x_stay" else None
        ensemble_stay = (
            [lgb.Booster(model_file=str(path / f"ensemble_{k}_stay.txt")) for k in range(size)]
            if stay is not None
            else []
        )
    except (lgb.basic.LightGBMError, OSError) as exc:
        raise ModelLoadError(f"{path}: cannot load booster ({exc})") from exc
    offsets = _offset_table(path / OFFSETS_FILE, "image offsets") if int(meta.get("image_offsets", 0)) else {}
    stay_offsets = _offset_table(path / STAY_OFFSETS_FILE, "stay offsets") if int(meta.get("stay_offsets", 0)) else {}
    ensemble_offsets: list[Mapping[str, float]] = []
    if int(meta.get("ensemble_offsets", 0)):
        try:
            tables = json.loads((path / ENSEMBLE_OFFSETS_FILE).read_text())
            ensemble_offsets = [{str(k): float(v) for k, v in t.items()} for t in tables]
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise ModelLoadError(f"{path / ENSEMBLE_OFFSETS_FILE}: cannot load Thompson's offset draws ({exc})") \
                from exc
        if len(ensemble_offsets) != int(meta["ensemble_offsets"]):
            raise ModelLoadError(f"{path / ENSEMBLE_OFFSETS_FILE}: {len(ensemble_offsets)} draws, meta.json says "
                                 f"{meta['ensemble_offsets']}")
    for name, b in (("model.txt", booster), ("stay.txt", stay)):
        if b is not None and b.feature_name() != list(space.names):
            raise ModelLoadError(f"{path}/{name}: booster features differ from meta.json")
    return QualityPlayModel(version=str(meta["version"]), booster=booster, space=space, ensemble=ensemble, meta=meta,
                            stay=stay, ensemble_stay=ensemble_stay, image_offsets=offsets,
                            stay_offsets=stay_offsets, ensemble_offsets=ensemble_offsets)


def _offset_table(file: Path, what: str) -> dict[str, float]:
    """An image_id -> logit offset table, or ModelLoadError naming the file."""
    try:
        return {str(k): float(v) for k, v in json.loads(file.read_text()).items()}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise ModelLoadError(f"{file}: cannot load the {what} ({exc})") from exc


def current_version(models_dir: Path, pointer_name: str = CURRENT_POINTER) -> str | None:
    """The promoted version named by models_dir/CURRENT (or another pointer), if any.

    Raises:
        ModelLoadError: the pointer holds something that is not a version name.
    """
    pointer = models_dir / pointer_name
    if not pointer.is_file():
        return None
    try:
        version = pointer.read_bytes()[:1024].decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{pointer}: unreadable ({type(exc).__name__})") from None
    if version and not _VERSION.fullmatch(version):
        raise ModelLoadError(f"{pointer}: {version[:60]!r} is not a model version")
    return version or None


def has_checksums(path: Path) -> bool:
    """Whether the artifact's meta.json records its files' SHA-256 (every artifact saved by
    this Keyart does): if not, parse it in a separate process before loading it here."""
    try:
        return isinstance(json.loads((path / "meta.json").read_text()).get("checksums"), dict)
    except (OSError, ValueError, AttributeError):
        return False


def check_in_subprocess(path: Path, timeout_s: float = 300.0) -> None:
    """Load the artifact in a separate Python process first: a corrupt forest that crashes
    LightGBM's native parser kills that process, not the caller.

    Raises:
        ModelLoadError: the artifact does not load, or loading it killed the process.
    """
    code = "import sys; from keyart.core.model import load_model; load_model(__import__('pathlib').Path(sys.argv[1]))"
    try:
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, encoding="utf-8",
                              errors="replace", timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ModelLoadError(f"{path}: loading took over {timeout_s:.0f} s in a separate process") from None
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise ModelLoadError(f"{path}: loading it killed a separate process with {name}: the artifact is corrupt")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["exit code " + str(done.returncode)])[-1]
        raise ModelLoadError(f"{path}: does not load ({last[:300]})")


def promote(models_dir: Path, version: str, checked: bool = False) -> None:
    """Point CURRENT at version atomically; serving picks it up without a restart.

    The artifact is loaded in a separate process first, then here; the version CURRENT
    named before is kept in PREVIOUS, the last good model a replica starts with when
    CURRENT cannot be loaded. checked: the caller ran `check_in_subprocess` already."""
    if not _VERSION.fullmatch(version):
        raise ModelLoadError(f"{version[:60]!r} is not a model version (letters, digits, '.', '_', '-')")
    if not checked:
        check_in_subprocess(models_dir / version)
    load_model(models_dir / version)  # refuse to promote what would not load
    try:
        before = current_version(models_dir)
    except ModelLoadError:
        before = None
    if before and before != version:
        _write_pointer(models_dir, PREVIOUS_POINTER, before)
    _write_pointer(models_dir, CURRENT_POINTER, version)


def _write_pointer(models_dir: Path, name: str, version: str) -> None:
    tmp = models_dir / (name + ".tmp")
    tmp.write_text(version + "\n")
    tmp.replace(models_dir / name)
