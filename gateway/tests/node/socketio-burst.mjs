// A CEO on the gateway's Socket.IO endpoint (websocket transport) reading a long burst of big
// notifications while unread recounts fall due. Driven by gateway/tests/socketio.rs, which
// delivers TOTAL notifications to the CEO role once this script prints READY. Exits 0 once all
// arrived; 1 if the gateway drops the connection (printing DISCONNECTED and the reason), refuses
// it, or WAIT_MS (default 60 s) pass.
import { io } from 'socket.io-client';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through gateway/tests/socketio.rs`);
  return value;
};
const TOTAL = Number(env('TOTAL'));
const socket = io(env('GATEWAY_URL'), {
  reconnection: false,
  transports: ['websocket'],
  auth: { token: env('TOKEN_CEO') },
});
let received = 0;
let ended = false;
const end = (code, what) => {
  if (ended) return; // closing the socket below fires 'disconnect'
  ended = true;
  console.log(`${what}: ${received} of ${TOTAL} notifications`);
  socket.close();
  process.exit(code);
};
// PAUSE_MS: stop reading the socket for that long once connected (a frozen browser tab).
const PAUSE_MS = Number(process.env.PAUSE_MS ?? 0);
socket.on('notification_connected', () => {
  if (PAUSE_MS > 0) {
    const ws = socket.io.engine.transport.ws; // the `ws` package's WebSocket
    ws.pause();
    setTimeout(() => ws.resume(), PAUSE_MS);
  }
  console.log('READY');
});
socket.on('new_notification', () => {
  received += 1;
  if (received >= TOTAL) end(0, 'RECEIVED');
});
socket.on('disconnect', (reason) => end(1, `DISCONNECTED (${reason})`));
socket.on('connect_error', (err) => end(1, `CONNECT_ERROR (${err.message})`));
const WAIT_MS = Number(process.env.WAIT_MS ?? 60_000);
setTimeout(() => end(1, `TIMEOUT after ${WAIT_MS} ms`), WAIT_MS);
