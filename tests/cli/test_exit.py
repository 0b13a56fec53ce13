"""The console script's exit: what is left is frozen out of the interpreter's last collection,
once the outputs are complete."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

# The child's own exit handler is registered before gapscope's; exit handlers run last in,
# first out, so it runs after gapscope's and sees what the interpreter's collection will see.
_CHILD = textwrap.dedent(
    """
    import atexit, gc, json, sys

    out = sys.argv[-1]

    def seen():
        # Before anything else is made here: what a collection would still visit.
        tracked = {id(o) for o in gc.get_objects()}
        visible = sorted(n for n, m in sys.modules.items() if id(vars(m)) in tracked)
        with open(out, encoding="utf-8") as f:
            report = json.load(f)
        print("EXIT " + json.dumps({
            "frozen": gc.get_freeze_count(),
            "tracked": len(tracked),
            "visible": visible,
            "modules": len(sys.modules),
            "keys": sorted(report),
        }))

    atexit.register(seen)
    from gapscope.cli import main

    sys.argv = ["gapscope", *sys.argv[1:]]
    main()
    """
)


def test_the_objects_left_at_exit_are_frozen_after_the_report_is_written(tmp_path: Path):
    rng = np.random.default_rng(0)
    for name in ("image", "text"):
        np.save(tmp_path / f"{name}.npy", rng.standard_normal((40, 8)).astype(np.float32))
    out = tmp_path / "report.json"
    args = ["analyze", "--image", "image.npy", "--text", "text.npy", "--metrics", "gap"]
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *args, "-q", "-f", "json", "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    line = next(s for s in proc.stdout.splitlines() if s.startswith("EXIT "))
    seen = json.loads(line.removeprefix("EXIT "))
    # The report was complete when the freeze ran.
    assert "pairs" in seen["keys"]
    # Every module's namespace, those the command imported included, is out of the
    # collections' reach: the freeze ran at exit, not before the command.
    assert seen["modules"] > 100
    assert seen["visible"] == []
    assert seen["tracked"] < seen["frozen"] / 100


def test_main_registers_the_freeze_once_however_often_it_runs():
    code = textwrap.dedent(
        """
        import atexit, gc, sys

        calls = []
        freeze = gc.freeze

        def counted():
            calls.append(1)
            freeze()

        gc.freeze = counted  # what main() registers, looked up when it runs
        atexit.register(lambda: print("FREEZES", len(calls)))  # runs after main()'s handler
        from gapscope.cli import main

        for _ in range(3):
            sys.argv = ["gapscope", "--version"]
            try:
                main()
            except SystemExit:
                pass
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "FREEZES 1"
