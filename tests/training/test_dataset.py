"""Labels, validation errors, time split, IPS weights, re-featurization."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from tiny import make_space

from keyart_training.data.dataset import DatasetError, label, quality_labels, read_logged, refeaturize
from keyart_training.job import ips_weights_of
from keyart_training.train import time_split

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPACE = make_space()


def frame(minutes, first_play_delay_h=None, propensity=0.25) -> pd.DataFrame:
    n = len(minutes)
    df = pd.DataFrame({
        "decision_id": [f"d{i}" for i in range(n)], "member_id": "m1", "title_id": "t1", "image_id": "i1",
        "propensity": propensity, "policy": "uniform",
        "decided_at": [T0 + timedelta(minutes=i) for i in range(n)],
        "feature_schema": SPACE.schema_id,
        "features": [np.zeros(len(SPACE.names), np.float32) for _ in range(n)],
        "max_minutes": minutes,
    })
    if first_play_delay_h is not None:
        df["first_play_time"] = [None if h is None else T0 + timedelta(minutes=i, hours=h)
                                 for i, h in enumerate(first_play_delay_h)]
    return df


def test_short_plays_are_not_successes():
    data = label(frame([0.0, 3.0, 14.99, 15.0, 90.0]), min_minutes=15.0, space=SPACE)
    assert data.y.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_attribution_window_drops_late_plays():
    df = frame([30.0, 30.0, 30.0, 0.0], first_play_delay_h=[1.0, 30.0, None, None])
    y = quality_labels(df, 15.0, attribution_window=timedelta(hours=24))
    assert y.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert quality_labels(df, 15.0).tolist() == [1.0, 1.0, 1.0, 0.0]  # no window: minutes only


def test_bad_file_errors_name_file_column_and_row(tmp_path):
    df = frame([1.0, 2.0, 3.0])
    df.loc[2, "propensity"] = 1.5
    path = tmp_path / "bad.parquet"
    df.to_parquet(path)
    with pytest.raises(DatasetError, match=r"bad\.parquet: column propensity, row 2"):
        read_logged(path)
    df.drop(columns=["max_minutes"]).to_parquet(path)
    with pytest.raises(DatasetError, match=r"bad\.parquet: missing column\(s\) max_minutes"):
        read_logged(path)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DatasetError, match="junk.parquet: not a readable parquet"):
        read_logged(tmp_path / "junk.parquet")


def test_wrong_feature_length_names_row():
    df = frame([1.0, 2.0])
    df.at[1, "features"] = np.zeros(3, np.float32)
    with pytest.raises(DatasetError, match="column features, row 1"):
        label(df, 15.0, SPACE, source="x.parquet")


def test_time_split_validates_on_the_newest():
    rng = np.random.default_rng(0)
    t = rng.permutation(1000)
    tr, va = time_split(t, 0.2)
    assert len(va) == 200 and len(tr) == 800
    assert t[tr].max() < t[va].min()


def test_ips_weights_inverse_propensity_clipped_mean_one():
    df = frame([0.0] * 4)
    df["propensity"] = [0.5, 0.25, 0.1, 0.01]
    data = label(df, 15.0, SPACE)
    w = ips_weights_of(data)
    assert w.mean() == pytest.approx(1.0)
    assert w[1] / w[0] == pytest.approx(2.0) and w[3] / w[0] == pytest.approx(50.0)
    wc = ips_weights_of(data, clip=20.0)
    assert wc[3] / wc[0] == pytest.approx(10.0)


def test_refeaturize_rebuilds_logged_features(uniform_log, index, lookup):
    log = uniform_log.head(200).copy()
    stripped = log.copy()
    stripped["features"] = [np.zeros(0, np.float32)] * len(stripped)
    stripped.loc[stripped.index[:50], "feature_schema"] = "old-schema"
    rebuilt = refeaturize(stripped, index, lookup)
    assert (rebuilt["feature_schema"] == index.space.schema_id).all()
    np.testing.assert_allclose(np.stack(rebuilt["features"]), np.stack(log["features"]), rtol=1e-6)


def test_rows_of_an_older_catalogs_space_are_rebuilt_in_the_new_one():
    """A new genre and a new country since the log was written: known spaces translate, unknown stay refused."""
    import dataclasses

    from tiny import NOW, make_catalog, make_context, make_member

    from keyart.core.featurize import CatalogIndex, build_matrix
    from keyart_training.data.dataset import align_features

    old_index = CatalogIndex.build(make_catalog())
    grown = make_catalog()
    grown.titles["t5"] = dataclasses.replace(grown.titles["t5"], genres=("western",))
    grown.vocabularies = {"country": ("AR", "BR", "GB", "US"), "language": ("en-US", "pt-BR")}
    new_index = CatalogIndex.build(grown)
    assert new_index.space != old_index.space
    member, ctx = make_member(), make_context()
    images = ["t0-i1", "t1-i2", "t5-i0"]
    rows = []
    for k, image_id in enumerate(images):
        title = image_id.split("-")[0]
        x = build_matrix(old_index, member, ctx, [title], np.array([old_index.image_row[image_id]]), np.zeros(1, int))
        rows.append({"decision_id": f"d{k}", "member_id": "m1", "title_id": title, "image_id": image_id,
                     "propensity": 0.2, "policy": "uniform", "decided_at": NOW, "max_minutes": 0.0,
                     "feature_schema": old_index.space.schema_id, "features": x[0],
                     "top_actors": list(member.actor_affinity),
                     "top_actor_weights": list(member.actor_affinity.values())})
    log = pd.DataFrame(rows)
    with pytest.raises(DatasetError, match="feature_schema, row 0"):
        label(log, 15.0, new_index.space)  # an unknown space is refused by name
    aligned = align_features(log, new_index, {old_index.space.schema_id: old_index.space})
    data = label(aligned, 15.0, new_index.space)
    assert data.x.shape == (3, len(new_index.space.names))
    col = new_index.space.index
    for k, image_id in enumerate(images):
        title = image_id.split("-")[0]
        direct = build_matrix(new_index, member, ctx, [title], np.array([new_index.image_row[image_id]]),
                              np.zeros(1, int))[0]
        assert np.isnan(data.x[k, col["genre_western"]])  # the old log could not know it: unknown
        same = [j for j, name in enumerate(new_index.space.names)
                if name not in ("genre_western", "title_genre_affinity", "tone_affinity")]
        np.testing.assert_allclose(data.x[k, same], direct[same], rtol=1e-6)
        assert data.x[k, col["country"]] == new_index.space.code("country", "US") == 3
