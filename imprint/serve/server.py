"""Running the app: `serve()` for `imprint serve`, and `BackgroundServer` for tests and scripts, which starts real
uvicorn on 127.0.0.1 on a free port in a thread and stops it on exit:

    with BackgroundServer(create_app(ws_dir, model="tiny")) as server:
        openai.OpenAI(base_url=server.url, api_key="k").chat.completions.create(...)
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None, timeout: float = 30.0):
        self.app = app
        self.host = host
        self.port = port or free_port(host)
        self.timeout = timeout
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="imprint-uvicorn", daemon=True)

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL (ends in /v1)."""
        return f"{self.root}/v1"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.root}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(self.timeout)


def serve(app, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted (Ctrl-C)."""
    uvicorn.run(app, host=host, port=port, log_level="info")
