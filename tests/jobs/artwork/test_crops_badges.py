"""Crops keep the focal point and whole faces; badges never cover faces or text."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyart.domain import DEVICES
from keyart.jobs.artwork.analysis import ImageAnalysis
from keyart.jobs.artwork.badges import ANCHORS, place_badge
from keyart.jobs.artwork.crops import (
    DEVICE_RATIO,
    RATIOS,
    Crop,
    Ratio,
    crop_for,
    crop_variants,
    crops_for,
    ratio_for_device,
    variant_id,
)

Box = tuple[int, int, int, int]


def fake(
    width: int,
    height: int,
    faces: tuple[Box, ...] = (),
    focal: tuple[float, float] | None = None,
    text: tuple[Box, ...] = (),
) -> ImageAnalysis:
    if focal is None:
        focal = (
            (faces[0][0] + faces[0][2] / 2, faces[0][1] + faces[0][3] / 2)
            if faces
            else (width / 2, height / 2)
        )
    return ImageAnalysis(
        path="fake.jpg",
        format="JPEG",
        width=width,
        height=height,
        decoded_width=width,
        decoded_height=height,
        work_width=width,
        work_height=height,
        faces=faces,
        face_area=(faces[0][2] * faces[0][3] / (width * height)) if faces else 0.0,
        focal_x=focal[0],
        focal_y=focal[1],
        focal_source="face" if faces else "saliency",
        brightness=0.5,
        warmth=0.0,
        contrast=0.5,
        palette="mono",
        text_present=bool(text),
        text_boxes=text,
    )


def inside(box: Box, c: Crop) -> bool:
    x, y, w, h = box
    return c.x <= x and c.y <= y and x + w <= c.x + c.w and y + h <= c.y + c.h


def outside(box: Box, c: Crop) -> bool:
    x, y, w, h = box
    return x + w <= c.x or x >= c.x + c.w or y + h <= c.y or y >= c.y + c.h


def overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def check_geometry(a: ImageAnalysis, c: Crop, r: Ratio) -> None:
    assert 0 <= c.x and 0 <= c.y and c.x + c.w <= a.width and c.y + c.h <= a.height
    assert c.w == a.width or c.h == a.height  # largest: spans one full axis
    assert abs(c.w / c.h - r.value) <= 1.0 / min(c.w, c.h) + 1e-9
    assert c.contains(a.focal_x, a.focal_y)


@pytest.mark.parametrize("name", list(RATIOS))
def test_astronaut_crops_keep_the_face_whole(analyses: dict[str, ImageAnalysis], name: str) -> None:
    a = analyses["astronaut"]
    c = crop_for(a, name)
    check_geometry(a, c, RATIOS[name])
    assert not c.cuts_face and inside(a.faces[0], c)


@pytest.mark.parametrize("photo", ["coffee", "rocket", "chelsea"])
def test_faceless_crops_keep_the_focal_point(
    analyses: dict[str, ImageAnalysis], photo: str
) -> None:
    a = analyses[photo]
    for name, c in crops_for(a).items():
        check_geometry(a, c, RATIOS[name])
        assert not c.cuts_face


def test_crop_centres_focal_when_free() -> None:
    a = fake(1920, 1080, faces=((900, 300, 120, 120),))
    c = crop_for(a, "2:3")  # 720 x 1080, face centre x = 960
    assert (c.w, c.h) == (720, 1080) and c.x == 960 - 360 and not c.cuts_face


def test_crop_slides_to_avoid_cutting_a_second_face() -> None:
    # main face centred at x=700; a second face at 960..1100 would be cut by the centred crop
    a = fake(1920, 1080, faces=((640, 300, 120, 120), (960, 320, 140, 140)))
    c = crop_for(a, "2:3")  # 720 wide; centred would be 340..1060 which cuts face 2
    assert not c.cuts_face
    assert all(inside(f, c) or outside(f, c) for f in a.faces)
    assert c.contains(a.focal_x, a.focal_y)


def test_unavoidable_cut_is_flagged() -> None:
    # faces side by side spanning more than a 1:1 crop of a 3:1 image can hold whole
    faces = tuple((x, 100, 150, 150) for x in range(0, 1500, 140))
    a = fake(1500, 500, faces=faces, focal=(750, 175))
    c = crop_for(a, "1:1")
    assert c.cuts_face and c.contains(750, 175)


@settings(max_examples=150, deadline=None)
@given(
    width=st.integers(50, 900),
    height=st.integers(50, 900),
    raw_faces=st.lists(
        st.tuples(st.floats(0, 0.9), st.floats(0, 0.9), st.floats(0.02, 0.3)), max_size=4
    ),
    fpos=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    ratio=st.sampled_from(list(RATIOS.values())),
)
def test_crop_properties(
    width: int,
    height: int,
    raw_faces: list[tuple[float, float, float]],
    fpos: tuple[float, float],
    ratio: Ratio,
) -> None:
    faces = []
    for fx, fy, fs in raw_faces:
        s = max(2, int(fs * min(width, height)))
        faces.append((min(int(fx * width), width - s), min(int(fy * height), height - s), s, s))
    a = fake(width, height, faces=tuple(faces), focal=(fpos[0] * width, fpos[1] * height))
    c = crop_for(a, ratio)
    check_geometry(a, c, ratio)
    clean = all(inside(f, c) or outside(f, c) for f in faces)
    assert clean == (not c.cuts_face)
    if c.cuts_face:  # brute force: no position with the focal point inside avoids a cut
        horiz = c.w < width
        for o in range((width - c.w if horiz else height - c.h) + 1):
            alt = dataclasses.replace(c, x=o if horiz else 0, y=0 if horiz else o)
            if alt.contains(a.focal_x, a.focal_y):
                assert not all(inside(f, alt) or outside(f, alt) for f in faces)


def test_variants_and_devices() -> None:
    a = fake(1600, 900)
    vs = crop_variants(a, "i000042", "l000007")
    assert [v.ratio for v in vs] == list(RATIOS)
    assert len({v.variant_id for v in vs}) == len(vs)
    assert all(v.lineage_id == "l000007" and v.source_image_id == "i000042" for v in vs)
    assert (
        variant_id("i000042", "16:9")
        == variant_id("i000042", Ratio.parse("16x9"))
        == "i000042-16x9"
    )
    assert {d: ratio_for_device(d).name for d in DEVICES} == DEVICE_RATIO
    assert ratio_for_device("TV").name == "16:9" and ratio_for_device("MOBILE").name == "2:3"
    assert ratio_for_device("TABLET").name == "4:3" and ratio_for_device("WEB").name == "16:9"
    with pytest.raises(ValueError):
        ratio_for_device("FRIDGE")
    with pytest.raises(ValueError):
        Ratio.parse("wide")
    custom = crops_for(a, {"21:9": Ratio.parse("21:9")})
    assert list(custom) == ["21:9"] and custom["21:9"].w == 1600


# ---------------------------------------------------------------------------
# badges


@pytest.mark.parametrize("name", list(RATIOS))
def test_badge_never_covers_the_astronaut_face(
    analyses: dict[str, ImageAnalysis], name: str
) -> None:
    a = analyses["astronaut"]
    c = crop_for(a, name)
    for anchors in (ANCHORS, ("top-center", "bottom-center"), ("top-left", "top-right")):
        b = place_badge(c, a, (0.35, 0.12), anchors)
        if b.ok:
            assert inside(b.box, c)
            assert not any(overlaps(b.box, f) for f in a.faces)
            assert not any(overlaps(b.box, t) for t in a.text_boxes)
        else:
            assert "face" in b.reason or "text" in b.reason
    assert place_badge(c, a, (0.35, 0.12)).ok  # with every anchor some corner is free


def test_badge_skips_anchors_over_text_and_faces() -> None:
    a = fake(1000, 1000, faces=((20, 20, 200, 200),), text=((780, 30, 200, 80),))
    c = Crop(0, 0, 1000, 1000, False)
    b = place_badge(c, a, (0.2, 0.1), ("top-left", "top-right", "bottom-left"))
    assert b.ok and b.anchor == "bottom-left"
    assert "face" in b.blocked["top-left"] and "text" in b.blocked["top-right"]
    # text may be ignored on request
    b2 = place_badge(c, a, (0.2, 0.1), ("top-right",), avoid_text=False)
    assert b2.ok and b2.anchor == "top-right"


def test_badge_refuses_rather_than_covering() -> None:
    a = fake(1000, 600, faces=((0, 0, 1000, 250),))  # a face band across the top
    c = Crop(0, 0, 1000, 600, False)
    b = place_badge(c, a, (0.25, 0.1), ("top-left", "top-right", "top-center"))
    assert not b.ok and b.w == 250 and "top-center: face 0" in b.reason
    big = place_badge(c, a, (1200, 40), units="px")
    assert not big.ok and "does not fit" in big.reason
    px = place_badge(c, a, (200, 50), ("bottom-right",), units="px", margin=0.0)
    assert px.ok and px.box == (800, 550, 200, 50)
    with pytest.raises(ValueError):
        place_badge(c, a, (0.2, 0.1), ("middle",))
