"""The job store: where jobs wait between being fetched and being run."""
