"""A bad model can never take serving down: cut files fail their checksum before LightGBM
parses them, promotion parses in a separate process, a garbage CURRENT is an error, and a
replica that cannot load CURRENT starts with the last good model or serves default
artwork as NOT_SERVING."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny import make_member, make_model

from keyart.app.runtime import Runtime
from keyart.core.model import (
    CURRENT_POINTER,
    PREVIOUS_POINTER,
    check_in_subprocess,
    current_version,
    load_model,
    promote,
    save_model,
)
from keyart.core.page import PageRequest, PageService
from keyart.core.ranker import PolicyConfig
from keyart.domain import RequestContext, TitleRequest
from keyart.errors import ModelLoadError
from keyart.settings import KeyartSettings


def _save(models_dir: Path, version: str) -> Path:
    model = make_model(version, ensemble=0)
    return save_model(models_dir, version, model.booster, model.space)


def _cut(path: Path) -> None:
    """Cut model.txt inside its trees, as a full disk or a killed copy leaves it."""
    text = (path / "model.txt").read_bytes()
    (path / "model.txt").write_bytes(text[: len(text) // 2])


def _drop_checksums(path: Path) -> None:
    """An artifact as an older Keyart saved it: no checksums in meta.json."""
    meta = json.loads((path / "meta.json").read_text())
    del meta["checksums"]
    (path / "meta.json").write_text(json.dumps(meta))


def test_every_file_is_checksummed_and_a_cut_one_is_refused_before_parsing(tmp_path) -> None:
    path = _save(tmp_path, "m-a")
    meta = json.loads((path / "meta.json").read_text())
    assert set(meta["checksums"]) == {"model.txt"}
    assert load_model(path).version == "m-a"
    _cut(path)
    with pytest.raises(ModelLoadError, match=r"model.txt: SHA-256 differs"):
        load_model(path)


def test_promote_parses_in_a_separate_process_and_keeps_current(tmp_path) -> None:
    promote(tmp_path, _save(tmp_path, "m-a").name)
    bad = _save(tmp_path, "m-b")
    _drop_checksums(bad)
    _cut(bad)  # unverifiable: only a separate process may parse it
    with pytest.raises(ModelLoadError, match="m-b"):
        check_in_subprocess(bad)
    with pytest.raises(ModelLoadError):
        promote(tmp_path, "m-b")
    assert current_version(tmp_path) == "m-a"


def test_promote_keeps_the_previous_version_as_the_last_good_one(tmp_path) -> None:
    promote(tmp_path, _save(tmp_path, "m-a").name)
    assert current_version(tmp_path, PREVIOUS_POINTER) is None
    promote(tmp_path, _save(tmp_path, "m-b").name)
    assert current_version(tmp_path) == "m-b" and current_version(tmp_path, PREVIOUS_POINTER) == "m-a"
    with pytest.raises(ModelLoadError, match="not a model version"):
        promote(tmp_path, "../m-a")


@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x01garbage", b"m-a/../../etc\n", b"\x00" * 4096])
def test_a_garbage_pointer_is_an_error_naming_the_file(tmp_path, content) -> None:
    (tmp_path / CURRENT_POINTER).write_bytes(content)
    with pytest.raises(ModelLoadError, match="CURRENT"):
        current_version(tmp_path)


def _runtime(tmp_path: Path, tiny_index) -> Runtime:
    settings = KeyartSettings(data_dir=tmp_path, compiled_trees=False)

    class Members:
        def get(self, member_id):
            return make_member(member_id)

    page = PageService(tiny_index, Members(), PolicyConfig(uniform_explore_share=0.0), feature_timeout_s=5.0,
                       request_budget_s=10.0)
    return Runtime(settings=settings, page=page)


def _page(runtime: Runtime, tiny_index):
    titles = [TitleRequest(t) for t in sorted(tiny_index.catalog.titles)[:3]]
    ctx = RequestContext("US", "en", "TV", "home", runtime.page.clock())
    return runtime.page.rank(PageRequest("r", "m1", ctx, titles))


def test_a_replica_starts_with_the_last_good_model_when_current_does_not_load(tmp_path, tiny_index) -> None:
    models = KeyartSettings(data_dir=tmp_path).models_dir
    promote(models, _save(models, "m-a").name)
    promote(models, _save(models, "m-b").name)
    _cut(models / "m-b")
    runtime = _runtime(tmp_path, tiny_index)
    assert runtime.reload_model() is True
    assert runtime.page.model_version == "m-a" and runtime.page.ready()
    assert "m-b" in runtime.last_model_error
    assert all(not s.fallback_reason for s in _page(runtime, tiny_index).selections)
    assert runtime.reload_model() is False  # refused once; not re-read every poll while unchanged

    promote(models, _save(models, "m-c").name)  # a fixed CURRENT is picked up
    assert runtime.reload_model() is True and runtime.page.model_version == "m-c"


def test_with_no_good_model_a_replica_serves_default_artwork_as_not_serving(tmp_path, tiny_index) -> None:
    models = KeyartSettings(data_dir=tmp_path).models_dir
    promote(models, _save(models, "m-a").name)
    promote(models, _save(models, "m-b").name)
    _cut(models / "m-a")
    (models / CURRENT_POINTER).write_bytes(b"\xff\xfe garbage")
    runtime = _runtime(tmp_path, tiny_index)
    assert runtime.reload_model() is False
    assert runtime.page.model is None and not runtime.page.ready()
    result = _page(runtime, tiny_index)
    assert result.policy == "fallback" and {s.fallback_reason for s in result.selections} == {"model_error"}
    assert runtime.reload_model() is False and not runtime.page.ready()  # the next poll: nothing reloaded

    promote(models, "m-b")
    assert runtime.reload_model() is True and runtime.page.ready()
    assert all(not s.fallback_reason for s in _page(runtime, tiny_index).selections)


def test_a_dead_watcher_thread_is_reported_broken(tmp_path, tiny_index) -> None:
    """What Serve's health check raises on (so Serve replaces the replica)."""
    import threading

    runtime = _runtime(tmp_path, tiny_index)
    assert runtime.broken() == ""
    runtime._watcher = threading.Thread(target=lambda: None)
    runtime._watcher.start()
    runtime._watcher.join()
    assert "watcher" in runtime.broken()
