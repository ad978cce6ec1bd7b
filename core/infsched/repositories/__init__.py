"""Sharding repositories: entities stored in day tables or day partitions."""
