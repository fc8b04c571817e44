"""scripts/tools-lock.txt (what scripts/install-deps installs) against tools-versions.txt (what
a person raises): a version raised without `make tools-lock` would be installed at the old one."""

import os
import re
import unittest

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def pins(name):
    """{package: version} of a requirements file's `name==version` lines, names normalised."""
    with open(os.path.join(SCRIPTS, name)) as f:
        found = re.findall(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", f.read(), re.M)
    return {re.sub(r"[-_.]+", "-", package).lower(): version for package, version in found}


class ToolsLock(unittest.TestCase):
    def test_every_tool_is_locked_at_its_version(self):
        wanted, locked = pins("tools-versions.txt"), pins("tools-lock.txt")
        self.assertIn("checkov", wanted)
        self.assertEqual({p: locked.get(p) for p in wanted}, wanted)

    def test_every_locked_package_has_a_hash(self):
        with open(os.path.join(SCRIPTS, "tools-lock.txt")) as f:
            entries = re.split(r"\n(?=[A-Za-z0-9])", f.read().split("\n", 3)[-1])
        packages = [e for e in entries if "==" in e.split("\n")[0]]
        self.assertGreater(len(packages), len(pins("tools-versions.txt")))
        self.assertEqual([e.split()[0] for e in packages if "--hash=sha256:" not in e], [])


if __name__ == "__main__":
    unittest.main()
