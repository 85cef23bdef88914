"""Renderings of an Analysis: rich tables (report.py), JSON and CSV (export.py)."""
