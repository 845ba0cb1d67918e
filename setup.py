"""The one build step setuptools cannot declare: the web console (web/ -> api/ui/).

Built when Node.js and npm are present; without them the package installs all the same
and `/ui/` says how to build the console.
"""

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildConsole(build_py):
    def run(self) -> None:
        npm = shutil.which("npm")
        if npm and Path("web/package.json").is_file():
            # A fixed command: npm, from PATH, on this checkout's web/.
            subprocess.run([npm, "--prefix", "web", "ci", "--no-audit", "--no-fund"], check=True)  # noqa: S603
            subprocess.run([npm, "--prefix", "web", "run", "build"], check=True)  # noqa: S603
        else:
            print("no npm, or no web/: the web console is not built")
        super().run()


setup(cmdclass={"build_py": BuildConsole})
