"""Packaging glue setup.cfg cannot express: ``configs/`` (the presets' one home) installed as ``ssl_art/configs``."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["ssl_art", "ssl_art.*"]) + ["ssl_art.configs"],
    package_dir={"ssl_art.configs": "configs"},
    package_data={"ssl_art.configs": ["*.yaml", "*/*.yaml"]},
)
