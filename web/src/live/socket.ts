// The one WebSocket a signed-in browser holds (`/api/ws`, protocol in api/src/routes/ws.rs):
// chats, and the hub's `balance.updated` pushes.
//
// A browser cannot set headers on a WebSocket, so each connection first gets a one-use,
// 30-second ticket from POST /api/ws/ticket and connects with `?ticket=`. When the socket
// closes it reconnects with a fresh ticket (backoff 0.5 s → 10 s); close code 4401 (the
// credential ended) refreshes the access token first, 4403 (suspended) stops. A socket that
// has heard nothing for 40 s (the hub sends a heartbeat every 15 s) is presumed dead.

import type { Api } from '../api/client';
import type { Balance } from '../api/types';

export type LiveStatus = 'idle' | 'connecting' | 'open' | 'closed' | 'suspended';

export interface ChatUsage {
  prompt_tokens: number;
  completion_tokens: number;
  cached_tokens?: number;
  source?: string;
}

export interface ChatHandlers {
  onStarted?: (m: { request_id: string; provider: string }) => void;
  onChunk?: (delta: string, seq: number) => void;
  onDone?: (m: { finish_reason: string | null; outcome?: string; usage: ChatUsage; credits_charged_micros: number }) => void;
  onError?: (m: { code: string; message: string; status?: number }) => void;
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export type BalanceUpdate = Balance & { type: 'balance.updated' };

type Message = { type: string; id?: string; [k: string]: unknown };
type Listener = (message: Message) => void;
type StatusListener = (status: LiveStatus) => void;

export interface SocketLike {
  readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface LiveOptions {
  url?: (ticket: string) => string;
  WebSocket?: new (url: string) => SocketLike;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (h: unknown) => void;
  idleMs?: number;
}

const OPEN = 1;

function defaultUrl(ticket: string): string {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}/api/ws?ticket=${encodeURIComponent(ticket)}`;
}

export class LiveSocket {
  private socket: SocketLike | null = null;
  private running = false;
  private attempt = 0;
  private retryTimer: unknown = null;
  private idleTimer: unknown = null;
  private statusValue: LiveStatus = 'idle';
  private listeners = new Set<Listener>();
  private statusListeners = new Set<StatusListener>();
  private chats = new Map<string, ChatHandlers>();
  private readonly opts: Required<LiveOptions>;

  constructor(private readonly api: Api, options: LiveOptions = {}) {
    this.opts = {
      url: options.url ?? defaultUrl,
      WebSocket: options.WebSocket ?? (globalThis.WebSocket as unknown as new (url: string) => SocketLike),
      setTimer: options.setTimer ?? ((fn, ms) => setTimeout(fn, ms)),
      clearTimer: options.clearTimer ?? ((h) => clearTimeout(h as ReturnType<typeof setTimeout>)),
      idleMs: options.idleMs ?? 40_000,
    };
  }

  get status(): LiveStatus {
    return this.statusValue;
  }

  private setStatus(status: LiveStatus) {
    if (this.statusValue === status) return;
    this.statusValue = status;
    for (const l of this.statusListeners) l(status);
  }

  onStatus(listener: StatusListener): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  /** Every message from the hub (balance.updated, welcome, …). */
  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.attempt = 0;
    void this.connect();
  }

  stop() {
    this.running = false;
    if (this.retryTimer !== null) this.opts.clearTimer(this.retryTimer);
    this.retryTimer = null;
    this.clearIdle();
    const s = this.socket;
    this.socket = null;
    if (s) {
      s.onclose = null;
      s.onmessage = null;
      s.onerror = null;
      try {
        s.close(1000, 'signed out');
      } catch {
        // ignore
      }
    }
    this.failChats('disconnected', 'The connection was closed.');
    this.setStatus('idle');
  }

  private async connect() {
    if (!this.running) return;
    this.setStatus('connecting');
    let ticket: string;
    try {
      const answer = await this.api.post<{ ticket: string }>('/api/ws/ticket');
      ticket = answer.ticket;
    } catch (err) {
      const status = (err as { status?: number }).status;
      if (status === 401) {
        // Signed out meanwhile: the auth layer notices and stops us.
        this.setStatus('closed');
        return;
      }
      if (status === 403 && (err as { code?: string }).code === 'account_suspended') {
        this.running = false;
        this.setStatus('suspended');
        return;
      }
      this.retry();
      return;
    }
    if (!this.running) return;
    const socket = new this.opts.WebSocket(this.opts.url(ticket));
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
      this.setStatus('open');
      this.touch();
    };
    socket.onmessage = (ev) => {
      this.touch();
      let message: Message;
      try {
        message = JSON.parse(String(ev.data));
      } catch {
        return;
      }
      this.dispatch(message);
    };
    socket.onerror = () => {
      // onclose follows
    };
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.clearIdle();
      this.failChats('disconnected', 'The connection dropped; send the message again.');
      if (!this.running) return;
      if (ev.code === 4403) {
        this.running = false;
        this.setStatus('suspended');
        return;
      }
      this.setStatus('closed');
      if (ev.code === 4401) {
        // The access token ended: a fresh one first (or the session is over).
        void this.api
          .refresh()
          .then((s) => (s ? this.retry(true) : this.stop()))
          .catch(() => this.retry());
        return;
      }
      this.retry();
    };
  }

  private retry(immediate = false) {
    if (!this.running) return;
    const delay = immediate ? 0 : Math.min(500 * 2 ** this.attempt, 10_000);
    this.attempt++;
    this.retryTimer = this.opts.setTimer(() => {
      this.retryTimer = null;
      void this.connect();
    }, delay);
  }

  private touch() {
    this.clearIdle();
    this.idleTimer = this.opts.setTimer(() => {
      // Silent too long: drop it and reconnect.
      this.socket?.close(4000, 'idle');
    }, this.opts.idleMs);
  }

  private clearIdle() {
    if (this.idleTimer !== null) this.opts.clearTimer(this.idleTimer);
    this.idleTimer = null;
  }

  private dispatch(message: Message) {
    const id = typeof message.id === 'string' ? message.id : null;
    const handlers = id ? this.chats.get(id) : undefined;
    if (handlers) {
      switch (message.type) {
        case 'chat.started':
          handlers.onStarted?.(message as never);
          break;
        case 'chat.chunk':
          handlers.onChunk?.(String(message.delta ?? ''), Number(message.seq ?? 0));
          break;
        case 'chat.done':
          this.chats.delete(id!);
          handlers.onDone?.(message as never);
          break;
        case 'chat.error':
          this.chats.delete(id!);
          handlers.onError?.(message as never);
          break;
      }
    }
    for (const l of this.listeners) l(message);
  }

  private failChats(code: string, message: string) {
    const pending = [...this.chats.values()];
    this.chats.clear();
    for (const h of pending) h.onError?.({ code, message });
  }

  get connected(): boolean {
    return this.socket !== null && this.socket.readyState === OPEN;
  }

  /** Start a chat; false when the socket is not open. */
  startChat(
    id: string,
    model: string,
    messages: ChatMessage[],
    options: { max_tokens?: number; temperature?: number },
    handlers: ChatHandlers,
  ): boolean {
    if (!this.socket || this.socket.readyState !== OPEN) return false;
    this.chats.set(id, handlers);
    this.socket.send(JSON.stringify({ type: 'chat.start', id, model, messages, options }));
    return true;
  }

  cancelChat(id: string) {
    if (this.socket && this.socket.readyState === OPEN) {
      this.socket.send(JSON.stringify({ type: 'chat.cancel', id }));
    }
  }
}
