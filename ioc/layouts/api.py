"""Routes for wall layouts: create, edit, list, read, delete, and render one now."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Response, status

from ioc.auth.deps import AuditDep, require
from ioc.auth.permissions import Permission, Principal
from ioc.deps import ContextDep, SessionDep
from ioc.kit.clock import utcnow
from ioc.layouts import service
from ioc.layouts.live import LAYOUTS_TOPIC, layouts_state
from ioc.layouts.schemas import LayoutCreate, LayoutRead, LayoutUpdate
from ioc.units.service import province_code_str

router = APIRouter(prefix="/api/v1/layouts", tags=["layouts"])

Admin = Annotated[Principal, require(Permission.ADMIN)]
"""Editing what the walls show: the ADMIN permission (reading needs READ, set in app.py)."""


@contextmanager
def _answering_errors() -> Iterator[None]:
    try:
        yield
    except service.LayoutNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except service.LayoutExists as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except service.LayoutInvalid as exc:
        raise HTTPException(422, str(exc)) from None


async def _announce(
    ctx: ContextDep, session: SessionDep, layout_id: str, *, deleted: bool = False
) -> None:
    """After the commit: tell every replica's layout feed (and any client of `layouts`)."""
    if ctx.hub is not None:
        state = await layouts_state(session, changed=layout_id, deleted=deleted)
        ctx.hub.publish(LAYOUTS_TOPIC, state)


@router.get("", response_model=list[LayoutRead])
async def get_layouts(session: SessionDep) -> list[LayoutRead]:
    """Every layout, the default first."""
    return [service.to_read(x) for x in await service.list_layouts(session)]


@router.post("", response_model=LayoutRead, status_code=status.HTTP_201_CREATED)
async def create_layout(
    data: LayoutCreate, session: SessionDep, ctx: ContextDep, _: Admin, audit: AuditDep
) -> LayoutRead:
    """Store a new layout; unknown KPIs, units or visualisations are refused with 422."""
    with _answering_errors():
        layout = await service.create_layout(
            session, data, province_code=province_code_str(ctx.settings.province), now=utcnow()
        )
    read = service.to_read(layout)
    await audit("layout.create", f"layout:{layout.id}", after=read)
    await session.commit()
    await _announce(ctx, session, layout.id)
    return read


@router.get("/{layout_id}", response_model=LayoutRead)
async def get_layout(layout_id: str, session: SessionDep) -> LayoutRead:
    """One layout."""
    with _answering_errors():
        return service.to_read(await service.get_layout(session, layout_id))


@router.patch("/{layout_id}", response_model=LayoutRead)
async def update_layout(
    layout_id: str,
    data: LayoutUpdate,
    session: SessionDep,
    ctx: ContextDep,
    _: Admin,
    audit: AuditDep,
) -> LayoutRead:
    """Change a layout (send `tiles` to replace them all); walls following it redraw."""
    with _answering_errors():
        before = service.to_read(await service.get_layout(session, layout_id)).model_dump(
            mode="json"
        )  # dumped now: the update changes the same object
        layout = await service.update_layout(session, layout_id, data, now=utcnow())
    read = service.to_read(layout)
    await audit("layout.update", f"layout:{layout_id}", before=before, after=read)
    await session.commit()
    await _announce(ctx, session, layout_id)
    return read


@router.delete("/{layout_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_layout(
    layout_id: str, session: SessionDep, ctx: ContextDep, _: Admin, audit: AuditDep
) -> Response:
    """Remove a layout."""
    with _answering_errors():
        before = service.to_read(await service.get_layout(session, layout_id))
        await service.delete_layout(session, layout_id)
    await audit("layout.delete", f"layout:{layout_id}", before=before)
    await session.commit()
    await _announce(ctx, session, layout_id, deleted=True)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{layout_id}/tiles")
async def render_layout(layout_id: str, ctx: ContextDep) -> dict[str, Any]:
    """Every tile of the layout ready to draw, as the `layout:<id>` topic delivers it."""
    assert ctx.layout_feed is not None
    with _answering_errors():
        try:
            return await ctx.layout_feed.snapshot(f"layout:{layout_id}")
        except LookupError as exc:
            raise service.LayoutNotFound(f"no layout {layout_id!r}") from exc
