"""The service's request and response bodies (pydantic; they are the OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from xmr.modality import DEFAULT_K

#: a filter on a gallery field: one value (equality) or a list (membership)
FilterValue = str | list[str]


class SearchRequest(BaseModel):
    """One query: exactly one of ``text``, ``image``, ``image_id``, ``vector`` — or ``image`` (or
    ``image_id``) plus ``text`` for a composed query (the image changed by the text)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="a text query, or the modification of a composed query",
                             max_length=2000)
    image: str | None = Field(None, description="an image, base64 (standard alphabet; a data: URL prefix is "
                                                "accepted)")
    image_id: str | None = Field(None, description="search by a gallery item (its id)", max_length=2000)
    vector: list[float] | None = Field(None, description="a joint-space vector of the run's size")
    target: Literal["images", "texts"] = "images"
    k: int = Field(DEFAULT_K, ge=1, description="results to return (at most the service's k_max)")
    offset: int = Field(0, ge=0, description="results to skip (paging)")
    rerank: str | None = Field(None, description="a re-ranking method the index was built with")
    filters: dict[str, FilterValue] = Field(default_factory=dict,
                                            description="gallery field -> value or list of values (e.g. style)")


class Result(BaseModel):
    id: str
    score: float
    rank: int
    texts: list[str]
    image_url: str | None
    fields: dict[str, str | None]


class SearchResponse(BaseModel):
    results: list[Result]
    took_ms: float
    model_id: str
    query: str = Field(description="the kind of query answered: text, image, image_id, vector, composed")
    target: str
    total: int = Field(description="gallery entries that pass the filters")


class Item(BaseModel):
    id: str
    texts: list[str]
    image_url: str
    fields: dict[str, str | None]


class ErrorBody(BaseModel):
    error: str
    detail: list[dict[str, object]] | None = None


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model_id: str
    task: str
    n_images: int
    n_texts: int
    startup_seconds: float


class Info(BaseModel):
    """What the page needs to draw itself: the fields it can filter on and their values, the
    re-rankers built, whether texts are indexed, whether composed queries are learnt."""

    run: str
    task: str
    model_id: str
    n_images: int
    n_texts: int
    fields: dict[str, list[str]]
    rerankers: list[str]
    text_encoder: str = Field(description="what encodes query texts (an encoder id)")
    composed: str = Field(description="how image + text queries are answered: 'learnt' (a composed run) or "
                                      "'add' (the sum of the two joint-space embeddings)")
    k_max: int
