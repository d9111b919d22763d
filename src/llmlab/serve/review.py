"""`llmlab review serve`: load and check the pairs (and the judges' label files), open the label store,
bind the port, and run the review page under uvicorn until Ctrl-C.

Everything that can be wrong with the input is found before the first byte is written or the port is
bound: a malformed pairs line is one line `error: FILE:LINE: ...` and exit status 2. The row format and
how labels are kept are in review_log.py; the page and its API in review_app.py.
"""

from __future__ import annotations

import sys

from llmlab.context import Context
from llmlab.errors import UserError
from llmlab.serve.config import ReviewConfig
from llmlab.serve.review_agreement import load_judge_labels, parse_compare
from llmlab.serve.review_log import LabelLog, labels_path, load_pairs


def review_serve(cfg: ReviewConfig, ctx: Context) -> int:
    pairs = load_pairs(cfg.pairs)
    judges = {name: load_judge_labels(path, pairs) for name, path in parse_compare(cfg.compare).items()}
    try:
        # the web framework is imported when the command runs: `llmlab --help` stays fast
        import uvicorn

        from llmlab.serve.review_app import create_review_app
    except ImportError:
        raise UserError("llmlab review serve needs FastAPI and uvicorn: pip install 'llmlab[serve]'") from None
    from llmlab.serve.commands import bind

    log = LabelLog(cfg.out, pairs, seed=cfg.seed)
    try:
        sock = bind(cfg.host, cfg.port)
        host, port = sock.getsockname()[:2]
        where = "all done" if log.current() is None else f"next: pair {log.current()}"
        print(f"reviewing {len(pairs)} pairs from {cfg.pairs} ({len(log.rows)} labelled, {where}) at "
              f"http://{host}:{port}/ (agreement: /agreement; labels: {labels_path(cfg.out)}, preferences: "
              f"{cfg.out}; Ctrl-C stops)", file=sys.stderr, flush=True)
        server = uvicorn.Server(uvicorn.Config(create_review_app(log, judges), log_level="warning", access_log=False))
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C, then raises it again
            print("stopped", file=sys.stderr)
        finally:
            sock.close()
    finally:
        log.close()
    return 0
