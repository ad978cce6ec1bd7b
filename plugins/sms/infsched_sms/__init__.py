"""Infinite Scheduler plugin for scheduled SMS."""

from infsched_sms.entity import SmsCoding, SmsEntity

__all__ = ["SmsCoding", "SmsEntity"]
