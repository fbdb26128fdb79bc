"""Request and response bodies of the HTTP API (they also make the OpenAPI schema at /openapi.json)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StringConstraints

K_MAX = 1000  # largest k a request may ask for (also capped by the catalogue size)
MAX_HISTORY = 10_000  # ids per request history; longer input is refused (the model reads max_len of them)
MAX_CANDIDATES = 10_000
MAX_EVENTS = 1000  # items per /events request

Text = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=256)]
ItemId = Annotated[Text | StrictInt, AfterValidator(str)]  # raw item id as in the dataset; 1193 == "1193"
Mode = Literal["static", "dynamic", "cki"]


class RecommendRequest(BaseModel):
    """A user's next items. The history read is the stored events of user_id (if given), then `history`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: Text | None = Field(None, description="use this user's stored events (POST /events) as history")
    history: list[ItemId] = Field([], max_length=MAX_HISTORY,
                                  description="raw item ids, most recent last, read after the stored events")
    k: int = Field(10, ge=1, le=K_MAX, description="how many items to return (at most the catalogue size)")
    exclude_seen: bool = Field(True, description="never recommend an item of the history read")
    mode: Mode | None = Field(None, description="static head, generated head, or their online CKI splice; "
                                                "default: cki for a dynamic bundle, static otherwise")
    candidates: list[ItemId] | None = Field(None, min_length=1, max_length=MAX_CANDIDATES,
                                            description="rank only these items (default: the whole catalogue)")


class ScoredItem(BaseModel):
    item: str
    score: float


class RecommendResponse(BaseModel):
    items: list[ScoredItem] = Field(description="best first; fewer than k when candidates or exclusion run out")
    mode: Literal["static", "dynamic", "cki", "popularity"] = Field(description="what produced the scores")
    fallback: bool = Field(description="true when no known item was left in the history: most popular items")
    history_used: int = Field(description="known items the model read (at most the model's max_len)")
    truncated: bool = Field(description="the history had more known items than max_len; the oldest were cut")
    stored_events: int = Field(description="items taken from the user's stored events")
    unknown_items: list[str] = Field(description="history ids the bundle does not know, dropped")
    unknown_candidates: list[str] = Field(description="candidate ids the bundle does not know, dropped")


class EventsRequest(BaseModel):
    """Interactions of one user, oldest first, appended after the user's stored events."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: Text
    items: list[ItemId] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsResponse(BaseModel):
    user_id: str
    stored: int = Field(description="events written and committed to disk before this answer")
    unknown_items: list[str] = Field(description="stored too, but the bundle does not know them (dropped when read)")


class Health(BaseModel):
    status: Literal["ok"]
    model: str
    modes: list[str]
    default_mode: str
    n_items: int
    max_len: int
    bundle_sha256: str = Field(description="sha256 of the bundle's manifest.json")
