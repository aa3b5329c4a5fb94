// The hub's HTTP API, as the browser uses it.
//
// - The access token lives in this object only (never in storage): a reload gets a new one
//   from the refresh cookie (`aihub_refresh`, HttpOnly, path /api/auth, set by the hub).
// - A refresh is scheduled a minute before the token expires, and a request made with a
//   token about to expire waits for one. Refreshes are single-flight in the tab and, where
//   the browser has Web Locks, across tabs: two tabs presenting the same refresh token at
//   once would look like theft to the hub, which revokes the whole family.
// - A 401 on an authenticated request triggers one refresh and one retry; if the refresh
//   fails, the session is over (`onSignedOut`).

import type { SignedIn, User } from './types';

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly retryAfter: number | null;

  constructor(status: number, code: string, message: string, retryAfter: number | null = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export type Query = Record<string, string | number | boolean | null | undefined>;

export interface RequestOptions {
  body?: unknown;
  query?: Query;
  headers?: Record<string, string>;
  /** Send the access token (default true). */
  auth?: boolean;
  /** Answer the raw Response instead of parsed JSON. */
  raw?: boolean;
  signal?: AbortSignal;
}

export interface Session {
  token: string;
  /** Epoch milliseconds. */
  expiresAt: number;
  user: User;
}

export interface ApiOptions {
  base?: string;
  fetch?: typeof fetch;
  now?: () => number;
  /** Milliseconds before expiry at which the token is refreshed. */
  refreshMargin?: number;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (handle: unknown) => void;
  locks?: { request: (name: string, cb: () => Promise<unknown>) => Promise<unknown> } | null;
}

type Listener = (session: Session | null) => void;

export function buildUrl(base: string, path: string, query?: Query): string {
  let url = base + path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== '') params.set(k, String(v));
    }
    const qs = params.toString();
    if (qs) url += (url.includes('?') ? '&' : '?') + qs;
  }
  return url;
}

async function errorOf(response: Response): Promise<ApiError> {
  let code = `http_${response.status}`;
  let message = response.statusText || `request failed (${response.status})`;
  try {
    const body = await response.json();
    // The hub's shape, and OpenAI's for /v1.
    const err = body?.error;
    if (err && typeof err === 'object') {
      code = err.code ?? err.type ?? code;
      message = err.message ?? message;
    }
  } catch {
    // not JSON
  }
  const retry = response.headers.get('retry-after');
  return new ApiError(response.status, code, message, retry ? Number(retry) : null);
}

export class Api {
  private readonly base: string;
  private readonly fetchFn: typeof fetch;
  private readonly now: () => number;
  private readonly margin: number;
  private readonly setTimer: (fn: () => void, ms: number) => unknown;
  private readonly clearTimer: (handle: unknown) => void;
  private readonly locks: ApiOptions['locks'];
  private session: Session | null = null;
  private refreshing: Promise<Session | null> | null = null;
  private timer: unknown = null;
  private listeners = new Set<Listener>();

  constructor(options: ApiOptions = {}) {
    this.base = options.base ?? '';
    this.fetchFn = options.fetch ?? ((...args) => fetch(...args));
    this.now = options.now ?? (() => Date.now());
    this.margin = options.refreshMargin ?? 60_000;
    this.setTimer = options.setTimer ?? ((fn, ms) => setTimeout(fn, ms));
    this.clearTimer = options.clearTimer ?? ((h) => clearTimeout(h as ReturnType<typeof setTimeout>));
    this.locks =
      options.locks !== undefined
        ? options.locks
        : typeof navigator !== 'undefined' && 'locks' in navigator
          ? (navigator.locks as ApiOptions['locks'])
          : null;
  }

  get current(): Session | null {
    return this.session;
  }

  get token(): string | null {
    return this.session?.token ?? null;
  }

  /** Called with the session whenever it starts, is refreshed or ends. */
  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit() {
    for (const l of this.listeners) l(this.session);
  }

  /** Adopt a sign-in answer (login, register, refresh). */
  adopt(answer: SignedIn): Session {
    const session: Session = {
      token: answer.token,
      expiresAt: this.now() + answer.expires_in * 1000,
      user: answer.user,
    };
    this.session = session;
    this.schedule();
    this.emit();
    return session;
  }

  /** The user changed (verified email, roles) without a new token. */
  updateUser(user: User) {
    if (!this.session) return;
    this.session = { ...this.session, user };
    this.emit();
  }

  /** Forget the session locally (the cookie is the hub's to clear). */
  forget() {
    if (this.timer !== null) this.clearTimer(this.timer);
    this.timer = null;
    const had = this.session !== null;
    this.session = null;
    if (had) this.emit();
  }

  private schedule() {
    if (this.timer !== null) this.clearTimer(this.timer);
    if (!this.session) return;
    const wait = Math.max(this.session.expiresAt - this.now() - this.margin, 1_000);
    this.timer = this.setTimer(() => {
      this.timer = null;
      void this.refresh().catch(() => undefined);
    }, wait);
  }

  /**
   * Trade the refresh cookie for a new access token. Single-flight: concurrent callers share
   * one request. Resolves to null when there is no session to refresh (signed out).
   */
  refresh(): Promise<Session | null> {
    if (this.refreshing) return this.refreshing;
    const run = async (): Promise<Session | null> => {
      const response = await this.fetchFn(buildUrl(this.base, '/api/auth/refresh'), {
        method: 'POST',
        credentials: 'include',
        headers: { accept: 'application/json' },
      });
      if (response.status === 401) {
        this.forget();
        return null;
      }
      if (!response.ok) throw await errorOf(response);
      return this.adopt((await response.json()) as SignedIn);
    };
    const locked = this.locks
      ? () => this.locks!.request('aihub-refresh', run) as Promise<Session | null>
      : run;
    this.refreshing = locked().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private async validToken(): Promise<string | null> {
    if (this.refreshing) await this.refreshing.catch(() => undefined);
    const s = this.session;
    if (!s) return null;
    if (s.expiresAt - this.now() < 5_000) {
      const renewed = await this.refresh();
      return renewed?.token ?? null;
    }
    return s.token;
  }

  async request<T = unknown>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const auth = options.auth ?? true;
    const send = async (token: string | null) => {
      const headers: Record<string, string> = { accept: 'application/json', ...options.headers };
      if (options.body !== undefined) headers['content-type'] = 'application/json';
      if (auth && token) headers.authorization = `Bearer ${token}`;
      return this.fetchFn(buildUrl(this.base, path, options.query), {
        method,
        headers,
        credentials: 'include',
        body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
        signal: options.signal,
      });
    };
    let token = auth ? await this.validToken() : null;
    let response = await send(token);
    if (response.status === 401 && auth && token) {
      // Expired early, or cut off (log out everywhere elsewhere): one refresh, one retry.
      const renewed = await this.refresh().catch(() => null);
      token = renewed?.token ?? null;
      if (!token) {
        this.forget();
        throw await errorOf(response);
      }
      response = await send(token);
    }
    if (!response.ok) {
      const err = await errorOf(response);
      if (response.status === 401 && auth) this.forget();
      throw err;
    }
    if (options.raw) return response as unknown as T;
    if (response.status === 204) return undefined as T;
    const text = await response.text();
    return (text ? JSON.parse(text) : undefined) as T;
  }

  get<T = unknown>(path: string, query?: Query, options: RequestOptions = {}) {
    return this.request<T>('GET', path, { ...options, query });
  }

  post<T = unknown>(path: string, body?: unknown, options: RequestOptions = {}) {
    return this.request<T>('POST', path, { ...options, body });
  }

  del<T = unknown>(path: string, options: RequestOptions = {}) {
    return this.request<T>('DELETE', path, options);
  }

  // --- sign-in flows ---------------------------------------------------------------

  async login(email: string, password: string): Promise<Session> {
    const answer = await this.post<SignedIn>('/api/auth/login', { email, password }, { auth: false });
    return this.adopt(answer);
  }

  async register(body: { email: string; password: string; firstName?: string }): Promise<Session> {
    const answer = await this.post<SignedIn>('/api/auth/register', body, { auth: false });
    return this.adopt(answer);
  }

  /** End this sign-in: the hub revokes the refresh family and clears the cookie. */
  async logout(): Promise<void> {
    try {
      await this.post('/api/auth/logout', undefined, { auth: false });
    } finally {
      this.forget();
    }
  }

  /** End every session of the user, on every device. */
  async logoutAll(): Promise<void> {
    try {
      await this.post('/api/auth/logout-all');
    } finally {
      this.forget();
    }
  }
}
