"""Databases made and filled by the code of an earlier release (tests/test_schema_upgrade.py)."""
