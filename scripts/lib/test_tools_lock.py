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

    def test_the_lock_holds_requirements_hashes_and_comments_only(self):
        # the secret scan leaves this file out (its hashes look like secrets): an index URL
        # with a token, or a direct URL, would not be seen there
        requirement = r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+ \\"
        hashed = r"    --hash=sha256:[0-9a-f]{64}( \\)?"
        comment = r"\s*#.*"
        with open(os.path.join(SCRIPTS, "tools-lock.txt")) as f:
            lines = f.read().splitlines()
        allowed = re.compile(f"{requirement}|{hashed}|{comment}")
        self.assertEqual([line for line in lines if line and not allowed.fullmatch(line)], [])


if __name__ == "__main__":
    unittest.main()
