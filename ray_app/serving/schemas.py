"""The HTTP API's contract: the record a client sends, the answers it gets, every error body,
and how pydantic's validation errors are turned into lines a person can act on."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, create_model

from ray_app.core.schema import (
    CATEGORIES,
    FEATURE_COLUMNS,
    NULLABLE_COLUMNS,
    NUMERIC_BOUNDS,
    NUMERIC_COLUMNS,
)


def _record_model() -> type[BaseModel]:
    """One record: typed numbers with ranges; categories from the UCI schema (adult.names).

    Unknown categories are rejected (422) rather than mapped to the OOV bucket: a typo would
    otherwise score as 'unknown' without anyone noticing. A category that is in the schema but
    was not seen in training still goes to the OOV bucket. Missing values (null or '?') only
    where the UCI data has them: workclass, occupation, native_country.
    """
    fields: dict[str, Any] = {}
    for column in FEATURE_COLUMNS:
        alias = AliasChoices(column, column.replace("_", "-"))
        if column in NUMERIC_COLUMNS:
            low, high = NUMERIC_BOUNDS[column]
            kind = Annotated[float, Field(ge=low, le=high, strict=True, validation_alias=alias)]
            fields[column] = (kind, ...)
        else:
            values: tuple[str, ...] = CATEGORIES[column]
            if column in NULLABLE_COLUMNS:
                nullable = Literal[(*values, "?")] | None  # type: ignore[valid-type]
                fields[column] = (Annotated[nullable, Field(validation_alias=alias)], None)
            else:
                required = Literal[values]  # type: ignore[valid-type]
                fields[column] = (Annotated[required, Field(validation_alias=alias)], ...)
    return create_model("Record", __config__=ConfigDict(extra="forbid"), **fields)


Record = _record_model()


class Prediction(BaseModel):
    request_id: str = Field(
        description="`<X-Request-ID or a generated id>-<record index>`: "
        "the id /feedback takes this record's label for"
    )
    probability: float = Field(description="P(income > 50K)")
    spread: float = Field(
        description="how much the deep ensemble's members disagree on this record: the "
        "standard deviation of their P(income > 50K) (0 for a single model)"
    )
    label: Literal["<=50K", ">50K"] | None = Field(
        description="'>50K' when probability >= 0.5; null when the serve args set "
        "abstain_above and spread is above it (see abstained)"
    )
    model_version: str
    abstained: str | None = Field(None, description="why label is null (only then present)")


class PredictResponse(BaseModel):
    model_version: str
    predictions: list[Prediction]


class Label(BaseModel):
    """The true income of a record scored earlier, named by its prediction's request_id."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    income: Literal["<=50K", ">50K"]


class FeedbackResponse(BaseModel):
    accepted: int = Field(description="labels appended to the label log")


class ErrorBody(BaseModel):
    detail: list[str] = Field(description="what was wrong, one line each")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: 'body', then record index and field")
    msg: str
    type: str


class ValidationErrorBody(ErrorBody):
    """422: the same `detail` lines as every error, plus pydantic's structured errors."""

    errors: list[FieldError]


class Health(BaseModel):
    status: Literal["ready", "no-model", "loading"]
    model_version: str | None
    ensemble_members: int | None = Field(
        None, description="'ready': how many models the version averages (1: a single model)"
    )
    detail: str | None = Field(None, description="'no-model': what the app waits for")


# Serve's own backpressure answer (the Api deployment's max_queued_requests) is plain text.
BUSY = "Request dropped due to backpressure"
_BUSY_TEXT = {"text/plain": {"schema": {"type": "string", "example": BUSY}}}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                                "schema": {"type": "integer"}}}  # fmt: skip
# Every answer /predict gives besides 200 (the API's own ErrorBody, one line per problem).
PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "RAY_APP_API_KEY is set and no key of it was sent"},
    408: {"model": ErrorBody, "description": "the body did not arrive within body_timeout_s "
                                            "(the connection is closed)"},
    413: {"model": ErrorBody, "description": "body over max_body_bytes (before it is parsed)"},
    422: {"model": ValidationErrorBody,
          "description": "invalid JSON or record, empty list, or more than max_records"},
    503: {"model": ErrorBody, "headers": _RETRY_AFTER, "content": _BUSY_TEXT,
          "description": "no model registered yet, a replica restarting (JSON), or the server "
                         "busy (Serve's backpressure, text); retry after Retry-After seconds"},
}  # fmt: skip


FEEDBACK_ERRORS: dict[int | str, dict[str, Any]] = {
    401: PREDICT_ERRORS[401],
    408: PREDICT_ERRORS[408],
    409: {"model": ErrorBody, "description": "the prediction log is off: nothing to join to"},
    413: PREDICT_ERRORS[413],
    422: {"model": ValidationErrorBody, "description": "invalid JSON or label, empty list, or "
          "more than 10,000 labels"},
}  # fmt: skip


def branch_errors(errors: list[Any], body: Any) -> list[Any]:
    """Keep the errors of the union branch the body took (one record or a list), tag dropped.

    The body is `Record | list[Record]`, so pydantic reports both branches, with locations
    like ('body', 'list[Record]', 3, 'age'); only the branch matching the body's JSON type
    helps the client.
    """
    branch = "list[Record]" if isinstance(body, list) else "Record"
    kept = []
    for error in errors:
        loc = list(error.get("loc", ()))
        if len(loc) >= 2 and loc[0] == "body" and loc[1] in ("Record", "list[Record]"):
            if loc[1] != branch:
                continue
            loc = [loc[0], *loc[2:]]
        kept.append({**error, "loc": tuple(loc)})
    return kept or errors


def describe_errors(errors: list[Any]) -> list[str]:
    """["record 3, field 'age': Input should be ..."] from pydantic's error list."""
    out = []
    for error in errors:
        loc = [p for p in error.get("loc", ()) if p != "body"]
        where = []
        if loc and isinstance(loc[0], int):
            where.append(f"record {loc.pop(0)}")
        if loc:
            where.append(f"field '{'.'.join(str(p) for p in loc)}'")
        out.append(f"{', '.join(where) or 'body'}: {error.get('msg')}")
    return out


class Unavailable(Exception):
    """A scoring backend that cannot answer now (a replica lost or restarting): 503."""


# Retry-After of the API's own 503s: a replica restarts, or a first model appears, in seconds.
RETRY = {"Retry-After": "1"}


def client_error(status: int, message: str, headers: dict[str, str] | None = None
                  ) -> JSONResponse:  # fmt: skip
    return JSONResponse(status_code=status, content={"detail": [message]}, headers=headers)


def invalid_body(message: str, kind: str) -> JSONResponse:
    """A 422 shaped as RequestValidationError's (detail lines and structured errors)."""
    error = {"loc": ["body"], "msg": message, "type": kind}
    return JSONResponse(status_code=422, content={"detail": [f"body: {message}"],
                                                  "errors": [error]})  # fmt: skip


def jsonable(errors: Any) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in errors]  # fmt: skip
