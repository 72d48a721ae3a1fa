"""Hygiene checks `make lint` runs: known vulnerabilities in the installed (pinned) dependencies, and secrets.

`audit`: pip-audit over this virtualenv's packages. Without a reachable advisory database (no network, or a
package mirror that answers 404 for PyPI's JSON API, when pip-audit itself reports "No known vulnerabilities"
for packages it never checked), it prints a SKIP line saying so: never a silent pass. Any vulnerability fails.
`secrets`: detect-secrets over every tracked or new file, against the committed .secrets.baseline; a secret not
in the baseline fails. `baseline`: rewrite .secrets.baseline from the current files, once every finding the
secret scan printed has been checked to be a false positive (a placeholder, a test fixture).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def audit() -> int:
    for service in ("osv", "pypi"):
        proc = subprocess.run(
            [str(BIN / "pip-audit"), "--local", "--skip-editable", "-s", service, "-f", "json",
             "--progress-spinner", "off"],
            capture_output=True, text=True, timeout=600, cwd=ROOT,
        )  # fmt: skip
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError:
            print(f"pip-audit: advisory database {service} unreachable ({proc.stderr.strip().splitlines()[-1:]})")
            continue
        deps = report.get("dependencies", [])
        audited = [d for d in deps if "skip_reason" not in d]
        vulnerable = [d for d in audited if d.get("vulns")]
        if not audited:
            print(f"pip-audit: {service} could not audit any of {len(deps)} packages (no advisory data reachable)")
            continue
        for dep in vulnerable:
            ids = ", ".join(v["id"] for v in dep["vulns"])
            print(f"pip-audit: {dep['name']} {dep['version']} has known vulnerabilities: {ids}")
        unaudited = len(deps) - len(audited)
        note = f", {unaudited} not found in the database" if unaudited else ""
        print(f"pip-audit ({service}): {len(audited)} packages audited, {len(vulnerable)} vulnerable{note}")
        return 1 if vulnerable else 0
    print("SKIP pip-audit: no advisory database could be reached (OSV and PyPI); dependencies were NOT audited")
    return 0


BASELINE_OPTIONS = ["--exclude-files", r"(^|/)(node_modules|\.venv|\.dev)/", "--exclude-lines", "secretName: "]


def _files() -> list[str]:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.split()  # fmt: skip
    return [f for f in files if (ROOT / f).is_file() and f != ".secrets.baseline"]


def write_baseline() -> int:
    proc = subprocess.run(
        [str(BIN / "detect-secrets"), "scan", *BASELINE_OPTIONS, *_files()],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    (ROOT / ".secrets.baseline").write_text(proc.stdout)
    print("wrote .secrets.baseline: review its diff before committing it")
    return 0


def scan_secrets() -> int:
    files = _files()
    proc = subprocess.run(
        [str(BIN / "detect-secrets-hook"), "--baseline", ".secrets.baseline", *files], cwd=ROOT, timeout=600
    )
    if proc.returncode:
        print("secret scan: the findings above are not in .secrets.baseline; remove the secret (or, for a false "
              "positive, run `.venv/bin/python tools/lint_hygiene.py baseline` and review the diff)")  # fmt: skip
        return 1
    print(f"secret scan: {len(files)} files, nothing new beyond .secrets.baseline")
    return 0


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "audit":
        return audit()
    if command == "secrets":
        return scan_secrets()
    if command == "baseline":
        return write_baseline()
    print("usage: lint_hygiene.py audit|secrets|baseline", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
