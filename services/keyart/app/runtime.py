"""Wire the page service to its adapters (catalog, Feast, model store, decision log).

Used by every entry point that serves: the Ray Serve deployment, the bare gRPC
server and the CLI demo. A background thread watches the model pointer and swaps
in a newly promoted model without a restart; a model that fails to load is
refused and the previous one stays in service.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from keyart.adapters.gc_tuning import tune_gc_for_serving
from keyart.core.compiled import with_compiled_trees
from keyart.core.featurize import CatalogIndex
from keyart.core.model import (
    PREVIOUS_POINTER,
    QualityPlayModel,
    check_in_subprocess,
    current_version,
    has_checksums,
    load_model,
)
from keyart.core.page import PageService
from keyart.core.ports import DecisionLog, PageMetrics
from keyart.core.ranker import PolicyConfig
from keyart.errors import ModelLoadError
from keyart.settings import KeyartSettings

log = logging.getLogger(__name__)


def policy_config(settings: KeyartSettings) -> PolicyConfig:
    return PolicyConfig(
        name=settings.policy,
        epsilon=settings.epsilon,
        temperature=settings.softmax_temperature,
        uniform_explore_share=settings.uniform_explore_share,
        window_hours=settings.stability_window_hours,
        salt=settings.stability_salt,
        diversity_strength=settings.diversity_strength,
        new_image_min_share=settings.new_image_min_share,
        new_image_impressions=settings.new_image_impressions,
    )


def load_serving_model(settings: KeyartSettings, version: str) -> QualityPlayModel:
    """A model as serving scores with it: loaded and checked, its forests compiled (cached;
    the Thompson ensemble's only when serving Thompson) unless compiled trees are off."""
    path = settings.models_dir / version
    if not has_checksums(path):  # an older artifact: a cut forest could crash LightGBM here
        check_in_subprocess(path)
    model = load_model(path)
    if settings.compiled_trees:
        model = with_compiled_trees(model, path, ensemble=settings.policy == "thompson")
    return model


def _artifact_stamp(models_dir: Path, version: str) -> tuple[object, ...]:
    """The version and its files' sizes and mtimes: a refused artifact is retried once it changes."""
    try:
        files = sorted((models_dir / version).iterdir())
        return (version, *((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    except OSError:
        return (version,)


@dataclass
class Runtime:
    """A page service and the resources it owns."""

    settings: KeyartSettings
    page: PageService
    writer: DecisionLog | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None
    last_model_error: str = ""
    last_experiment_error: str = ""
    _catalog_stamp: tuple[int, ...] | None = None
    _refused_stamp: tuple[object, ...] | None = None

    @classmethod
    def start_serving(cls, settings: KeyartSettings, metrics: PageMetrics | None = None,
                      watch_interval_s: float = 2.0) -> Runtime:
        """`start`, then garbage collection tuned as every serving process has it
        (`tune_gc_for_serving`): the servers, and the bench's in-process figures."""
        runtime = cls.start(settings, metrics=metrics, watch_interval_s=watch_interval_s)
        tune_gc_for_serving(settings.gc_young_threshold)
        return runtime

    @classmethod
    def start(
        cls,
        settings: KeyartSettings,
        metrics: PageMetrics | None = None,
        with_log: bool = True,
        watch_interval_s: float = 2.0,
    ) -> Runtime:
        from keyart.adapters.catalog.parquet import load_catalog
        from keyart.adapters.decision_log.factory import open_decision_log
        from keyart.adapters.feast.online import MemberFeatureSource
        from keyart.adapters.feast.repo import open_store, resolve_feature_repo

        index = CatalogIndex.build(load_catalog(settings.world_dir))
        members = MemberFeatureSource(open_store(resolve_feature_repo(settings)))
        try:
            members.get("warm-up")  # opens the online store now, not on the first page
        except Exception:  # a broken store must not stop serving: pages get default artwork
            log.exception("member feature store unavailable at start")
        feature_timeout_s = settings.feature_timeout_ms / 1000.0
        try:
            inline_features = members.bound_wait(feature_timeout_s)
        except Exception:  # the timed worker thread still guards the pages
            log.exception("member feature store: could not bound its wait; reads go through a worker thread")
            inline_features = False
        writer = open_decision_log(settings) if with_log else None
        page = PageService(
            index=index,
            members=members,
            policy=policy_config(settings),
            sink=writer,
            metrics=metrics,
            feature_timeout_s=feature_timeout_s,
            request_budget_s=settings.request_budget_ms / 1000.0,
            log_member_id=_log_member_id(settings),
            inline_features=inline_features,
        )
        runtime = cls(settings=settings, page=page, writer=writer)
        runtime.reload_model()
        runtime.reload_experiment()
        runtime.reload_catalog()  # records the loaded catalog's file stamps
        runtime.record_space()
        if watch_interval_s > 0:
            runtime._watcher = threading.Thread(
                target=runtime._watch, args=(watch_interval_s,), name="model-watcher", daemon=True
            )
            runtime._watcher.start()
        return runtime

    def reload_model(self) -> bool:
        """Load the promoted model if it differs from the one serving. True if swapped.

        A model that does not load never stops serving: the one serving stays; a replica
        serving nothing yet starts with the last good model (models/PREVIOUS), or else
        serves default artwork and reports NOT_SERVING until CURRENT is fixed."""
        try:
            version = current_version(self.settings.models_dir)
        except ModelLoadError as exc:
            return self._model_refused(None, exc)
        if version is None or version == self.page.model_version:
            return False
        stamp = _artifact_stamp(self.settings.models_dir, version)
        if stamp == self._refused_stamp:  # refused already and unchanged since: not every poll
            return False
        try:
            # Seconds the first time (compiling): on the watcher's thread, never a page's.
            model = load_serving_model(self.settings, version)
        except ModelLoadError as exc:
            self._refused_stamp = stamp
            return self._model_refused(version, exc)
        self._refused_stamp = None
        self.page.set_model(model)
        self.last_model_error = ""
        log.info("serving model %s", version)
        self.record_space()
        return True

    def _model_refused(self, version: str | None, exc: ModelLoadError) -> bool:
        if str(exc) != self.last_model_error:  # once per distinct error, not every poll
            log.error("model %s refused, keeping %r: %s", version or "CURRENT", self.page.model_version, exc)
        self.last_model_error = str(exc)
        # Serving already, or this very failure already fell back: nothing new to try (a
        # garbage CURRENT fails every poll; PREVIOUS is not reloaded every 2 s meanwhile).
        if self.page.model is not None or self.page.model_unavailable == str(exc):
            return False
        try:
            previous = current_version(self.settings.models_dir, PREVIOUS_POINTER)
            if previous and previous != version:
                self.page.set_model(load_serving_model(self.settings, previous))
                log.warning("serving the last good model %s until CURRENT loads", previous)
                self.record_space()
                return True
        except ModelLoadError as prev_exc:
            log.error("the last good model does not load either: %s", prev_exc)
        self.page.model_unavailable = str(exc)
        return False

    def reload_experiment(self) -> bool:
        """Serve the running experiment (`keyart experiments start/stop`) if it changed. True if swapped.

        Its models are loaded first; one that fails refuses the whole change and what ran
        before keeps running (the error is in `last_experiment_error`).
        """
        from keyart.adapters.experiments import ExperimentError, ExperimentStore

        try:
            wanted = ExperimentStore(self.settings.experiments_dir).active()
        except (ExperimentError, OSError, ValueError, KeyError) as exc:
            self.last_experiment_error = str(exc)
            log.error("running experiment unreadable, keeping the one served: %s", exc)
            return False
        running = self.page.experiment
        key = None if wanted is None else (wanted.experiment_id, wanted.revision)
        if key == (None if running is None else (running.experiment_id, running.revision)):
            return False
        if wanted is None:
            self.page.set_experiment(None)
            log.info("experiment %s stopped", running.experiment_id if running else "")
            return True
        serving = self.page.model
        try:
            models = {v: serving if serving is not None and serving.version == v
                      else load_serving_model(self.settings, v) for v in wanted.model_versions()}
            self.page.set_experiment(wanted, models)
        except (ModelLoadError, ValueError) as exc:
            self.last_experiment_error = str(exc)
            log.error("experiment %s refused, keeping %r: %s", wanted.experiment_id,
                      running.experiment_id if running else None, exc)
            return False
        self.last_experiment_error = ""
        log.info("running experiment %s (revision %d)", wanted.experiment_id, wanted.revision)
        return True

    def reload_catalog(self) -> bool:
        """Reload the catalog when its files changed (new artwork ingested). True if swapped."""
        from keyart.adapters.catalog.parquet import catalog_files, load_catalog

        stamp = tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in catalog_files(self.settings.world_dir))
        if stamp == self._catalog_stamp:
            return False
        if self._catalog_stamp is not None:
            self.page.set_catalog(load_catalog(self.settings.world_dir))
            log.info("catalog reloaded: version %s", self.page.index.catalog.version)
            self.record_space()
        self._catalog_stamp = stamp
        return True

    def record_space(self) -> None:
        """Record the feature space decisions are now logged under, so training can read them later."""
        from keyart.adapters.catalog.spaces import record_space

        try:
            record_space(self.settings.feature_spaces_dir, self.page.index.space)
        except OSError:  # serving goes on; training refuses rows of an unknown space by name
            log.exception("cannot record feature space %s", self.page.index.space.schema_id)

    def _watch(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            for reload in (self.reload_model, self.reload_experiment, self.reload_catalog):
                try:
                    reload()
                except Exception:  # the watcher must outlive any one bad artifact
                    log.exception("reload failed: %s", reload.__name__)

    def broken(self) -> str:
        """Why this replica cannot recover by itself, '' if it can: a thread it needs has
        died, which only a restart fixes (a store that is down is not that: the spool holds
        its records and a restart would not bring the store back)."""
        if self._watcher is not None and not self._watcher.is_alive() and not self._stop.is_set():
            return "the model watcher thread stopped: promoted models would never be served"
        if self.writer is not None and self.writer.stats().get("writer_alive") is False:
            return ("the decision-log writer stopped (its thread died, or its process kept dying): "
                    "impressions would not be logged")
        return ""

    def close(self) -> None:
        self._stop.set()
        self.page.close()
        if self.writer is not None:
            self.writer.close()


def _log_member_id(settings: KeyartSettings) -> Callable[[str], str] | None:
    """The keyed pseudonym the decision log stores for member ids, when a key is set."""
    from keyart.core.pseudonym import keyed_pseudonym

    key = settings.log_member_key.get_secret_value()
    return keyed_pseudonym(key.encode("utf-8")) if key else None
