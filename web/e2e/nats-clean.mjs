// Deletes the JetStream streams whose names start with a prefix: what one e2e run made.
// A few lines of the NATS text protocol instead of a client library.
//   node nats-clean.mjs nats://127.0.0.1:4222 PREFIX_
import net from 'node:net';

const [url, prefix] = process.argv.slice(2);
if (!url || !prefix) {
  console.error('usage: nats-clean.mjs NATS_URL STREAM_PREFIX');
  process.exit(2);
}
const { hostname, port } = new URL(url.replace(/^nats:/, 'http:'));

function request(socket, reader, subject, body) {
  const inbox = `_INBOX.e2e${Math.random().toString(36).slice(2)}`;
  const sid = String(Math.floor(Math.random() * 1e9));
  socket.write(`SUB ${inbox} ${sid}\r\nPUB ${subject} ${inbox} ${Buffer.byteLength(body)}\r\n${body}\r\n`);
  return reader(sid);
}

const socket = net.connect(Number(port || 4222), hostname);
let buffer = '';
const waiting = new Map();
socket.on('data', (chunk) => {
  buffer += chunk.toString('utf8');
  for (;;) {
    const end = buffer.indexOf('\r\n');
    if (end < 0) return;
    const line = buffer.slice(0, end);
    if (line.startsWith('MSG ')) {
      const parts = line.split(' ');
      const size = Number(parts[parts.length - 1]);
      if (buffer.length < end + 2 + size + 2) return;
      const payload = buffer.slice(end + 2, end + 2 + size);
      buffer = buffer.slice(end + 2 + size + 2);
      const resolve = waiting.get(parts[2]);
      waiting.delete(parts[2]);
      resolve?.(JSON.parse(payload));
      continue;
    }
    buffer = buffer.slice(end + 2);
    if (line.startsWith('PING')) socket.write('PONG\r\n');
    if (line.startsWith('-ERR')) console.error(line);
  }
});
const reader = (sid) =>
  new Promise((resolve, reject) => {
    waiting.set(sid, resolve);
    setTimeout(() => reject(new Error('no answer from NATS')), 5000).unref();
  });

socket.once('connect', async () => {
  try {
    socket.write('CONNECT {"verbose":false,"pedantic":false,"headers":false}\r\n');
    const names = await request(socket, reader, '$JS.API.STREAM.NAMES', '{}');
    const mine = (names.streams ?? []).filter((n) => n.startsWith(prefix));
    for (const name of mine) {
      await request(socket, reader, `$JS.API.STREAM.DELETE.${name}`, '');
    }
    console.error(`nats-clean: deleted ${mine.length} stream(s) starting with ${prefix}`);
    socket.end();
    process.exit(0);
  } catch (err) {
    console.error(`nats-clean: ${err.message}`);
    process.exit(1);
  }
});
socket.on('error', (err) => {
  console.error(`nats-clean: ${err.message}`);
  process.exit(1);
});
