// The Node.js socket.io 4 peer of `vigia bench gateway-peers` (src/bench/gateway_peers.rs).
// Installed by scripts/bench-gateway-peers.sh (NODE_PATH = its node_modules), never committed.
//
// WebSocket transport only, connection-state recovery on (the durability nearest to Vigía's
// inbox: a client that reconnects within 2 min gets what it missed). Each socket joins the room
// `all` and its own `u<user>` (the user id from the handshake's auth; unchecked, like every
// peer in the benchmark that is not Centrifugo). `POST /publish {room, data}` emits
// `new_notification` with `data` to the room; `GET /health` answers once listening.
"use strict";
const http = require("node:http");
const { Server } = require("socket.io");

const port = Number(process.env.PORT);
if (!port) {
  console.error("PORT is not set");
  process.exit(2);
}

const server = http.createServer((req, res) => {
  if (req.method === "POST" && req.url === "/publish") {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString());
      } catch (e) {
        res.writeHead(400).end(`body is not JSON: ${e.message}`);
        return;
      }
      if (typeof body.room !== "string" || body.data === undefined) {
        res.writeHead(400).end("body needs {room, data}");
        return;
      }
      io.to(body.room).emit("new_notification", body.data);
      res.writeHead(204).end();
    });
  } else if (req.method === "GET" && req.url === "/health") {
    res.writeHead(200).end("ok");
  } else {
    res.writeHead(404).end();
  }
});

const io = new Server(server, {
  transports: ["websocket"],
  connectionStateRecovery: { maxDisconnectionDuration: 2 * 60 * 1000, skipMiddlewares: true },
});

io.on("connection", (socket) => {
  const user = socket.handshake.auth && socket.handshake.auth.user;
  if (user === undefined) {
    socket.disconnect(true);
    return;
  }
  socket.join("all");
  socket.join(`u${user}`);
});

server.listen(port, "127.0.0.1");
