"""The fake upstream of bench/relay.py's busy harness: the same app as `copilot fake-upstream`,
served the way a plain Starlette app is: mounted in a Starlette application, on uvicorn's
pure-Python stack (the asyncio event loop instead of uvloop, h11 instead of httptools).

Every event of every stream then costs this process several times what it costs
`copilot fake-upstream` (uvloop, httptools, raw ASGI): bench/relay.py's docstring gives the
measured factor. The wire format is identical, so the server under test sees the same bytes;
only the load on the shared cores differs.

    python bench/busy_upstream.py --port 8100
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from app.devtools.fake_upstream import FakeUpstreamApp


def main() -> None:
    """Serve the fake upstream on 127.0.0.1 with uvicorn's asyncio loop and h11."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = Starlette(routes=[Mount("/", app=FakeUpstreamApp())])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="asyncio",
        http="h11",
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
