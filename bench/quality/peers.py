"""Peers trained on Keyart's exported log only (never on the truth).

Every peer sees what a customer has: the exported log's columns (member, title,
image, device, country, outcome minutes), their own request records (the client
time of each request_id) and the files they imported. ``CustomerTable`` is the
join a simple customer would write:

- member profile: country, language, main device, tenure;
- history aggregates from viewing.parquet: number of views, total minutes, the share
  of minutes in each genre, whether the member watched the title;
- the two lookups that put a member's history next to an image: the share of the
  member's minutes in the genre the image's tone names, and in titles featuring the
  cast members the image shows (sum and max);
- image attributes as imported (plus the size of the title's pool);
- context: device, country, whether the device is the member's main one, hour, weekday.

Peers: a non-contextual bandit (per-image quality-play rate shrunk to the log's
mean), plain LightGBM and a logistic regression on those columns (argmax of the
predicted quality-play probability), and Vowpal Wabbit ``--cb_adf -q sa`` (shared
member/context namespace, one action per image of the pool, cost -1 for a quality
play, the logged propensity as probability; argmin of predicted cost).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from quality.world_base import GENRES

CATEGORICAL = ("country", "device", "main_device", "language", "expression", "tone", "style", "palette")
GENRE_SHARE = tuple(f"share_{g}" for g in GENRES)
NUMERIC = ("tenure_days", "log_views", "log_minutes", *GENRE_SHARE, "is_main_device", "hour", "weekday",
           "title_watched", "num_faces", "face_area", "villain_shown", "group_size", "brightness", "warmth",
           "contrast", "text_present", "pool_size", "tone_share", "cast_share_sum", "cast_share_max")


class CustomerTable:
    """The customer's own feature join (see the module docstring)."""

    def __init__(self, import_dir: Path) -> None:
        members = pd.read_parquet(import_dir / "members.parquet")
        titles = pd.read_parquet(import_dir / "titles.parquet")
        images = pd.read_parquet(import_dir / "images.parquet")
        viewing = pd.read_parquet(import_dir / "viewing.parquet")
        self.members = members.set_index("member_id")
        self.m_index = pd.Index(members["member_id"])
        t_index = pd.Index(titles["title_id"])
        actors = pd.Index(sorted({a for c in titles["cast"] for a in c}))
        n_m, n_t, n_a = len(members), len(titles), len(actors)
        gi = {g: k for k, g in enumerate(GENRES)}
        tg = np.zeros((n_t, len(GENRES)))
        for k, gs in enumerate(titles["genres"]):
            for g in gs:
                tg[k, gi[g]] = 1.0 / len(gs)
        vm = self.m_index.get_indexer(viewing["member_id"])
        vt = t_index.get_indexer(viewing["title_id"])
        mins = viewing["minutes_watched"].to_numpy(float)
        g = np.zeros((n_m, len(GENRES)))
        np.add.at(g, vm, mins[:, None] * tg[vt])
        total = g.sum(1)
        self.genre_share = g / np.maximum(total, 1e-9)[:, None]
        self.log_views = np.log1p(np.bincount(vm, minlength=n_m))
        self.log_minutes = np.log1p(total)
        cast = sparse.csr_matrix((np.ones(sum(len(c) for c in titles["cast"])),
                                  (np.repeat(np.arange(n_t), [len(c) for c in titles["cast"]]),
                                   actors.get_indexer(np.concatenate([list(c) for c in titles["cast"]])))),
                                 shape=(n_t, n_a))
        view = sparse.csr_matrix((mins, (vm, vt)), shape=(n_m, n_t))
        self.actor_share = sparse.csr_matrix(sparse.diags(1.0 / np.maximum(total, 1e-9)) @ (view @ cast))
        self.watched = set(zip(vm.tolist(), vt.tolist()))
        self.images = images.set_index("image_id")
        self.i_index = pd.Index(images["image_id"])
        self.i_title = t_index.get_indexer(images["title_id"])
        self.i_tone = np.array([gi[t] for t in images["tone"]])
        rows = np.repeat(np.arange(len(images)), [len(c) for c in images["cast_shown"]])
        cols = actors.get_indexer(np.concatenate([list(c) for c in images["cast_shown"]] + [[]]).astype(str))
        self.i_cast = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(images), n_a))
        self.pool_size = images.groupby("title_id")["image_id"].transform("size").to_numpy()
        self.categories = {
            "country": sorted(set(members["country"])), "device": ["TV", "WEB", "MOBILE", "TABLET"],
            "main_device": sorted(set(members["main_device"])), "language": sorted(set(members["language"])),
            **{c: sorted(set(images[c])) for c in ("expression", "tone", "style", "palette")},
        }

    def frame(self, member_ids, image_ids, device, country, client_time) -> pd.DataFrame:
        """One row per (member, image, context): the columns of NUMERIC and CATEGORICAL."""
        m = self.m_index.get_indexer(np.asarray(member_ids, dtype=object))
        i = self.i_index.get_indexer(np.asarray(image_ids, dtype=object))
        if (m < 0).any() or (i < 0).any():
            raise KeyError("unknown member or image in the log")
        prof = self.members.iloc[m]
        img = self.images.iloc[i]
        when = pd.DatetimeIndex(client_time)
        t = self.i_title[i]
        cs = self.actor_share[m].multiply(self.i_cast[i]).tocsr()
        out = pd.DataFrame({
            "tenure_days": prof["tenure_days"].to_numpy(float),
            "log_views": self.log_views[m], "log_minutes": self.log_minutes[m],
            **{c: self.genre_share[m, k] for k, c in enumerate(GENRE_SHARE)},
            "is_main_device": (np.asarray(device) == prof["main_device"].to_numpy()).astype(float),
            "hour": when.hour.to_numpy(float), "weekday": when.weekday.to_numpy(float),
            "title_watched": np.array([(a, b) in self.watched for a, b in zip(m.tolist(), t.tolist())], float),
            "num_faces": img["num_faces"].to_numpy(float), "face_area": img["face_area"].to_numpy(float),
            "villain_shown": img["villain_shown"].to_numpy(float), "group_size": img["group_size"].to_numpy(float),
            "brightness": img["brightness"].to_numpy(float), "warmth": img["warmth"].to_numpy(float),
            "contrast": img["contrast"].to_numpy(float), "text_present": img["text_present"].to_numpy(float),
            "pool_size": self.pool_size[i].astype(float),
            "tone_share": self.genre_share[m, self.i_tone[i]],
            "cast_share_sum": np.asarray(cs.sum(axis=1)).ravel(),
            "cast_share_max": cs.max(axis=1).toarray().ravel(),
            "country": np.asarray(country, dtype=object), "device": np.asarray(device, dtype=object),
            "main_device": prof["main_device"].to_numpy(), "language": prof["language"].to_numpy(),
            "expression": img["expression"].to_numpy(), "tone": img["tone"].to_numpy(),
            "style": img["style"].to_numpy(), "palette": img["palette"].to_numpy(),
        })
        for c in CATEGORICAL:
            out[c] = pd.Categorical(out[c], categories=self.categories[c])
        return out


# ---------------------------------------------------------------------- peers


def non_contextual(train_images: np.ndarray, y: np.ndarray, prior_strength: float = 10.0):
    """Per-image quality-play rate, shrunk to the log's mean with ``prior_strength`` pseudo-decisions."""
    mean = float(y.mean()) if len(y) else 0.0
    df = pd.DataFrame({"i": train_images, "y": y}).groupby("i")["y"].agg(["sum", "count"])
    rate = (df["sum"] + prior_strength * mean) / (df["count"] + prior_strength)

    def score(image_ids: np.ndarray) -> np.ndarray:
        return rate.reindex(image_ids).fillna(mean).to_numpy(float)

    return score


def lightgbm_peer(x: pd.DataFrame, y: np.ndarray, seed: int = 7, threads: int = 2):
    """Plain LightGBM: binary log-loss, early stopping on the newest 20 % of the training rows."""
    import lightgbm as lgb

    cut = int(len(x) * 0.8)
    params = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 50,
              "feature_fraction": 0.9, "seed": seed, "num_threads": threads, "verbose": -1}
    cols = [*NUMERIC, *CATEGORICAL]
    train = lgb.Dataset(x[cols].iloc[:cut], y[:cut], categorical_feature=list(CATEGORICAL))
    valid = lgb.Dataset(x[cols].iloc[cut:], y[cut:], reference=train)
    booster = lgb.train(params, train, num_boost_round=1000, valid_sets=[valid],
                        callbacks=[lgb.early_stopping(50, verbose=False)])
    return lambda f: booster.predict(f[cols], num_iteration=booster.best_iteration), {
        "rounds": int(booster.best_iteration)}


def logistic_peer(x: pd.DataFrame, y: np.ndarray, seed: int = 7):
    """Logistic regression (scikit-learn): standardized numerics, one-hot categoricals."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer([("num", StandardScaler(), list(NUMERIC)),
                             ("cat", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL))])
    model = make_pipeline(pre, LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    model.fit(_plain(x), y)
    return lambda f: model.predict_proba(_plain(f))[:, 1], {}


def _plain(x: pd.DataFrame) -> pd.DataFrame:
    out = x.copy()
    for c in CATEGORICAL:
        out[c] = out[c].astype(str)
    return out


# Vowpal Wabbit: shared (member, context) and action (image) namespaces.
_SHARED_NUM = ("tenure_days", "log_views", "log_minutes", *GENRE_SHARE, "is_main_device", "hour", "weekday",
               "title_watched")
_SHARED_CAT = ("country", "device", "main_device", "language")
_ACTION_NUM = ("num_faces", "face_area", "villain_shown", "group_size", "brightness", "warmth", "contrast",
               "text_present", "pool_size", "tone_share", "cast_share_sum", "cast_share_max")
_ACTION_CAT = ("expression", "tone", "style", "palette")


def _vw_lines(f: pd.DataFrame, kind: str) -> list[str]:
    num = _SHARED_NUM if kind == "s" else _ACTION_NUM
    cat = _SHARED_CAT if kind == "s" else _ACTION_CAT
    vals = {c: f[c].to_numpy(float) for c in num}
    if "tenure_days" in vals:
        vals["tenure_days"] = np.log1p(vals["tenure_days"])
    cats = {c: f[c].astype(str).to_numpy() for c in cat}
    out = []
    for r in range(len(f)):
        parts = [f"{c}={cats[c][r]}" for c in cat] + [f"{c}:{vals[c][r]:.5g}" for c in num if vals[c][r] != 0.0]
        out.append(f"|{kind} " + " ".join(parts))
    return out


def vw_peer(shared: pd.DataFrame, actions: pd.DataFrame, offsets: np.ndarray, chosen: np.ndarray,
            cost: np.ndarray, prob: np.ndarray, seed: int = 7):
    """VW --cb_adf -q sa, one pass in log order. Rows of decision d: actions[offsets[d]:offsets[d+1]];
    chosen[d] is the index of the shown image within them."""
    from vowpalwabbit import Workspace

    ws = Workspace(f"--cb_adf -q sa --quiet --random_seed {seed}")
    s_lines = _vw_lines(shared, "s")
    a_lines = _vw_lines(actions, "a")
    for d in range(len(s_lines)):
        lo, hi = offsets[d], offsets[d + 1]
        ex = ["shared " + s_lines[d]]
        for k in range(hi - lo):
            label = f"0:{cost[d]:g}:{prob[d]:.6g} " if k == chosen[d] else ""
            ex.append(label + a_lines[lo + k])
        ws.learn(ex)

    def score(shared_f: pd.DataFrame, actions_f: pd.DataFrame, offs: np.ndarray) -> np.ndarray:
        s = _vw_lines(shared_f, "s")
        a = _vw_lines(actions_f, "a")
        out = np.zeros(len(a))
        for d in range(len(s)):
            lo, hi = offs[d], offs[d + 1]
            pred = ws.predict(["shared " + s[d], *a[lo:hi]])
            out[lo:hi] = -np.asarray(pred, dtype=float)  # lower cost is better
        return out

    return score, {"args": "--cb_adf -q sa", "passes": 1}
