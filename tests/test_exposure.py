"""Exposure: local bind by default, no unauthenticated network bind, no secrets in messages or
logs, no remote code unless asked, and SQL built only by SQLAlchemy with bound parameters."""

import ast
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from minillm_dash.db import Database, DatabaseOpenError
from minillm_dash.modeling import ModelSource

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import app  # noqa: E402


def test_default_bind_is_local_and_network_binds_need_auth():
    assert app.parse_args([]).host == "127.0.0.1"
    assert app.check_exposure("127.0.0.1", None) is None
    assert app.check_exposure("0.0.0.0", ("u", "p")) is None
    message = app.check_exposure("0.0.0.0", None)
    assert message and "--auth" in message


def test_app_refuses_a_public_bind_without_auth_before_starting():
    result = subprocess.run([sys.executable, "app.py", "--host", "0.0.0.0"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    print(f"refused: {result.stderr.strip()}")
    assert result.returncode == 2 and "refusing to serve on 0.0.0.0" in result.stderr


def test_database_password_never_appears_in_errors_or_logs(caplog):
    url = "postgresql+psycopg2://alice:s3cret-pw@127.0.0.1:9/nowhere"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DatabaseOpenError) as err:
        Database(url)
    assert "s3cret-pw" not in str(err.value) and "***" in str(err.value)
    assert "s3cret-pw" not in caplog.text
    print(f"refused without the password: {err.value}")


def test_remote_code_stays_off_unless_asked():
    for text in ["someorg/some-model", "hub:someorg/m", "default", "tiny"]:
        assert ModelSource.parse(text).trust_remote_code is False
    assert ModelSource.parse("someorg/m", trust_remote_code=True).trust_remote_code is True


def _sql_strings_built_at_run_time(path: Path) -> list[str]:
    """execute()/text() calls whose SQL is an f-string, a .format() or a % expression."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = getattr(node.func, "attr", getattr(node.func, "id", ""))
        if name not in ("execute", "exec_driver_sql", "text", "executescript"):
            continue
        arg = node.args[0]
        dynamic = isinstance(arg, ast.JoinedStr) or isinstance(arg, ast.BinOp) or (
            isinstance(arg, ast.Call) and getattr(arg.func, "attr", "") == "format")
        if dynamic:
            source = ast.get_source_segment(path.read_text(), arg) or ""
            # PRAGMAs cannot take bound parameters; the only one is built from an int constant.
            if source.startswith('f"PRAGMA busy_timeout = {int('):
                continue
            found.append(f"{path.name}:{node.lineno}: {source}")
    return found


def test_sql_is_only_built_by_sqlalchemy_with_bound_parameters():
    offenders = [hit for path in sorted((ROOT / "minillm_dash").glob("*.py")) for hit in
                 _sql_strings_built_at_run_time(path)]
    assert offenders == [], offenders
