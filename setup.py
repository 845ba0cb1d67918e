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
        built = False
        if npm and Path("web/package.json").is_file():
            # Fixed commands: npm, from PATH, on this checkout's web/.
            built = all(
                subprocess.run([npm, "--prefix", "web", *step], check=False).returncode == 0  # noqa: S603
                for step in (["ci", "--no-audit", "--no-fund"], ["run", "build"])
            )
        if not built:
            print("the web console is not built (no npm, no web/, or npm failed): /ui/ says how")
        super().run()


setup(cmdclass={"build_py": BuildConsole})
