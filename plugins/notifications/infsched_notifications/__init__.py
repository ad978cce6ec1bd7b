"""Infinite Scheduler plugin for scheduled emails and webhooks."""

from infsched_notifications.entity import Channel, NotificationEntity

__all__ = ["Channel", "NotificationEntity"]
