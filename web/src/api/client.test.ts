import { describe, expect, it, vi } from 'vitest';
import { Api, ApiError, buildUrl } from './client';

const user = { id: 'u1', email: 'a@example.com', email_verified: true, display_name: null, roles: ['user'], role: 'user', has_password: true, google_linked: false, created_at: null };

function json(status: number, body: unknown, headers: Record<string, string> = {}) {
  return new Response(body === undefined ? null : JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}

/** A client on a fake clock and a scripted fetch. */
function setup(script: ((url: string, init: RequestInit) => Response | Promise<Response>)[]) {
  let now = 1_000_000;
  const calls: { url: string; init: RequestInit }[] = [];
  const timers: { fn: () => void; at: number }[] = [];
  const fetchFn = vi.fn(async (url: RequestInfo | URL, init?: RequestInit) => {
    calls.push({ url: String(url), init: init ?? {} });
    const next = script.shift();
    if (!next) throw new Error(`unexpected request ${url}`);
    return next(String(url), init ?? {});
  });
  const api = new Api({
    fetch: fetchFn as unknown as typeof fetch,
    now: () => now,
    locks: null,
    setTimer: (fn, ms) => {
      const t = { fn, at: now + ms };
      timers.push(t);
      return t;
    },
    clearTimer: (h) => {
      const i = timers.indexOf(h as (typeof timers)[number]);
      if (i >= 0) timers.splice(i, 1);
    },
  });
  return {
    api,
    calls,
    timers,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

describe('buildUrl', () => {
  it('drops empty parameters and encodes the rest', () => {
    expect(buildUrl('', '/api/usage', { limit: 10, cursor: null, model: '', q: 'a b' })).toBe('/api/usage?limit=10&q=a+b');
    expect(buildUrl('', '/x')).toBe('/x');
  });
});

describe('Api', () => {
  it('keeps the access token in memory and sends it as a bearer, with the cookie', async () => {
    const { api, calls } = setup([() => json(200, { user, token: 'T1', token_type: 'Bearer', expires_in: 900 }), () => json(200, { balance_micros: 5 })]);
    await api.login('a@example.com', 'pw');
    expect(api.token).toBe('T1');
    const b = await api.get<{ balance_micros: number }>('/api/credits/balance');
    expect(b.balance_micros).toBe(5);
    const headers = calls[1].init.headers as Record<string, string>;
    expect(headers.authorization).toBe('Bearer T1');
    expect(calls[1].init.credentials).toBe('include');
    // Never written anywhere the page's scripts could read it later.
    expect(JSON.stringify(localStorage)).not.toContain('T1');
  });

  it('turns the hub error body into an ApiError with code, status and Retry-After', async () => {
    const { api } = setup([() => json(429, { error: { code: 'too_many_attempts', message: 'locked' } }, { 'retry-after': '4' })]);
    const err = await api.post('/api/auth/login', { email: 'a', password: 'b' }, { auth: false }).catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 429, code: 'too_many_attempts', message: 'locked', retryAfter: 4 });
  });

  it('refreshes once on a 401 and retries the request with the new token', async () => {
    const { api, calls } = setup([
      () => json(200, { user, token: 'OLD', token_type: 'Bearer', expires_in: 900 }),
      () => json(401, { error: { code: 'session_ended', message: 'ended' } }),
      () => json(200, { user, token: 'NEW', token_type: 'Bearer', expires_in: 900 }),
      () => json(200, { ok: true }),
    ]);
    await api.login('a@example.com', 'pw');
    await expect(api.get('/api/keys')).resolves.toEqual({ ok: true });
    expect(calls.map((c) => c.url)).toEqual(['/api/auth/login', '/api/keys', '/api/auth/refresh', '/api/keys']);
    expect((calls[3].init.headers as Record<string, string>).authorization).toBe('Bearer NEW');
  });

  it('signs out when the refresh is refused', async () => {
    const { api } = setup([
      () => json(200, { user, token: 'OLD', token_type: 'Bearer', expires_in: 900 }),
      () => json(401, { error: { code: 'session_ended', message: 'ended' } }),
      () => json(401, { error: { code: 'unauthorized', message: 'invalid or expired refresh token' } }),
    ]);
    const seen: (string | null)[] = [];
    api.subscribe((s) => seen.push(s?.token ?? null));
    await api.login('a@example.com', 'pw');
    await expect(api.get('/api/keys')).rejects.toMatchObject({ status: 401 });
    expect(api.token).toBeNull();
    expect(seen).toEqual(['OLD', null]);
  });

  it('schedules a silent refresh a minute before expiry, and refreshes before a request with an expiring token', async () => {
    const { api, timers, advance, calls } = setup([
      () => json(200, { user, token: 'T1', token_type: 'Bearer', expires_in: 900 }),
      () => json(200, { user, token: 'T2', token_type: 'Bearer', expires_in: 900 }),
      () => json(200, { user, token: 'T3', token_type: 'Bearer', expires_in: 900 }),
      () => json(200, {}),
    ]);
    await api.login('a@example.com', 'pw');
    expect(timers).toHaveLength(1);
    expect(timers[0].at - 1_000_000).toBe(840_000);
    advance(840_000);
    timers[0].fn();
    await vi.waitFor(() => expect(api.token).toBe('T2'));
    // Token about to expire (timer throttled in a background tab): a request refreshes first.
    advance(899_000);
    await api.get('/api/credits/balance');
    expect(calls.map((c) => c.url).slice(-2)).toEqual(['/api/auth/refresh', '/api/credits/balance']);
    expect((calls[3].init.headers as Record<string, string>).authorization).toBe('Bearer T3');
  });

  it('shares one refresh between concurrent callers (a second would look like a stolen token)', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { api, calls } = setup([
      async () => {
        await gate;
        return json(200, { user, token: 'R', token_type: 'Bearer', expires_in: 900 });
      },
    ]);
    const a = api.refresh();
    const b = api.refresh();
    release();
    const [sa, sb] = await Promise.all([a, b]);
    expect(sa?.token).toBe('R');
    expect(sb).toBe(sa);
    expect(calls).toHaveLength(1);
  });

  it('serialises refreshes across tabs with a Web Lock when the browser has them', async () => {
    const names: string[] = [];
    const api = new Api({
      fetch: (async () => json(200, { user, token: 'L', token_type: 'Bearer', expires_in: 900 })) as unknown as typeof fetch,
      locks: {
        request: async (name, cb) => {
          names.push(name);
          return cb();
        },
      },
      setTimer: () => 0,
      clearTimer: () => undefined,
    });
    await api.refresh();
    expect(names).toEqual(['aihub-refresh']);
  });

  it('logout and logout-all end the session locally even when the hub fails', async () => {
    const { api, calls } = setup([
      () => json(200, { user, token: 'T', token_type: 'Bearer', expires_in: 900 }),
      () => json(503, { error: { code: 'unavailable', message: 'down' } }),
    ]);
    await api.login('a@example.com', 'pw');
    await expect(api.logoutAll()).rejects.toBeInstanceOf(ApiError);
    expect(api.token).toBeNull();
    expect(calls[1].url).toBe('/api/auth/logout-all');
  });
});
