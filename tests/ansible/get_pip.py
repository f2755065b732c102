"""Stands in for pip's get-pip.py, which ansible-test downloads from a host that only
the internet at large reaches: installs the interpreter's bundled pip (ensurepip), then
the packages ansible-test asks for (pip, setuptools, wheel at its pinned versions) from
the package index, with the machine's pip configuration."""

import subprocess
import sys

# ensurepip ignores pip's configuration on purpose; in a process of its own, so that
# the install below still sees it (certificates, index, timeouts).
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--upgrade", *sys.argv[1:]]))
