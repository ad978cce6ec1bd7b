"""Infinite Scheduler example plugin: JSON files dropped into a spool directory on time."""

from infsched_spool.entity import SpoolEntity

__all__ = ["SpoolEntity"]
