"""The python-socketio peer of `vigia bench gateway-peers` (src/bench/gateway_peers.rs).

Installed by scripts/bench-gateway-peers.sh into a virtualenv (python-socketio, aiohttp,
uvloop), never committed. WebSocket transport only; python-socketio has no connection-state
recovery (nothing is kept for a client that reconnects), so none is configured. Each client
joins the room `all` and its own `u<user>` (the user id from the handshake's auth, unchecked).
`POST /publish {room, data}` emits `new_notification` with `data` to the room; `GET /health`
answers once listening.
"""

import os
import sys

import socketio
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", transports=["websocket"])
app = web.Application()
sio.attach(app)


@sio.event
async def connect(sid, environ, auth):
    user = (auth or {}).get("user")
    if user is None:
        raise socketio.exceptions.ConnectionRefusedError("auth.user is missing")
    await sio.enter_room(sid, "all")
    await sio.enter_room(sid, f"u{user}")


async def publish(request):
    try:
        body = await request.json()
        room, data = body["room"], body["data"]
    except (ValueError, KeyError, TypeError) as e:
        return web.Response(status=400, text=f"body needs {{room, data}}: {e}")
    await sio.emit("new_notification", data, room=room)
    return web.Response(status=204)


async def health(_request):
    return web.Response(text="ok")


app.router.add_post("/publish", publish)
app.router.add_get("/health", health)

if __name__ == "__main__":
    port = os.environ.get("PORT")
    if not port:
        sys.exit("PORT is not set")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=int(port), access_log=None, print=None)
