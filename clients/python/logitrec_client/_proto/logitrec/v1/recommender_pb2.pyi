from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Event(_message.Message):
    __slots__ = ("item_id", "event_type", "timestamp")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    event_type: str
    timestamp: int
    def __init__(self, item_id: _Optional[str] = ..., event_type: _Optional[str] = ..., timestamp: _Optional[int] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("history", "user_id", "context", "k", "exclude_seen", "exclude_item_ids", "allowed_item_ids", "model", "model_version", "explain", "request_id", "rerank", "filters", "explain_contributors")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    history: _containers.RepeatedCompositeFieldContainer[Event]
    user_id: str
    context: _containers.ScalarMap[str, str]
    k: int
    exclude_seen: bool
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    allowed_item_ids: _containers.RepeatedScalarFieldContainer[str]
    model: str
    model_version: int
    explain: bool
    request_id: str
    rerank: Rerank
    filters: _containers.RepeatedCompositeFieldContainer[MetadataFilter]
    explain_contributors: int
    def __init__(self, history: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., user_id: _Optional[str] = ..., context: _Optional[_Mapping[str, str]] = ..., k: _Optional[int] = ..., exclude_seen: bool = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., allowed_item_ids: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ..., explain: bool = ..., request_id: _Optional[str] = ..., rerank: _Optional[_Union[Rerank, _Mapping]] = ..., filters: _Optional[_Iterable[_Union[MetadataFilter, _Mapping]]] = ..., explain_contributors: _Optional[int] = ...) -> None: ...

class Rerank(_message.Message):
    __slots__ = ("popularity_beta", "mmr_lambda", "category_cap", "cap_field", "calibration")
    POPULARITY_BETA_FIELD_NUMBER: _ClassVar[int]
    MMR_LAMBDA_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_CAP_FIELD_NUMBER: _ClassVar[int]
    CAP_FIELD_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    popularity_beta: float
    mmr_lambda: float
    category_cap: int
    cap_field: str
    calibration: float
    def __init__(self, popularity_beta: _Optional[float] = ..., mmr_lambda: _Optional[float] = ..., category_cap: _Optional[int] = ..., cap_field: _Optional[str] = ..., calibration: _Optional[float] = ...) -> None: ...

class MetadataFilter(_message.Message):
    __slots__ = ("field", "any_of", "at_least", "at_most")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    ANY_OF_FIELD_NUMBER: _ClassVar[int]
    AT_LEAST_FIELD_NUMBER: _ClassVar[int]
    AT_MOST_FIELD_NUMBER: _ClassVar[int]
    field: str
    any_of: _containers.RepeatedScalarFieldContainer[str]
    at_least: float
    at_most: float
    def __init__(self, field: _Optional[str] = ..., any_of: _Optional[_Iterable[str]] = ..., at_least: _Optional[float] = ..., at_most: _Optional[float] = ...) -> None: ...

class Contribution(_message.Message):
    __slots__ = ("item_id", "title", "context_feature", "context_value", "logit_delta", "history_position")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FEATURE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_VALUE_FIELD_NUMBER: _ClassVar[int]
    LOGIT_DELTA_FIELD_NUMBER: _ClassVar[int]
    HISTORY_POSITION_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    context_feature: str
    context_value: str
    logit_delta: float
    history_position: int
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ..., context_feature: _Optional[str] = ..., context_value: _Optional[str] = ..., logit_delta: _Optional[float] = ..., history_position: _Optional[int] = ...) -> None: ...

class RecommendedItem(_message.Message):
    __slots__ = ("item_id", "logit", "probability", "rank", "title", "contributions")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    LOGIT_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    logit: float
    probability: float
    rank: int
    title: str
    contributions: _containers.RepeatedCompositeFieldContainer[Contribution]
    def __init__(self, item_id: _Optional[str] = ..., logit: _Optional[float] = ..., probability: _Optional[float] = ..., rank: _Optional[int] = ..., title: _Optional[str] = ..., contributions: _Optional[_Iterable[_Union[Contribution, _Mapping]]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queue_seconds", "encode_seconds", "retrieve_seconds", "score_seconds", "total_seconds", "rerank_seconds", "explain_seconds")
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETRIEVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SCORE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RERANK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    queue_seconds: float
    encode_seconds: float
    retrieve_seconds: float
    score_seconds: float
    total_seconds: float
    rerank_seconds: float
    explain_seconds: float
    def __init__(self, queue_seconds: _Optional[float] = ..., encode_seconds: _Optional[float] = ..., retrieve_seconds: _Optional[float] = ..., score_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ..., rerank_seconds: _Optional[float] = ..., explain_seconds: _Optional[float] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "model", "model_version", "unknown_item_ids", "popularity_fallback", "history_truncated_to", "timings", "request_id", "filters_widened", "eligible_items")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    POPULARITY_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    HISTORY_TRUNCATED_TO_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FILTERS_WIDENED_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RecommendedItem]
    model: str
    model_version: int
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[str]
    popularity_fallback: bool
    history_truncated_to: int
    timings: Timings
    request_id: str
    filters_widened: bool
    eligible_items: int
    def __init__(self, items: _Optional[_Iterable[_Union[RecommendedItem, _Mapping]]] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ..., unknown_item_ids: _Optional[_Iterable[str]] = ..., popularity_fallback: bool = ..., history_truncated_to: _Optional[int] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., request_id: _Optional[str] = ..., filters_widened: bool = ..., eligible_items: _Optional[int] = ...) -> None: ...

class RecommendBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RecommendRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[RecommendRequest, _Mapping]]] = ...) -> None: ...

class RecommendBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[RecommendResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[RecommendResponse, _Mapping]]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("history", "user_id", "context", "item_ids", "model", "model_version", "request_id")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    history: _containers.RepeatedCompositeFieldContainer[Event]
    user_id: str
    context: _containers.ScalarMap[str, str]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    model: str
    model_version: int
    request_id: str
    def __init__(self, history: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., user_id: _Optional[str] = ..., context: _Optional[_Mapping[str, str]] = ..., item_ids: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("item_id", "logit")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    LOGIT_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    logit: float
    def __init__(self, item_id: _Optional[str] = ..., logit: _Optional[float] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("items", "model", "model_version", "unknown_item_ids", "unknown_scored_item_ids", "timings", "request_id")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_SCORED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    model: str
    model_version: int
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[str]
    unknown_scored_item_ids: _containers.RepeatedScalarFieldContainer[str]
    timings: Timings
    request_id: str
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ..., unknown_item_ids: _Optional[_Iterable[str]] = ..., unknown_scored_item_ids: _Optional[_Iterable[str]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("model", "model_version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: int
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model", "model_version", "loaded_versions", "num_items", "hidden_size", "max_length", "context_features", "index_type", "backend", "candidate_count", "metadata_fields")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOADED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NUM_ITEMS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FEATURES_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: int
    loaded_versions: _containers.RepeatedScalarFieldContainer[int]
    num_items: int
    hidden_size: int
    max_length: int
    context_features: _containers.RepeatedScalarFieldContainer[str]
    index_type: str
    backend: str
    candidate_count: int
    metadata_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[int] = ..., loaded_versions: _Optional[_Iterable[int]] = ..., num_items: _Optional[int] = ..., hidden_size: _Optional[int] = ..., max_length: _Optional[int] = ..., context_features: _Optional[_Iterable[str]] = ..., index_type: _Optional[str] = ..., backend: _Optional[str] = ..., candidate_count: _Optional[int] = ..., metadata_fields: _Optional[_Iterable[str]] = ...) -> None: ...
