"""A writer killed with SIGKILL in the middle of a commit loses nothing.

A real child process streams rows into a commit; once it is inside
`write_deltalake` (it has handed over several batches), the test kills it
with SIGKILL. The previous version must still be the latest, readable and
unchanged, and a rerun of the same write must finish it without duplicates.
The report the writer attaches (`store.reports`) goes with its rows: the
killed commit leaves no report on any version, and the rerun's version
carries it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from store.record import to_table
from store.reports import Report
from store.store import Store

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import pyarrow as pa
    from store.lineage import Lineage
    from store.record import SAMPLE_SCHEMA, validate_sample
    from store.reports import Report
    from store.store import Store

    root, marker = sys.argv[1], Path(sys.argv[2])

    def batches():
        for b in range(60):
            rows = [
                validate_sample({
                    "prompt": f"killed-writer row {b}-{i}",
                    "completion": "x" * 2000,
                    "domain": "math", "track": "reasoning", "source": "kill-test",
                })
                for i in range(200)
            ]
            yield pa.RecordBatch.from_pylist(rows, schema=SAMPLE_SCHEMA)
            if b == 20:
                marker.write_text("inside the commit")  # the parent kills us from here on
            if b >= 20:
                time.sleep(0.2)

    report = Report("test.run", "Run", {"batches": 60})
    Store(root).commit("t", batches(), lineage=Lineage(writer="doomed"), reports=[report])
    print("finished, which the test must prevent")
    """
)


def test_sigkill_mid_commit_leaves_previous_version_intact(store, rows, lineage, tmp_path):
    first = Report("test.run", "Run", {"batches": 1})
    store.commit("t", to_table(rows(50)), lineage=lineage, reports=[first])
    before = store.read("t").sort("sample_id")
    before_hash = store.content_hash("t")
    marker = tmp_path / "marker"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, store.root, str(marker)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        assert time.monotonic() < deadline, "child never reached the commit"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert b"finished" not in out

    # The old version is still the latest, and reads back unchanged.
    reopened = Store(store.root)
    assert reopened.latest_version("t") == 0
    assert reopened.read("t").sort("sample_id").equals(before)
    assert reopened.content_hash("t") == before_hash
    assert [c.lineage.writer for c in reopened.history("t") if c.lineage] == ["tests"]
    # The killed writer's report is nowhere: version 0 still has only its own.
    kept = reopened.reports("t")
    assert [(r.report, r.version) for r in kept.reports] == [(first, 0)]

    # Rerunning the whole write finishes the work without duplicates.
    subprocess.run(
        [sys.executable, "-c", CHILD.replace("time.sleep(0.2)", "pass"), store.root, str(marker)],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    rerun = reopened.reports("t")
    assert [(r.report.data, r.version, r.writer) for r in rerun.reports] == [
        ({"batches": 60}, 1, "doomed")
    ]
    after = reopened.read("t", columns=["sample_id"]).get_column("sample_id")
    assert after.len() == 50 + 60 * 200
    assert after.n_unique() == after.len()
    # Whatever the killed writer left behind is unreferenced; vacuum removes only that.
    reopened.vacuum("t", dry_run=False)
    assert reopened.read("t", 0).sort("sample_id").equals(before)
    assert reopened.read("t").height == 50 + 60 * 200
