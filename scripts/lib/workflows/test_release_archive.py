"""scripts/release-archive names a release by its one image index, and refuses any other."""

import hashlib
import json
import subprocess
import tarfile
import tempfile
import unittest
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "release-archive"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def archive(work, entries_of=lambda index: [{"mediaType": INDEX, **index}], tamper=False):
    """An OCI archive as BuildKit's (entries under ./), and its index's digest."""
    layout = work / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    image = blob(layout, json.dumps({"schemaVersion": 2, "mediaType": MANIFEST}).encode())
    index = blob(layout, json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": MANIFEST, **image, "platform": {"os": "linux", "architecture": "amd64"}}]}).encode())
    if tamper:
        (layout / "blobs" / "sha256" / index["digest"][7:]).write_bytes(b'{"schemaVersion":2}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries_of(index)}))
    path = work / "farol.oci.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(layout, arcname=".")
    return path, index["digest"]


def run(*args):
    return subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=30)


class ReleaseArchive(unittest.TestCase):
    def scratch(self):
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        return Path(directory.name)

    def setUp(self):
        self.work = self.scratch()

    def test_the_index_digest_is_printed_and_checked(self):
        path, digest = archive(self.work)
        printed = run("digest", path, self.work / "a")
        self.assertEqual((printed.returncode, printed.stdout.strip()), (0, digest), printed.stderr)
        self.assertEqual(run("check", path, self.work / "b", digest).returncode, 0)

    def test_another_digest_is_refused(self):
        path, _ = archive(self.work)
        checked = run("check", path, self.work / "a", "sha256:" + "0" * 64)
        self.assertEqual(checked.returncode, 1)
        self.assertIn("not the recorded", checked.stderr)

    def test_an_archive_that_is_not_one_index_is_refused(self):
        not_one = "expected one image index"
        cases = {
            "tampered": ({"tamper": True}, "hashes to"),
            "a bare manifest": ({"entries_of": lambda index: [{"mediaType": MANIFEST, **index}]}, not_one),
            "two entries": ({"entries_of": lambda index: [{"mediaType": INDEX, **index}] * 2}, not_one),
        }
        for name, (how, says) in cases.items():
            with self.subTest(name):
                work = self.scratch()
                path, digest = archive(work, **how)
                checked = run("check", path, work / "a", digest)
                self.assertEqual(checked.returncode, 1, checked.stderr)
                self.assertIn(says, checked.stderr)


if __name__ == "__main__":
    unittest.main()
