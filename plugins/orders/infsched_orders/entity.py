"""OrderEntity: something that must happen to an order at a given time."""

from __future__ import annotations

import enum
import re
from datetime import datetime
from decimal import Decimal

import attrs

from infsched.entities import column, id_field, sharding_key

_CURRENCY = re.compile(r"^[A-Z]{3}$")


class OrderAction(enum.Enum):
    """The transition applied when the entity is due."""

    #: An order still awaiting payment is cancelled.
    EXPIRE_UNPAID = "expire_unpaid"
    #: Stock reserved for an order that was not paid goes back on sale.
    RELEASE_STOCK = "release_stock"
    #: A shipped order nobody disputed counts as delivered.
    AUTO_CONFIRM_DELIVERY = "auto_confirm_delivery"


#: The order status each action requires (compare-and-set) and the one it sets.
TRANSITIONS: dict[OrderAction, tuple[str, str]] = {
    OrderAction.EXPIRE_UNPAID: ("pending_payment", "expired"),
    OrderAction.RELEASE_STOCK: ("pending_payment", "stock_released"),
    OrderAction.AUTO_CONFIRM_DELIVERY: ("shipped", "delivered"),
}


@attrs.define(kw_only=True)
class OrderEntity:
    """An action due on an order at `due_at`."""

    id: int | None = id_field()
    due_at: datetime = sharding_key()
    #: The order in the business's own orders table.
    order_id: str = column(length=64, index=True)
    customer_id: str = column(length=64)
    action: OrderAction = column()
    amount: Decimal = column(precision=14, scale=2)
    #: ISO 4217 code.
    currency: str = column(length=3)
    priority: int = column(default=0)
    #: Where to post an event once the transition is applied; None for no event.
    webhook_url: str | None = column(length=512, default=None)

    def __attrs_post_init__(self) -> None:
        if not self.order_id:
            raise ValueError("OrderEntity.order_id: required")
        if not _CURRENCY.match(self.currency):
            raise ValueError(
                f"OrderEntity.currency: {self.currency!r} is not an ISO 4217 code like EUR"
            )
        if self.amount < 0:
            raise ValueError(f"OrderEntity.amount: {self.amount} is negative")

    @property
    def expected_status(self) -> str:
        return TRANSITIONS[self.action][0]

    @property
    def target_status(self) -> str:
        return TRANSITIONS[self.action][1]
