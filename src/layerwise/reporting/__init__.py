"""Presentation of result tables: text tables now, plots and HTML in later commands.

Pure functions of data: nothing here loads a model or computes a metric.
"""
