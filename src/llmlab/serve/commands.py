"""`llmlab serve`: load a model, bind the port, run the engine thread and the HTTP app under uvicorn.

The socket is bound here, before the model is loaded, and handed to uvicorn: a port in use is one
line and exit status 2 at once (not a traceback after the load), and there is no window between a
check and uvicorn's own bind in which another process could take the port.
"""

from __future__ import annotations

import errno
import socket
import sys
from pathlib import Path
from typing import Any

from llmlab.context import Context
from llmlab.errors import UserError
from llmlab.serve.config import ServeConfig


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one. A UserError says why it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise UserError(f"--host {host}: not an address of this machine ({error.strerror})") from None
    sock = socket.socket(family, kind, proto)
    # reuse a port whose old connections linger in TIME_WAIT after a restart; a live listener still blocks it
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        why = {errno.EADDRINUSE: "is in use (another server?); choose another with --port",
               errno.EACCES: "needs privileges (ports below 1024); choose another with --port",
               errno.EADDRNOTAVAIL: "is not an address of this machine"}.get(error.errno or 0, error.strerror)
        raise UserError(f"cannot listen on {host}:{port}: the port {why}"
                        if error.errno != errno.EADDRNOTAVAIL else f"--host {host}: {why}") from None
    sock.setblocking(False)
    return sock


def build(cfg: ServeConfig) -> tuple[Any, Any, str]:
    """(the FastAPI app, its engine thread (not started yet), the model's served name) for `cfg.model`."""
    # torch and the web framework are imported when the command runs: `llmlab --help` stays fast
    import torch

    from llmlab.inference.batching import ContinuousBatcher
    from llmlab.model.commands import stop_token_ids
    from llmlab.model.device import pick_device
    from llmlab.model.io import load_model
    from llmlab.serve.app import ServedModel, create_app
    from llmlab.serve.engine import EngineThread

    device = pick_device(cfg.device)
    model, tokenizer = load_model(cfg.model, device=device, dtype=torch.bfloat16 if device.type == "cuda" else None)
    if tokenizer is None:
        raise UserError(f"{cfg.model}: the model folder has no tokenizer.json")
    served = ServedModel(name=cfg.name or Path(cfg.model).resolve().name, tokenizer=tokenizer,
                         model_dir=cfg.model, max_seq_len=model.cfg.max_seq_len,
                         stop_tokens=stop_token_ids(tokenizer))
    engine = EngineThread(lambda: ContinuousBatcher(model, block_size=cfg.block_size, num_blocks=cfg.num_blocks,
                                                    max_batch=cfg.max_batch))
    return create_app(served, engine), engine, served.name


def serve(cfg: ServeConfig, ctx: Context) -> int:
    sock = bind(cfg.host, cfg.port)
    try:
        import uvicorn  # the `serve` extra: pip install 'llmlab[serve]'
    except ImportError:
        sock.close()
        raise UserError("llmlab serve needs FastAPI and uvicorn: pip install 'llmlab[serve]'") from None
    try:
        app, engine, name = build(cfg)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    engine.start()
    print(f"serving {name!r} ({cfg.model}) at http://{host}:{port}/v1 (OpenAI API; Ctrl-C stops)", file=sys.stderr,
          flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=cfg.log_requests))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C, then raises it again: the way to stop
        print("stopped", file=sys.stderr)
    finally:
        engine.close()
        sock.close()
    return 0
