"""The secret scan over git history: a secret removed from the tree is still found, named by
a version that has it and its line there, and a line judged no secret in the tree is not a finding in
history. The secrets are put together at run time, so that this file holds none."""

import contextlib
import io
import os
import subprocess

import security_checks

AWS_KEY = "AKIA" + "Z3K7QW9P2XLM4TVB"
LEAKED = "Xk29fLq" + "7vTz0pWm"


def commit(repo, files, message):
    for name, text in files.items():
        path = os.path.join(repo, name)
        if text is None:
            os.remove(path)
            continue
        with open(path, "w") as f:
            f.write(text)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", message],
                   cwd=repo, check=True)


def scan(repo, monkeypatch):
    monkeypatch.chdir(repo)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        failed = security_checks.secrets()
    return failed, out.getvalue()


def test_a_secret_only_in_history_is_found_in_a_version_that_has_it(tmp_path, monkeypatch):
    repo = str(tmp_path)
    subprocess.run(["git", "init", "-q", repo], check=True)
    lines = ["import os", "", "REGION = 'eu-west-1'", f"KEY = '{AWS_KEY}'", "print(REGION)"]
    commit(repo, {"app.py": "\n".join(lines) + "\n",
                  "deploy.yaml": f"db:\n  user: farol\n  password: '{LEAKED}'\n"}, "first")
    # later versions repeat the secret's line (scanned once) and move it
    commit(repo, {"app.py": "\n".join(["# a header", *lines]) + "\n"}, "second")
    commit(repo, {"app.py": "import os\n", "deploy.yaml": "db:\n  user: farol\n"}, "secrets out")

    failed, out = scan(repo, monkeypatch)
    assert failed == 1, out
    found = [line for line in out.splitlines() if "FAILED in git history" in line]
    # named in the newest version that has it, at its line there
    newest = subprocess.run(["git", "rev-parse", "HEAD~1:app.py"], cwd=repo, check=True,
                            capture_output=True, text=True).stdout.strip()
    assert any(f"app.py:5 (blob {newest[:12]})" in line and "AWS" in line for line in found), out
    assert any("deploy.yaml:3" in line for line in found), out
    assert len(found) == 2, out
    assert AWS_KEY not in out and LEAKED not in out, "a finding's report shows the secret"


def test_secrets_a_line_by_line_reading_would_miss_are_found(tmp_path, monkeypatch):
    """A settings file (read as INI, where an unquoted value counts) whose value changed from
    version to version, and a secret in a file whose other version is not UTF-8."""
    repo = str(tmp_path)
    subprocess.run(["git", "init", "-q", repo], check=True)
    commit(repo, {"settings": f"DB_HOST=db\nDB_PASSWORD={LEAKED}\n", "run.sh": f"KEY='{AWS_KEY}'\n"}, "first")
    commit(repo, {"settings": "DB_HOST=db\nDB_PASSWORD=${DB_PASSWORD_FROM_VAULT}\n"}, "value changed")
    with open(os.path.join(repo, "run.sh"), "wb") as f:
        f.write(b"# caf\xe9, in Latin-1\necho ok\n")
    commit(repo, {}, "not UTF-8")

    failed, out = scan(repo, monkeypatch)
    found = [line for line in out.splitlines() if "FAILED in git history" in line]
    assert failed == 1, out
    assert "0 findings in the tree" in out, out
    assert any("settings:2" in line for line in found), out
    assert any("run.sh:1" in line and "AWS" in line for line in found), out


def test_a_line_marked_no_secret_in_the_tree_is_no_finding_in_history(tmp_path, monkeypatch):
    repo = str(tmp_path)
    subprocess.run(["git", "init", "-q", repo], check=True)
    commit(repo, {"app.py": f"KEY = '{AWS_KEY}'\n"}, "first")
    commit(repo, {"app.py": f"KEY = '{AWS_KEY}'  # pragma: allowlist secret (a test value)\n"}, "marked")

    failed, out = scan(repo, monkeypatch)
    assert failed == 0, out
    assert "0 findings in the tree, 0 only in history" in out, out


def test_a_marked_line_is_found_by_its_number_whatever_characters_come_before_it(tmp_path, monkeypatch):
    """detect-secrets numbers lines split at line ends only: a form feed inside an earlier
    line (as in a file laid out in pages) must not move the marked line it names."""
    repo = str(tmp_path)
    subprocess.run(["git", "init", "-q", repo], check=True)
    commit(repo, {"app.py": f"# page one\fpage two\nKEY = '{AWS_KEY}'\n"}, "first")
    commit(repo, {"app.py": f"# page one\fpage two\nKEY = '{AWS_KEY}'  # pragma: allowlist secret (a test value)\n"},
           "marked")

    failed, out = scan(repo, monkeypatch)
    assert failed == 0, out
    assert "0 findings in the tree, 0 only in history, 1 lines marked" in out, out
