"""Infinite Scheduler plugin for timed order transitions."""

from infsched_orders.entity import TRANSITIONS, OrderAction, OrderEntity

__all__ = ["TRANSITIONS", "OrderAction", "OrderEntity"]
