"""The ``infsched`` command line."""
