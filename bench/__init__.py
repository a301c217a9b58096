"""Benchmarks that print side-by-side ratios; never run as timed tests."""

from __future__ import annotations
