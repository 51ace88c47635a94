"""Start the minillm-dash dashboard.

    python app.py [--host 127.0.0.1] [--port 7860] [--db URL] [--auth user:password]
                  [--max-upload-mb 50] [--max-concurrent 2]

Binds to 127.0.0.1 by default. Serving on any other address needs --auth: the dashboard can load
models from arbitrary folders and run training, which nobody else on the network should trigger.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported anywhere

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
log = logging.getLogger("minillm_dash.app")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="minillm-dash: compare knowledge-distillation loss variants side by side")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--db", default=None, help="SQLAlchemy URL (default: SQLite under storage/)")
    ap.add_argument("--auth", default=None, help="user:password required to open the dashboard")
    ap.add_argument("--max-upload-mb", type=float, default=50.0)
    ap.add_argument("--max-concurrent", type=int, default=2, help="runs training at the same time")
    return ap.parse_args(argv)


def parse_auth(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise SystemExit("--auth must look like user:password")
    return user, password


def check_exposure(host: str, auth: tuple[str, str] | None) -> str | None:
    """A refusal message when the dashboard would be reachable from the network without a password."""
    if host not in LOCAL_HOSTS and auth is None:
        return (f"refusing to serve on {host} without --auth user:password: anyone who can reach this address "
                "could load models and start training. Add --auth, or bind to 127.0.0.1.")
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    auth = parse_auth(args.auth)
    refusal = check_exposure(args.host, auth)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up HTTP checks
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

    from minillm_dash.db import Database, DatabaseOpenError
    from minillm_dash.runner import Runner, configure_cpu_threads

    try:
        db = Database(args.db)
    except DatabaseOpenError as exc:  # its message already masks the password
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("database: %s", db.safe_url)  # never the raw URL: it may hold a password
    interrupted = db.mark_interrupted()
    if interrupted:
        log.info("%d run(s) of a previous process marked interrupted", interrupted)

    from minillm_dash import ui

    configure_cpu_threads(args.max_concurrent)
    runner = Runner(db, max_concurrent=args.max_concurrent)
    demo = ui.build_demo(db, runner, max_upload_mb=args.max_upload_mb)
    demo.queue(default_concurrency_limit=4)
    try:
        demo.launch(server_name=args.host, server_port=args.port, auth=auth,
                    max_file_size=f"{args.max_upload_mb:g}mb", allowed_paths=ui.allowed_paths(),
                    css=ui.CSS, show_error=True)
    finally:
        runner.shutdown(cancel=True)
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
