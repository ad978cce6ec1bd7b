"""Clustering: nodes and heartbeats, named leases, database time, outages.

Several ``infsched run`` nodes share one database.  Every node executes
(claims use SKIP LOCKED, never a global lock); each repository's fetching
and maintenance run on one node at a time, under a named lease that another
node takes over when its holder stops renewing it.  Every decision nodes must
agree on is judged by the database's clock.  See docs/clustering.md.
"""
