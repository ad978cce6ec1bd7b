"""``infsched bench``: throughput and memory measured on a real database."""
