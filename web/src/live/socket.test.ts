import { describe, expect, it } from 'vitest';
import { Api } from '../api/client';
import { LiveSocket, type SocketLike } from './socket';

class FakeSocket implements SocketLike {
  static all: FakeSocket[] = [];
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  sent: unknown[] = [];
  constructor(public url: string) {
    FakeSocket.all.push(this);
  }
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close() {
    this.readyState = 3;
  }
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  receive(m: unknown) {
    this.onmessage?.({ data: JSON.stringify(m) });
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code, reason: '' });
  }
}

function setup(refreshOk = true) {
  FakeSocket.all = [];
  let tickets = 0;
  const requests: string[] = [];
  const fetchFn = (async (url: string) => {
    requests.push(String(url));
    if (String(url).endsWith('/api/ws/ticket')) {
      tickets++;
      return new Response(JSON.stringify({ ticket: `t${tickets}`, expires_in: 30 }), { status: 200 });
    }
    if (String(url).endsWith('/api/auth/refresh')) {
      return refreshOk
        ? new Response(JSON.stringify({ user: { id: 'u' }, token: 'fresh', token_type: 'Bearer', expires_in: 900 }), { status: 200 })
        : new Response('{}', { status: 401 });
    }
    throw new Error(`unexpected ${url}`);
  }) as unknown as typeof fetch;
  const api = new Api({ fetch: fetchFn, locks: null, setTimer: () => 0, clearTimer: () => undefined });
  api.adopt({ user: { id: 'u' } as never, token: 'tok', token_type: 'Bearer', expires_in: 900 });
  const timers: (() => void)[] = [];
  const live = new LiveSocket(api, {
    WebSocket: FakeSocket,
    url: (t) => `ws://hub/api/ws?ticket=${t}`,
    setTimer: (fn, ms) => {
      if (ms < 40_000) timers.push(fn);
      return fn;
    },
    clearTimer: () => undefined,
  });
  return { live, timers, requests };
}

const flush = () => new Promise((r) => setTimeout(r, 0));

describe('LiveSocket', () => {
  it('connects with a one-use ticket and hands balance pushes to subscribers', async () => {
    const { live } = setup();
    const seen: unknown[] = [];
    live.subscribe((m) => seen.push(m));
    live.start();
    await flush();
    expect(FakeSocket.all[0].url).toBe('ws://hub/api/ws?ticket=t1');
    FakeSocket.all[0].open();
    expect(live.status).toBe('open');
    FakeSocket.all[0].receive({ type: 'balance.updated', balance_micros: 5, reserved_micros: 0, available_micros: 5, version: 3 });
    expect(seen).toEqual([{ type: 'balance.updated', balance_micros: 5, reserved_micros: 0, available_micros: 5, version: 3 }]);
  });

  it('streams a chat: started, chunks in order, done with tokens and credits; cancel sends chat.cancel', async () => {
    const { live } = setup();
    live.start();
    await flush();
    const s = FakeSocket.all[0];
    s.open();
    let text = '';
    let done: unknown = null;
    expect(live.startChat('c1', 'mock-1', [{ role: 'user', content: 'hi' }], { max_tokens: 8 }, { onChunk: (d) => (text += d), onDone: (m) => (done = m) })).toBe(true);
    expect(s.sent[0]).toEqual({ type: 'chat.start', id: 'c1', model: 'mock-1', messages: [{ role: 'user', content: 'hi' }], options: { max_tokens: 8 } });
    s.receive({ type: 'chat.started', id: 'c1', request_id: 'r', provider: 'mock' });
    s.receive({ type: 'chat.chunk', id: 'c1', seq: 0, delta: 'Hel' });
    s.receive({ type: 'chat.chunk', id: 'c1', seq: 1, delta: 'lo' });
    live.cancelChat('c1');
    expect(s.sent[1]).toEqual({ type: 'chat.cancel', id: 'c1' });
    s.receive({ type: 'chat.done', id: 'c1', finish_reason: 'stop', usage: { prompt_tokens: 3, completion_tokens: 2 }, credits_charged_micros: 7 });
    expect(text).toBe('Hello');
    expect(done).toMatchObject({ credits_charged_micros: 7, usage: { completion_tokens: 2 } });
  });

  it('reconnects with a fresh ticket when the socket drops, and fails the chats it carried', async () => {
    const { live, timers } = setup();
    live.start();
    await flush();
    FakeSocket.all[0].open();
    let error: unknown = null;
    live.startChat('c1', 'mock-1', [], {}, { onError: (e) => (error = e) });
    FakeSocket.all[0].drop(1006);
    expect(error).toMatchObject({ code: 'disconnected' });
    expect(live.status).toBe('closed');
    timers.shift()!();
    await flush();
    expect(FakeSocket.all[1].url).toBe('ws://hub/api/ws?ticket=t2');
  });

  it('on 4401 refreshes the access token before reconnecting; on 4403 stops for good', async () => {
    const { live, timers, requests } = setup();
    live.start();
    await flush();
    FakeSocket.all[0].open();
    FakeSocket.all[0].drop(4401);
    await flush();
    expect(requests).toContain('/api/auth/refresh');
    timers.shift()!();
    await flush();
    expect(FakeSocket.all).toHaveLength(2);
    FakeSocket.all[1].open();
    FakeSocket.all[1].drop(4403);
    expect(live.status).toBe('suspended');
    expect(timers).toHaveLength(0);
  });

  it('does not start a chat while not connected, and stop() closes without reconnecting', async () => {
    const { live, timers } = setup();
    expect(live.startChat('c', 'm', [], {}, {})).toBe(false);
    live.start();
    await flush();
    FakeSocket.all[0].open();
    live.stop();
    expect(live.status).toBe('idle');
    expect(timers).toHaveLength(0);
  });
});
