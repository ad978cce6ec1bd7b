"""Infinite Scheduler plugin: ``infsched bench``, the cluster harness and the probe executor.

Test and benchmark scaffolding kept out of the core package: throughput and
memory stages on a real database, the cluster harness that starts real
``infsched run`` processes, and the probe executor that records every call.
"""
