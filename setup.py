"""setup.py shim: all metadata lives in pyproject.toml (PEP 621).

Kept for tools that still call ``setup.py`` directly (rpm's %py3_build on EL9).
"""
from setuptools import setup

setup()
