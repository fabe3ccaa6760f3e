"""The core imports no widget, plotting or cluster library, and runs without them."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_core_works_with_widgets_plotting_and_ipyparallel_unavailable(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        for name in ("ipywidgets", "matplotlib", "ipyparallel", "IPython.display"):
            sys.modules[name] = None          # any import of them now fails
        import notebookscan as ns
        scan = ns.Scan(lambda x: x * 2, ns.grid(x=[1, 2]), store={str(tmp_path / "s")!r})
        scan.run(executor="serial", progress=False)
        assert scan.results().result.values.tolist() == [2, 4]
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
