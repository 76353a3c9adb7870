"""Which packages the distribution holds; everything else is in pyproject.toml.

The top-level folders install inside the streamst namespace (`server/` as `streamst.server`, ...),
never as top-level packages, and every subpackage of each (`streamst.sessions`, ...) is found here,
so a new one needs no entry. pyproject.toml cannot say this: its `find` names packages after their
folders.
"""

from setuptools import find_packages, setup

PACKAGE_DIRS = {
    "streamst": "streamst",
    "streamst.models": "models",
    "streamst.server": "server",
    "streamst.client": "client",
    "streamst.benchmarks": "benchmarks",
}


def packages() -> list[str]:
    """Each mapped package and every subpackage found under its folder."""
    return [
        package
        for name, folder in PACKAGE_DIRS.items()
        for package in (name, *(f"{name}.{sub}" for sub in find_packages(folder)))
    ]


setup(packages=packages(), package_dir=PACKAGE_DIRS)
