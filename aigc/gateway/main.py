"""`aigc up`: start the gateway, deploy every function of the stack, serve until stopped."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from .. import stack as stack_mod
from . import deploy
from .core import Gateway, Options, default_state_dir, gateway_limits
from .server import create_app


async def serve(stack_path: Path, host: str, port: int, state_dir: Path | None = None,
                runtime: str = "process") -> int:
    st = stack_mod.load(stack_path)
    state_dir = state_dir or default_state_dir()
    # like faas-cli, templates come from ./template in the working directory
    root = Path.cwd() if (Path.cwd() / "template").is_dir() else stack_path.resolve().parent
    try:
        limits = gateway_limits(os.environ)
    except ValueError as exc:
        print(f"aigc up: {exc}", file=sys.stderr)
        return 2
    gw = Gateway(st, Options(state_dir=state_dir, root=root, runtime=runtime, **limits))
    for warning in gw.launcher.warnings():
        print(f"aigc up: warning: {warning}", file=sys.stderr, flush=True)
    await gw.start()
    # bodies pass through as sent, Content-Encoding and all, as OpenFaaS's reverse proxy does: the function
    # reads gzip itself (tritonclient's request compression), and a call queued for later keeps its bytes
    runner = web.AppRunner(create_app(gw), access_log=None, auto_decompress=False)
    try:
        for fn in st.functions.values():
            if gw.runs_images and not await asyncio.to_thread(gw.launcher.podman.image_exists, fn.image):
                # as faasd: a function whose image is not there is not deployed; say how to get it
                print(f"  {fn.name}: not deployed: image {fn.image} is not built "
                      f"(aigc images build {fn.name})", flush=True)
                continue
            await gw.deploy(deploy.from_stack(fn, gw.options.max_replicas))
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        print(f"gateway: http://{host}:{port}  state: {state_dir}", flush=True)
        if gw.password_created:
            print(f"admin password (printed once; stored in {state_dir / 'secrets' / 'basic-auth-password'}): "
                  f"{gw.password}", flush=True)
        for name, pool in gw.pools.items():
            print(f"  {name}: /function/{name}  replicas={len(pool.active)}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    except deploy.DeployError as exc:
        print(f"aigc up: {exc}", file=sys.stderr)
        return 2
    finally:
        await runner.cleanup()
        await gw.close()


def main(stack_path: str, host: str, port: int, runtime: str = "process") -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(serve(Path(stack_path), host, port, runtime=runtime))
