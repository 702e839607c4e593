"""Stub kept only because the ``build_py`` override that ships ``nnunet_ext.pth`` cannot be declared in setup.cfg.

Everything else (metadata, dependencies, console script) lives in setup.cfg.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithPth(build_py):
    """Copy ``nnunet_ext.pth`` to the wheel root so site-packages runs ``nnunet_ext_autoload`` at start-up."""

    def run(self) -> None:
        super().run()
        here = os.path.dirname(os.path.abspath(__file__))
        self.copy_file(os.path.join(here, "nnunet_ext.pth"), os.path.join(self.build_lib, "nnunet_ext.pth"))


setup(cmdclass={"build_py": BuildPyWithPth})
