"""The scheduling engine: fetchers, workers, misfires, retries, and the scheduler."""
