"""The engine must run headless: importing it must not pull in gradio or plotly."""

import subprocess
import sys

ENGINE = ["losses", "chunked", "variants", "objective", "config", "data", "modeling", "rollout", "trainer",
          "evaluation", "runner", "db", "metric_writer", "export", "cli", "text_metrics", "tiny"]


def test_engine_modules_import_neither_gradio_nor_plotly():
    code = ("import sys\n"
            + "".join(f"import minillm_dash.{m}\n" for m in ENGINE)
            + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'plotly'))\n"
              "print(bad)\nsys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"engine imported UI packages: {result.stdout} {result.stderr}"
