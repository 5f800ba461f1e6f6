"""Routes for reading canonical records: the bottom of every drill-down."""

from __future__ import annotations

from datetime import date
from typing import Annotated, TypeVar

from fastapi import APIRouter, HTTPException, Query, Request, status

from ioc.auth.deps import PrincipalDep
from ioc.auth.masking import mask_record
from ioc.auth.permissions import Permission, Principal
from ioc.deps import ContextDep, ReadSessionDep
from ioc.kit.params import Offset
from ioc.records.schemas import Page
from ioc.records.service import (
    BROWSING,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    InvalidRecordQuery,
    RecordQuery,
    UnknownRecordType,
    UnknownUnit,
    query_records,
)

router = APIRouter(prefix="/api/v1/records", tags=["records"])

QUERY_PARAMETERS = frozenset(
    {"unit", "time_column", "date_from", "date_to", "q", "sort", "limit", "offset"}
)
"""The named query parameters; every other one is an equality filter on a column."""

_FILTERS_HELP = "; ".join(
    f"{record_type}: {', '.join(browsing.filters)}" for record_type, browsing in BROWSING.items()
)


@router.get(
    "/{record_type}",
    response_model=Page,
    description=(
        "Records of one type matching every given condition, one page at a time. Any other "
        "query parameter is an equality filter on a column, repeatable for several values "
        f"(`?field_code=DD&field_code=TP`). Filters per type — {_FILTERS_HELP}. "
        "Personal data (feedback reporters, addresses, phone numbers in text) is masked "
        "without the personal_data permission."
    ),
)
async def get_records(
    record_type: str,
    request: Request,
    session: ReadSessionDep,
    ctx: ContextDep,
    principal: PrincipalDep,
    unit: Annotated[
        str | None, Query(description="Unit code: that unit and every unit below it")
    ] = None,
    time_column: Annotated[
        str | None, Query(description="Date column of the window; the type's main one by default")
    ] = None,
    date_from: Annotated[date | None, Query(description="First local day, included")] = None,
    date_to: Annotated[date | None, Query(description="Last local day, included")] = None,
    q: Annotated[str | None, Query(description="Text searched in the names, any case")] = None,
    sort: Annotated[
        str | None, Query(description="Columns separated by commas, `-` first for descending")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> Page:
    """One page of records with the total, newest first unless sorted otherwise."""
    params = request.query_params
    filters = {name: params.getlist(name) for name in params if name not in QUERY_PARAMETERS}
    try:
        query = RecordQuery(
            record_type=record_type,
            unit=unit,
            time_column=time_column,
            date_from=date_from,
            date_to=date_to,
            filters=filters,
            q=q,
            sort=sort or (),
            limit=limit,
            offset=offset,
        )
        return masked_page(
            await query_records(session, query, totals=ctx.record_totals), record_type, principal
        )
    except (UnknownRecordType, UnknownUnit) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except InvalidRecordQuery as exc:
        raise HTTPException(422, str(exc)) from None


PageT = TypeVar("PageT", bound=Page)


def masked_page(page: PageT, record_type: str, principal: Principal) -> PageT:
    """The page as the principal may see it: personal data masked below PERSONAL_DATA."""
    if principal.can(Permission.PERSONAL_DATA):
        return page
    return page.model_copy(
        update={"items": [mask_record(record_type, item) for item in page.items]}
    )
