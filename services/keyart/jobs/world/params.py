"""Effect sizes of the synthetic world (the hidden ground truth of artwork clicks).

All effects are additive on the logit of the *quality-play* probability unless the
field says otherwise. A quality play is a play of at least `quality_minutes` minutes.
The effects encode what public write-ups about artwork personalization report:
expressive (complex) faces beat neutral ones, villains help, more than three people
hurts (more so on small screens), tone matching the member's genre taste helps, a
favourite actor in the image helps, countries have their own visual preferences,
and clickbait raises play starts without raising quality plays.

Typical magnitudes: a logit effect of 0.4 near a 7% base rate multiplies the
probability by about 1.45.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class WorldParams(BaseModel):
    """Ground-truth parameters of the synthetic world; logit scale unless noted."""

    model_config = ConfigDict(extra="forbid")

    # --- Outcome model -------------------------------------------------------------
    base_logit: float = Field(
        -2.9, description="Logit of a quality play for an average member, title and image."
    )
    quality_minutes: float = Field(
        15.0, gt=0, description="Minutes watched from which a play counts as a quality play."
    )
    start_offset: float = Field(
        0.9,
        ge=0,
        description="Extra logit of a play start over a quality play (starts >= quality plays).",
    )
    title_appeal_sd: float = Field(
        0.6, ge=0, description="Std-dev of each title's base appeal (title-level, not artwork)."
    )
    member_bias_sd: float = Field(
        0.4, ge=0, description="Std-dev of each member's latent propensity to play anything."
    )
    title_genre_match_effect: float = Field(
        1.2,
        description="Effect of the member's latent taste for the title's genres "
        "(share of taste on the title's genres, relative to the member's top genre).",
    )
    device_offsets: dict[str, float] = Field(
        default_factory=lambda: {"TV": 0.2, "WEB": 0.0, "MOBILE": -0.2, "TABLET": -0.1},
        description="Logit offset per device (artwork independent).",
    )

    # --- Artwork effects -----------------------------------------------------------
    face_effect: float = Field(0.35, description="Image shows at least one face.")
    face_area_effect: float = Field(
        0.4, description="Per unit of face area (largest face share of the frame, 0..1)."
    )
    expression_effects: dict[str, float] = Field(
        default_factory=lambda: {"none": 0.0, "neutral": 0.0, "happy": 0.15, "complex": 0.5},
        description="Expression of the main face; complex/ambiguous beats happy beats neutral.",
    )
    villain_effect: float = Field(0.4, description="The title's villain is shown.")
    crowd_threshold: int = Field(3, ge=1, description="group_size above this is a crowd.")
    crowd_penalty: float = Field(-0.45, description="Crowd (group_size > crowd_threshold).")
    crowd_small_screen_penalty: float = Field(
        -0.55, description="Extra crowd penalty on small screens (MOBILE, TABLET)."
    )
    small_screen_devices: tuple[str, ...] = Field(
        ("MOBILE", "TABLET"), description="Devices that get the small-screen penalties."
    )
    text_small_screen_effect: float = Field(
        -0.15, description="Text on the image, on a small screen (unreadable clutter)."
    )
    tone_affinity_effect: float = Field(
        1.0,
        description="Image tone x member latent genre taste: effect times "
        "taste[tone] / max(taste), so a tone of the member's top genre gets the full effect.",
    )
    tone_affinity_center: float = Field(
        0.35, description="Taste ratio subtracted before applying tone_affinity_effect."
    )
    favourite_actor_effect: float = Field(
        0.7, description="At least one of the member's latent favourite actors is shown."
    )
    country_style_effects: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {"JP": {"title_card": 0.6, "closeup": -0.1}, "KR": {"title_card": 0.3}},
        description="country -> style -> effect (JP likes illustrated title cards).",
    )
    country_brightness_effects: dict[str, float] = Field(
        default_factory=lambda: {"JP": 0.8},
        description="country -> effect per unit of (brightness - 0.5).",
    )
    country_warmth_effects: dict[str, float] = Field(
        default_factory=lambda: {"BR": 0.6, "MX": 0.3},
        description="country -> effect per unit of warmth (-1 cool .. 1 warm).",
    )
    clickbait_start_effect: float = Field(
        0.9, description="Clickbait image: added to the play-START logit only."
    )
    clickbait_quality_effect: float = Field(
        -0.1, description="Clickbait image: added to the quality-play logit (no gain, slight loss)."
    )
    known_title_artwork_scale: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Artwork effects are multiplied by this when the member already "
        "watched or started the title (the image matters less for a known title).",
    )
    known_title_offset: float = Field(
        -0.3, description="Logit offset for a title the member already knows (less novelty)."
    )

    # --- Catalog generation --------------------------------------------------------
    pool_min: int = Field(4, ge=1, description="Smallest artwork pool per title.")
    pool_max: int = Field(24, ge=1, le=30, description="Largest artwork pool per title.")
    variant_share: float = Field(
        0.3, ge=0, le=1, description="Share of images that are variants of an earlier source."
    )
    clickbait_share: float = Field(0.08, ge=0, le=1, description="Share of clickbait images.")
    villain_title_share: float = Field(0.45, ge=0, le=1, description="Share of titles with a villain.")
    actors_per_title: float = Field(3.0, gt=0, description="Size of the actor pool per title.")

    # --- Viewing history -----------------------------------------------------------
    history_days: int = Field(180, ge=14, description="Days of viewing history before `now`.")
    views_per_member_mean: float = Field(
        24.0, gt=0, description="Mean number of viewing events per member over the history."
    )
    genre_concentration: float = Field(
        0.35, gt=0, description="Dirichlet alpha of latent genre taste (lower: more focused)."
    )
    viewing_genre_effect: float = Field(
        3.0, description="Logit weight of genre taste when the member picks a title to watch."
    )
    viewing_fav_actor_effect: float = Field(
        1.2, description="Logit weight of a favourite actor in the cast when picking a title."
    )
    favourite_actors_max: int = Field(3, ge=0, description="Latent favourite actors per member (1..max).")
