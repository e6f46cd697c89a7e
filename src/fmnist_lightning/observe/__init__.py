"""Observing runs: the ``metrics.json`` record, time and memory measures, TensorBoard figures and confusion matrices."""
