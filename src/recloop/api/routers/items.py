"""Items: the vectors preferences learn towards."""

from __future__ import annotations

from fastapi import APIRouter

from recloop.api.auth import Ingest, Read
from recloop.api.deps import ContainerDep
from recloop.api.requests import StrictJsonRoute
from recloop.api.schemas import (
    ErrorOut,
    ItemBatchIn,
    ItemBatchOut,
    ItemIn,
    ItemOut,
    PathIdParam,
)
from recloop.core.items import Item

router = APIRouter(tags=["items"], route_class=StrictJsonRoute)

ItemId = PathIdParam
"""No control characters, no ``/`` (``core.ids``): every stored item stays reachable here."""


def _out(item: Item) -> ItemOut:
    return ItemOut(
        item_id=item.item_id,
        vector=item.vector.tolist(),
        vector_source=item.vector_source,
        attributes=dict(item.attributes),
        updated_at=item.updated_at,
    )


@router.put(
    "/items/{item_id}",
    dependencies=[Ingest],
    response_model=ItemOut,
    responses={422: {"model": ErrorOut}},
)
async def put_item(item_id: ItemId, body: ItemIn, container: ContainerDep) -> ItemOut:
    """Create or replace an item. Without a vector, one is hashed from the attributes."""
    spec = {"item_id": item_id, "vector": body.vector, "attributes": body.attributes}
    (item,) = await container.items.put_many([spec])
    return _out(item)


@router.post(
    "/items",
    dependencies=[Ingest],
    response_model=ItemBatchOut,
    responses={422: {"model": ErrorOut}},
)
async def post_items(body: ItemBatchIn, container: ContainerDep) -> ItemBatchOut:
    """Create or replace up to 1000 items; if any is invalid, none is stored."""
    specs = [i.model_dump() for i in body.items]
    items = await container.items.put_many(specs, field_prefix="items.")
    return ItemBatchOut(stored=len(items), items=[_out(i) for i in items])


@router.get(
    "/items/{item_id}",
    dependencies=[Read],
    response_model=ItemOut,
    responses={404: {"model": ErrorOut}},
)
async def get_item(item_id: ItemId, container: ContainerDep) -> ItemOut:
    return _out(await container.items.get(item_id))
