"""Parley's inference engine: plain Python + torch, no Django.

Loading (``loading``), the batching scheduler (``scheduler``), sampling and the
training loop live here so they can be benchmarked and reused on their own.
A test enforces that nothing in this package imports Django.
"""
