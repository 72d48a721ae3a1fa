"""`make test`: run pytest against real PostgreSQL and NATS, starting embedded ones when none are given.

A run that collects no test is a failure, not a pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from plexsync.devstack import infra
from plexsync.devstack.stack import Stack, StackState

NO_TESTS_COLLECTED = 5


def main(argv: list[str]) -> int:
    # Every run starts from empty servers of its own, so two runs side by side don't share or stop each other's.
    state_dir = infra.DEV_DIR / f"test-{os.getpid()}"
    stack = Stack(state_dir)
    state = stack.ensure_infra(StackState())
    env = {**os.environ, "DATABASE_URL": state.database_url, "NATS_URL": state.nats_url}
    print(
        f"test infrastructure: postgres {'embedded' if state.owns_postgres else 'external'}, "
        f"nats {'embedded' if state.owns_nats else 'external'}",
        flush=True,
    )
    try:
        code = subprocess.call([sys.executable, "-m", "pytest", *argv], env=env)
    finally:
        stack.down()
        shutil.rmtree(state_dir, ignore_errors=True)
    if code == NO_TESTS_COLLECTED:
        print("pytest collected no tests: treating that as a failure", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
