#!/usr/bin/env python3
"""An example job script in Python (examples/two-hosts.ts does the same in TypeScript).

It reserves two machines at once (one gang: Paddock grants both or neither), waits until both are
ready while showing progress, runs commands on both in parallel over SSH, writes a file on `build`,
brings it back to this machine and sends it on to `test`, checks it arrived intact, and releases
both when the `with` block ends, whatever happens in between.

    pip install clients/python        # or, on Debian: see the README's "Python" section
    PADDOCK_URL=http://127.0.0.1:7300 PADDOCK_TOKEN=… PADDOCK_EXAMPLE_IMAGE=debian-tiny \\
      python3 examples/two-hosts.py

PADDOCK_EXAMPLE_SPEC picks the machines (default `arch=x86_64`; `paddock explain SPEC` shows what a
spec matches) and PADDOCK_EXAMPLE_IMAGE the image they boot (VMs need one; static hosts ignore it).
The script exits non-zero if anything fails.
"""

from __future__ import annotations

import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from paddock import EventView, MemberRequest, Paddock, PaddockError, Progress


def main() -> int:
    spec = os.environ.get("PADDOCK_EXAMPLE_SPEC", "arch=x86_64")
    image = os.environ.get("PADDOCK_EXAMPLE_IMAGE") or None
    try:
        paddock = Paddock()  # reads PADDOCK_URL and PADDOCK_TOKEN
        # The reservation is released when the `with` block ends, by success or by error. Until then
        # the client renews the lease in the background.
        with paddock.reserve(
            [MemberRequest("build", spec, image=image), MemberRequest("test", spec, image=image)],
            lease="10m",
        ) as reservation, tempfile.TemporaryDirectory(prefix="paddock-example-") as local:
            print(f"reserved {reservation.id} ({reservation.state})", flush=True)

            # Progress: state changes of the reservation and readiness stages of each machine.
            def show(update: Progress) -> None:
                if isinstance(update, EventView):
                    print(f"  {update.machine or reservation.id}: {update.to}", flush=True)
                elif update.queue_position:
                    print(f"  waiting in the queue at position {update.queue_position}", flush=True)

            reservation.ready(timeout=300, on_progress=show)
            for allocation in reservation.view.allocations:
                print(f"{allocation.role}: {allocation.machine} at {allocation.user}@{allocation.host}:{allocation.port}")

            # The same commands on both machines at once. A command that fails is no exception by
            # itself: look at `code`.
            def ask(role: str) -> tuple[str, str, str]:
                uname, hostname = reservation.run(role, "uname -a"), reservation.run(role, "hostname")
                for result in (uname, hostname):
                    if result.code != 0:
                        raise RuntimeError(f"{role}: exit {result.code}: {result.stderr.strip()}")
                return role, uname.stdout.strip(), hostname.stdout.strip()

            with ThreadPoolExecutor(max_workers=2) as pool:
                answers = list(pool.map(ask, ["build", "test"]))
            for role, uname, hostname in answers:
                print(f"{role} says: {uname} (hostname {hostname})")

            # A file made on `build`, copied to this machine, then on to `test`; its checksum proves
            # it arrived intact.
            remote = f"/tmp/paddock-example-{reservation.id}.txt"
            artifact = Path(local) / "artifact.txt"
            made = reservation.run("build", f"printf 'built by %s on %s\\n' \"$(id -un)\" \"$(hostname)\" > {remote} && sha256sum {remote}")
            if made.code != 0:
                raise RuntimeError(f"build: could not write {remote}: {made.stderr.strip()}")
            expected = made.stdout.split(" ")[0]
            reservation.copy_from("build", remote, artifact)
            reservation.copy_to("test", artifact, f"{remote}.copy")
            check = reservation.run("test", f"sha256sum {remote}.copy")
            reservation.run("build", f"rm -f {remote}")
            reservation.run("test", f"rm -f {remote}.copy")
            if check.code != 0 or check.stdout.split(" ")[0] != expected:
                raise RuntimeError(f"the copy on test differs from the file on build ({check.stdout.strip() or check.stderr.strip()})")
            print(f"copied build:{remote} to test intact: {artifact.read_text().strip()}")

            hosts = ", ".join(f"{role}={hostname}" for role, _, hostname in answers)
            print(f"summary: {hosts}; file checksum {expected[:12]}…; releasing {reservation.id}")
        return 0
    except (PaddockError, RuntimeError) as error:
        code = f" ({error.code})" if isinstance(error, PaddockError) else ""
        print(f"job failed: {error}{code}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
