// The gateway's Socket.IO endpoint seen by the official socket.io-client, over the websocket
// transport only and over HTTP long-polling only.
//
// Driven by gateway/tests/socketio.rs, which starts the gateway, passes GATEWAY_URL, tokens and
// notification ids in the environment, waits for the line "READY" on stdout, then delivers:
//   N1_ID to seller A (tenant 1, user 10), then N2_ID to seller B (tenant 1, user 11).
// Before this script starts it has already delivered MISSED_ID to seller A.
// Run alone: GATEWAY_URL=… TOKEN_A=… node --test (the variables are listed below).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through gateway/tests/socketio.rs`);
  return value;
};
const URL = env('GATEWAY_URL');
const TOKEN_A = env('TOKEN_A');
const TOKEN_B = env('TOKEN_B');
const TOKEN_OTHER_TENANT = env('TOKEN_OTHER_TENANT');
const MISSED_ID = env('MISSED_ID');
const N1_ID = env('N1_ID');
const N2_ID = env('N2_ID');
const WAIT_MS = 10_000;

/** A client that records every event it receives, in order. */
function client(name, options) {
  const socket = io(URL, { reconnection: false, timeout: WAIT_MS, ...options });
  const events = [];
  const waiters = [];
  socket.onAny((event, payload) => {
    events.push({ event, payload });
    for (const w of [...waiters]) w();
  });
  socket.on('connect_error', (err) => {
    events.push({ event: 'connect_error', payload: { message: err.message } });
    for (const w of [...waiters]) w();
  });
  /** Resolves with the first recorded event matching `pred`, waiting if needed. */
  const next = (what, pred) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const found = events.find(pred);
        if (found) {
          waiters.splice(waiters.indexOf(check), 1);
          clearTimeout(timer);
          resolve(found.payload);
        }
      };
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(check), 1);
        reject(new Error(`${name}: no ${what} within ${WAIT_MS} ms; got ${JSON.stringify(events)}`));
      }, WAIT_MS);
      waiters.push(check);
      check();
    });
  const event = (name, pred = () => true) =>
    next(name, (e) => e.event === name && pred(e.payload));
  const notification = (id) => event('new_notification', (p) => p.id === id);
  return { name, socket, events, event, notification };
}

const sellerAWebSocket = client('seller A (websocket)', {
  transports: ['websocket'],
  auth: { token: TOKEN_A },
});
const sellerAPolling = client('seller A (polling)', {
  transports: ['polling'],
  auth: { token: TOKEN_A },
});
const sellerB = client('seller B (websocket)', {
  transports: ['websocket'],
  auth: { token: TOKEN_B },
});
// Same user id and role as seller A in another tenant; token in the query string.
const otherTenant = client('other tenant seller (polling)', {
  transports: ['polling'],
  query: { token: TOKEN_OTHER_TENANT },
});
const all = [sellerAWebSocket, sellerAPolling, sellerB, otherTenant];

test('socket.io clients get what the gateway pushes', async (t) => {
  t.after(() => all.forEach((c) => c.socket.close()));

  await t.test('each transport connects and is greeted with the unread count', async () => {
    const hello = await sellerAWebSocket.event('notification_connected');
    assert.deepEqual(hello, { user_id: 10, tenant_id: 1, role: 'seller', unread_count: 1 });
    assert.equal(sellerAWebSocket.socket.io.engine.transport.name, 'websocket');
    const helloPolling = await sellerAPolling.event('notification_connected');
    assert.equal(helloPolling.unread_count, 1);
    assert.equal(sellerAPolling.socket.io.engine.transport.name, 'polling');
    assert.equal((await sellerB.event('notification_connected')).unread_count, 0);
    const other = await otherTenant.event('notification_connected');
    assert.deepEqual(other, { user_id: 10, tenant_id: 2, role: 'seller', unread_count: 0 });
  });

  await t.test('subscribe_notifications {since} replays what was missed', async () => {
    sellerAPolling.socket.emit('subscribe_notifications', { since: 0 });
    const missed = await sellerAPolling.notification(MISSED_ID);
    assert.equal(missed.sequence, 1);
    assert.equal(missed.tenant_id, 1);
    assert.deepEqual(missed.audience, { user_id: 10 });
    assert.equal(missed.type, 'unanswered_conversation');
    assert.equal((await sellerAPolling.event('notification_count_update')).count, 1);
  });

  await t.test('a bad token is refused with connect_error', async () => {
    const intruder = client('intruder', { transports: ['websocket'], auth: { token: 'nope' } });
    const refused = await intruder.event('connect_error');
    intruder.socket.close();
    assert.match(refused.message, /token/i);
  });

  // Everybody is connected and listening: let the Rust side deliver.
  console.log('READY');

  await t.test('live notifications reach both transports, with the count', async () => {
    for (const c of [sellerAWebSocket, sellerAPolling]) {
      const n1 = await c.notification(N1_ID);
      assert.equal(n1.type, 'hot_lead');
      assert.equal(n1.priority, 'urgent');
      assert.ok(n1.sequence > 1, `sequence ${n1.sequence}`);
      await c.event('notification_count_update', (p) => p.count === 2);
    }
  });

  await t.test('mark_notification_read answers with notification_marked_read', async () => {
    sellerAWebSocket.socket.emit('mark_notification_read', { notification_id: N1_ID });
    const marked = await sellerAWebSocket.event('notification_marked_read');
    assert.deepEqual(marked, { notification_id: N1_ID, count: 1 });
    // The user's other connection hears about it.
    await sellerAPolling.event('notification_count_update', (p) => p.count === 1);
  });

  await t.test("a seller does not receive another seller's notifications", async () => {
    // B's own notification was delivered after A's, on the same ordered path.
    const n2 = await sellerB.notification(N2_ID);
    assert.deepEqual(n2.audience, { user_id: 11 });
    const seenByB = sellerB.events.filter((e) => e.event === 'new_notification');
    assert.deepEqual(seenByB.map((e) => e.payload.id), [N2_ID]);
    for (const c of [sellerAWebSocket, sellerAPolling]) {
      assert.ok(!c.events.some((e) => e.payload?.id === N2_ID), `${c.name} got B's notification`);
    }
    // Nothing at all crosses tenants.
    assert.ok(!otherTenant.events.some((e) => e.event === 'new_notification'));
  });
});
