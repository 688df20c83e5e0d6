"""Pydantic request/response schemas of the HTTP API (interfaces.md §4).

Families with predictable names: ``XCreate`` (request body), ``XPublic`` (one item),
``XsPublic`` (a page: ``data`` + ``count``, the total before paging).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, model_validator

from backend.core.errors import ErrorBody, ServiceError
from backend.run_state import Status as RunStatus
from genscope.io.dataset_names import BUILTIN_DATASETS


def _utc_iso(value: datetime) -> str:
    """The database keeps naive UTC; answers say so explicitly (``...+00:00``)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


UTCDateTime = Annotated[datetime, PlainSerializer(_utc_iso, return_type=str)]

#: The length of the name/title columns (``String(255)``).
MAX_NAME_LENGTH = 255


def lone_surrogate(value: str) -> int | None:
    """The index of the first lone UTF-16 surrogate (U+D800..U+DFFF) in ``value``, or None.

    JSON's ``\\ud800`` escape (and ``json.loads`` of a form field) yields such strings; they are
    not text (no UTF-8 form), so PostgreSQL, the JSON encoder of the answers and the pages
    all refuse them later, after the row was stored (a 500 on every later listing).
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return int(exc.start)
    return None


def _shown_key(key: Any) -> str:
    """A dict key as it appears in an error path (escaped: it may itself be the bad text)."""
    text = str(key)
    return text if lone_surrogate(text) is None else ascii(text)[1:-1]


def find_lone_surrogate(value: Any, path: str = "") -> tuple[str, int] | None:
    """Where the first lone surrogate is in a JSON-like value (strings, dict keys and values,
    lists): ``(path, index in that string)``, or None."""
    if isinstance(value, str):
        at = lone_surrogate(value)
        return None if at is None else (path, at)
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{_shown_key(key)}" if path else _shown_key(key)
            if isinstance(key, str) and (at := lone_surrogate(key)) is not None:
                return (where, at)
            found = find_lone_surrogate(item, where)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for k, item in enumerate(value):
            found = find_lone_surrogate(item, f"{path}[{k}]")
            if found is not None:
                return found
    return None


def surrogate_message(where: str, at: int) -> str:
    return (
        f"{where or 'the value'} is not valid UTF-8 text: a lone UTF-16 surrogate at character "
        f"{at} (send Unicode text; \\ud800-\\udfff escapes must come in pairs)"
    )


def utf8_text(value: Any, *, field: str) -> Any:
    """``value`` unchanged if every string in it (dict keys included) is valid Unicode text.

    Raises:
        ServiceError: ``validation_error`` (422) naming the field, before anything is stored.
    """
    found = find_lone_surrogate(value, field)
    if found is not None:
        raise ServiceError("validation_error", surrogate_message(*found), {"field": found[0]})
    return value


class RequestBody(BaseModel):
    """Base of the JSON request bodies: unknown fields are refused, and so is any string with a
    lone surrogate, anywhere in the body (422 before a handler runs)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _utf8_only(cls, data: Any) -> Any:
        found = find_lone_surrogate(data)
        if found is not None:
            raise ValueError(surrogate_message(*found))
        return data


def no_nul(value: str) -> str:
    """Refuse NUL characters: PostgreSQL text cannot hold them (the insert was a 500)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def stored_text(value: str, *, field: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """A user-given name or title as the database stores it: verbatim (Unicode, RTL marks,
    ``../`` and markup are kept; pages escape them and no name is ever used as a path), but
    without NUL characters or lone surrogates and at most ``max_length`` characters.

    Raises:
        ServiceError: ``validation_error`` (422) naming the field.
    """
    if "\x00" in value:
        raise ServiceError(
            "validation_error", f"{field} must not contain NUL characters", {"field": field}
        )
    utf8_text(value, field=field)
    if len(value) > max_length:
        raise ServiceError(
            "validation_error",
            f"{field} must have at most {max_length} characters, got {len(value)}",
            {"field": field},
        )
    return value


def upload_name(field: str | None, filename: str) -> str:
    """The display name of an upload: the ``name`` field, else the multipart filename.

    Kept verbatim (Unicode, ``../``, markup: pages escape it, and the file itself is stored
    under its sha256, never under this name); NUL characters or more than 255 characters
    answer 422. Empty means "use the sha256 prefix".
    """
    if field:
        return stored_text(field, field="name")
    return stored_text(filename, field="filename") if filename else ""


#: A stored string (title, name): NUL characters are refused with 422.
SafeText = Annotated[str, AfterValidator(no_nul)]


class CheckpointPublic(BaseModel):
    """An uploaded checkpoint, as ``genscope inspect`` described it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    sha256: str
    format: str
    num_params: int
    size: int
    arch: str | None = None
    arch_config: dict[str, Any] | None = None
    created_at: UTCDateTime
    info: dict[str, Any] = Field(default_factory=dict, description="layers, unwrapped prefixes...")


class CheckpointsPublic(BaseModel):
    data: list[CheckpointPublic]
    count: int


class DatasetPublic(BaseModel):
    """A dataset a run can use: a built-in spec or an uploaded npz/safetensors file."""

    id: str = Field(description="the value to pass as a run's `dataset`")
    kind: Literal["builtin", "upload"]
    name: str
    description: str | None = None
    sha256: str | None = None
    format: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    num_classes: int | None = None
    input_shape: list[int] | None = None
    created_at: UTCDateTime | None = None


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


class RunOptions(RequestBody):
    """Run-wide analysis options (``genscope analyze`` flags); defaults from the settings."""

    # bounded so a seed fits torch's 64-bit generator and a sample count a 32-bit index
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    hessian_samples: int | None = Field(default=None, ge=1, le=2**31 - 1)
    margin_samples: int | None = Field(default=None, ge=1, le=2**31 - 1)
    dtype: Literal["float32", "float64"] | None = None


class RunCreate(RequestBody):
    """``POST /api/runs``: analyse one checkpoint on one dataset."""

    checkpoint_id: str
    dataset: str = Field(description=f"built-in spec ({', '.join(BUILTIN_DATASETS)}) or dataset id")
    measures: list[str] | str | None = Field(
        default=None, description="measure ids or groups; default margin.output"
    )
    params: dict[str, dict[str, Any]] | None = Field(
        default=None, description="{measure_id: {name: value}}"
    )
    options: RunOptions | None = None


class MeasureScalar(BaseModel):
    """One measure's headline value (the queryable table)."""

    measure_id: str
    value: float | None
    status: str
    error_code: str | None = None
    seconds: float
    cached: bool = False


class RunPublic(BaseModel):
    """A run: status, progress, error; the report once it has succeeded."""

    id: str
    status: RunStatus
    progress: float = Field(ge=0.0, le=1.0)
    message: str | None = None
    error: ErrorBody | None = None
    checkpoint_id: str
    checkpoint_name: str | None = None
    dataset: str
    measures: list[str]
    params: dict[str, Any]
    options: dict[str, Any]
    queue: str
    attempts: int
    worker_id: str | None = None
    created_at: UTCDateTime
    started_at: UTCDateTime | None = None
    finished_at: UTCDateTime | None = None
    results: list[MeasureScalar] = Field(default_factory=list)
    report: dict[str, Any] | None = Field(
        default=None, description="schema genscope.report/1, once succeeded"
    )


class RunsPublic(BaseModel):
    data: list[RunPublic]
    count: int


class MeasureParamPublic(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    type: str
    default: Any = None
    help: str = ""


class MeasurePublic(BaseModel):
    id: str
    group: str
    direction: str | None = None
    description: str = ""
    source: str = ""
    cost: str = "cheap"
    forms: list[str] = Field(
        default_factory=list, description="the model forms it is defined for (module, ...)"
    )
    params: list[MeasureParamPublic] = Field(default_factory=list)


class MeasuresPublic(BaseModel):
    data: list[MeasurePublic]
    count: int
    groups: list[str]


class ComparisonCreate(RequestBody):
    """``POST /api/comparisons``: some of the user's runs side by side."""

    run_ids: list[str] = Field(min_length=1)
    title: SafeText | None = Field(default=None, max_length=MAX_NAME_LENGTH)
    share_expires_in_hours: float | None = Field(
        default=None, gt=0, le=24 * 366, description="the share link expires after this long"
    )


class ShareCreate(RequestBody):
    """``POST /api/comparisons/{id}/share``: a new link, optionally expiring."""

    expires_in_hours: float | None = Field(
        default=None, gt=0, le=24 * 366, description="the link expires after this long"
    )


class ComparisonPublic(BaseModel):
    id: str
    title: str
    run_ids: list[str]
    created_at: UTCDateTime
    shared: bool = Field(description="whether an active share link exists")
    share_url: str | None = Field(
        default=None, description="only in the answer that created the link (tokens are hashed)"
    )
    url: str | None = Field(default=None, description="the owner's comparison page")
    share_expires_at: UTCDateTime | None = Field(
        default=None, description="when the link created by this answer expires, if it does"
    )


class ComparisonsPublic(BaseModel):
    data: list[ComparisonPublic]
    count: int


class ShareRevoked(BaseModel):
    id: str
    revoked: int = Field(description="how many active links were revoked")


class SharedRun(BaseModel):
    """A run as an anonymous share link shows it: what the share page shows, nothing more (no
    run, checkpoint, dataset or user ids, no worker name, no queue or attempts)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint_name: str | None = None
    status: RunStatus
    progress: float = Field(ge=0.0, le=1.0)
    message: str | None = None
    error: ErrorBody | None = None
    dataset: str = Field(description="the built-in dataset's name or the uploaded dataset's name")
    measures: list[str]
    params: dict[str, Any] = Field(
        description="checkpoint-valued parameters show the checkpoint's sha256, not its id"
    )
    options: dict[str, Any]
    created_at: UTCDateTime
    started_at: UTCDateTime | None = None
    finished_at: UTCDateTime | None = None
    results: list[MeasureScalar] = Field(default_factory=list)
    report: dict[str, Any] | None = Field(
        default=None, description="schema genscope.report/1, once succeeded"
    )


class SharedComparison(BaseModel):
    """A comparison opened by its share token: read-only, with every run's report."""

    id: str
    title: str
    created_at: UTCDateTime
    runs: list[SharedRun]


class ComponentHealth(BaseModel):
    model_config = ConfigDict(extra="allow")

    ok: bool


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    database: ComponentHealth
    broker: ComponentHealth
    workers: list[dict[str, Any]]
    auth: str
