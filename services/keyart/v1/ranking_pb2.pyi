import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeviceType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_TYPE_UNSPECIFIED: _ClassVar[DeviceType]
    DEVICE_TYPE_TV: _ClassVar[DeviceType]
    DEVICE_TYPE_WEB: _ClassVar[DeviceType]
    DEVICE_TYPE_MOBILE: _ClassVar[DeviceType]
    DEVICE_TYPE_TABLET: _ClassVar[DeviceType]

class OutcomeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_KIND_UNSPECIFIED: _ClassVar[OutcomeKind]
    OUTCOME_KIND_IMPRESSION_SEEN: _ClassVar[OutcomeKind]
    OUTCOME_KIND_PLAY_STARTED: _ClassVar[OutcomeKind]
    OUTCOME_KIND_PLAYBACK_PROGRESS: _ClassVar[OutcomeKind]
DEVICE_TYPE_UNSPECIFIED: DeviceType
DEVICE_TYPE_TV: DeviceType
DEVICE_TYPE_WEB: DeviceType
DEVICE_TYPE_MOBILE: DeviceType
DEVICE_TYPE_TABLET: DeviceType
OUTCOME_KIND_UNSPECIFIED: OutcomeKind
OUTCOME_KIND_IMPRESSION_SEEN: OutcomeKind
OUTCOME_KIND_PLAY_STARTED: OutcomeKind
OUTCOME_KIND_PLAYBACK_PROGRESS: OutcomeKind

class RequestContext(_message.Message):
    __slots__ = ("country", "language", "device", "surface", "client_time")
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TIME_FIELD_NUMBER: _ClassVar[int]
    country: str
    language: str
    device: DeviceType
    surface: str
    client_time: _timestamp_pb2.Timestamp
    def __init__(self, country: _Optional[str] = ..., language: _Optional[str] = ..., device: _Optional[_Union[DeviceType, str]] = ..., surface: _Optional[str] = ..., client_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TitleCandidates(_message.Message):
    __slots__ = ("title_id", "candidate_image_ids")
    TITLE_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_IMAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    title_id: str
    candidate_image_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, title_id: _Optional[str] = ..., candidate_image_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RankArtworkRequest(_message.Message):
    __slots__ = ("request_id", "member_id", "context", "titles")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TITLES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    member_id: str
    context: RequestContext
    titles: _containers.RepeatedCompositeFieldContainer[TitleCandidates]
    def __init__(self, request_id: _Optional[str] = ..., member_id: _Optional[str] = ..., context: _Optional[_Union[RequestContext, _Mapping]] = ..., titles: _Optional[_Iterable[_Union[TitleCandidates, _Mapping]]] = ...) -> None: ...

class ArtworkSelection(_message.Message):
    __slots__ = ("title_id", "image_id", "lineage_id", "propensity", "score", "explored", "decision_id", "fallback_reason", "crop")
    TITLE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_ID_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    EXPLORED_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    title_id: str
    image_id: str
    lineage_id: str
    propensity: float
    score: float
    explored: bool
    decision_id: str
    fallback_reason: str
    crop: ArtworkCrop
    def __init__(self, title_id: _Optional[str] = ..., image_id: _Optional[str] = ..., lineage_id: _Optional[str] = ..., propensity: _Optional[float] = ..., score: _Optional[float] = ..., explored: _Optional[bool] = ..., decision_id: _Optional[str] = ..., fallback_reason: _Optional[str] = ..., crop: _Optional[_Union[ArtworkCrop, _Mapping]] = ...) -> None: ...

class ArtworkCrop(_message.Message):
    __slots__ = ("variant_image_id", "aspect_ratio", "x", "y", "width", "height", "cuts_face")
    VARIANT_IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ASPECT_RATIO_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CUTS_FACE_FIELD_NUMBER: _ClassVar[int]
    variant_image_id: str
    aspect_ratio: str
    x: int
    y: int
    width: int
    height: int
    cuts_face: bool
    def __init__(self, variant_image_id: _Optional[str] = ..., aspect_ratio: _Optional[str] = ..., x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., cuts_face: _Optional[bool] = ...) -> None: ...

class RankArtworkResponse(_message.Message):
    __slots__ = ("selections", "model_version", "policy")
    SELECTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    selections: _containers.RepeatedCompositeFieldContainer[ArtworkSelection]
    model_version: str
    policy: str
    def __init__(self, selections: _Optional[_Iterable[_Union[ArtworkSelection, _Mapping]]] = ..., model_version: _Optional[str] = ..., policy: _Optional[str] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ("decision_id", "member_id", "title_id", "image_id", "kind", "minutes_played", "event_time")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MINUTES_PLAYED_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    member_id: str
    title_id: str
    image_id: str
    kind: OutcomeKind
    minutes_played: float
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, decision_id: _Optional[str] = ..., member_id: _Optional[str] = ..., title_id: _Optional[str] = ..., image_id: _Optional[str] = ..., kind: _Optional[_Union[OutcomeKind, str]] = ..., minutes_played: _Optional[float] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReportOutcomeRequest(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[Outcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[Outcome, _Mapping]]] = ...) -> None: ...

class ReportOutcomeResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...
