"""Metrics: counters, gauges and histograms, sent to pluggable sinks."""
