import { useEffect, useRef, useState, type FormEvent, type KeyboardEvent } from 'react';
import { Link } from 'wouter';
import type { Model } from '../api/types';
import { useSession } from '../auth/session';
import { credits, int, pricePerMillion } from '../lib/format';
import { read, write } from '../lib/storage';
import { useAsync } from '../lib/useAsync';
import type { ChatMessage } from '../live/socket';
import { Alert, Button, Empty, ErrorState, Loading, SelectField } from '../ui/kit';

interface Turn {
  role: 'user' | 'assistant';
  content: string;
  chatId?: string;
  status?: 'streaming' | 'done' | 'cancelled' | 'error';
  error?: string;
  provider?: string;
  tokensIn?: number;
  tokensOut?: number;
  charged?: number;
}

interface Conversation {
  id: string;
  title: string;
  model: string;
  turns: Turn[];
}

const MAX_SAVED = 20;

function newId(): string {
  return typeof crypto !== 'undefined' && 'randomUUID' in crypto ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

function load(key: string): Conversation[] {
  try {
    const v = JSON.parse(read(key) ?? '[]');
    return Array.isArray(v) ? v : [];
  } catch {
    return [];
  }
}

const ERRORS: Record<string, string> = {
  insufficient_credits: 'Not enough credits for this request.',
  email_not_verified: 'Verify your email address before using models.',
  disconnected: 'The connection dropped; send the message again.',
};

export default function Playground() {
  const { api, live, user, balance, liveStatus } = useSession();
  const storeKey = `aihub.chats.${user?.id ?? 'anon'}`;
  // Chat models only: an embedding model answers no chat.
  const models = useAsync(
    (signal) =>
      api
        .get<{ data: Model[] }>('/v1/models', undefined, { signal })
        .then((list) => ({ data: list.data.filter((m) => !m.capabilities?.embedding_dimensions) })),
    [],
  );
  const [convs, setConvs] = useState<Conversation[]>(() => load(storeKey));
  const [activeId, setActiveId] = useState<string | null>(() => convs[0]?.id ?? null);
  const [model, setModel] = useState('');
  const [input, setInput] = useState('');
  const [maxTokens, setMaxTokens] = useState('256');
  const [formError, setFormError] = useState<string | null>(null);
  const logRef = useRef<HTMLDivElement>(null);

  const active = convs.find((c) => c.id === activeId) ?? null;
  const streaming = active?.turns.find((t) => t.status === 'streaming');

  useEffect(() => {
    if (!model && models.data?.data.length) setModel(models.data.data[0].id);
  }, [models.data, model]);

  useEffect(() => {
    // Save finished turns only; a stream cut by a reload shows as cancelled.
    const saved = convs.slice(0, MAX_SAVED).map((c) => ({
      ...c,
      turns: c.turns.map((t) => (t.status === 'streaming' ? { ...t, status: 'cancelled' as const } : t)),
    }));
    write(storeKey, JSON.stringify(saved));
  }, [convs, storeKey]);

  useEffect(() => {
    logRef.current?.scrollTo({ top: logRef.current.scrollHeight });
  }, [active?.turns]);

  const update = (convId: string, chatId: string, change: (t: Turn) => Turn) =>
    setConvs((all) => all.map((c) => (c.id !== convId ? c : { ...c, turns: c.turns.map((t) => (t.chatId === chatId ? change(t) : t)) })));

  function newConversation() {
    const c: Conversation = { id: newId(), title: 'New conversation', model, turns: [] };
    setConvs((all) => [c, ...all]);
    setActiveId(c.id);
    return c;
  }

  function send(e?: FormEvent) {
    e?.preventDefault();
    const text = input.trim();
    if (!text) {
      setFormError('Write a message first.');
      return;
    }
    if (!model) {
      setFormError('Pick a model.');
      return;
    }
    const max = Number(maxTokens);
    if (!Number.isInteger(max) || max < 1 || max > 32768) {
      setFormError('Max tokens is a whole number from 1 to 32768.');
      return;
    }
    setFormError(null);
    const conv = active ?? newConversation();
    const chatId = newId();
    const history: ChatMessage[] = conv.turns
      .filter((t) => t.status !== 'error' && t.content)
      .map((t) => ({ role: t.role, content: t.content }));
    const messages: ChatMessage[] = [...history, { role: 'user', content: text }];
    const title = conv.turns.length === 0 ? text.slice(0, 40) : conv.title;
    setConvs((all) => {
      const exists = all.some((c) => c.id === conv.id);
      const base = exists ? all : [conv, ...all];
      return base.map((c) =>
        c.id !== conv.id
          ? c
          : {
              ...c,
              title,
              model,
              turns: [...c.turns, { role: 'user', content: text }, { role: 'assistant', content: '', chatId, status: 'streaming' }],
            },
      );
    });
    setInput('');
    const ok = live.startChat(chatId, model, messages, { max_tokens: max }, {
      onStarted: (m) => update(conv.id, chatId, (t) => ({ ...t, provider: m.provider })),
      onChunk: (delta) => update(conv.id, chatId, (t) => ({ ...t, content: t.content + delta })),
      onDone: (m) =>
        update(conv.id, chatId, (t) => ({
          ...t,
          status: m.outcome === 'cancelled' || m.finish_reason === 'cancelled' ? 'cancelled' : 'done',
          tokensIn: m.usage?.prompt_tokens,
          tokensOut: m.usage?.completion_tokens,
          charged: m.credits_charged_micros,
        })),
      onError: (m) => update(conv.id, chatId, (t) => ({ ...t, status: 'error', error: ERRORS[m.code] ?? m.message })),
    });
    if (!ok) update(conv.id, chatId, (t) => ({ ...t, status: 'error', error: 'Not connected yet; wait a moment and send again.' }));
  }

  function onKey(e: KeyboardEvent<HTMLTextAreaElement>) {
    if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      send();
    }
  }

  const selected = models.data?.data.find((m) => m.id === model);

  return (
    <div className="page playground">
      <div className="page-head">
        <h1>Playground</h1>
        <p className="muted">
          Available: <strong data-testid="playground-balance">{balance ? credits(balance.available_micros) : '—'}</strong> credits
          {liveStatus !== 'open' && <span> · connecting…</span>}
        </p>
      </div>
      <div className="pg">
        <aside className="pg-list" aria-label="Conversations">
          <Button variant="secondary" className="btn-block" onClick={newConversation}>
            New conversation
          </Button>
          {convs.length === 0 ? (
            <p className="muted small">No conversations yet.</p>
          ) : (
            <ul>
              {convs.map((c) => (
                <li key={c.id}>
                  <button className={`conv${c.id === activeId ? ' active' : ''}`} aria-current={c.id === activeId || undefined} onClick={() => setActiveId(c.id)}>
                    {c.title}
                  </button>
                </li>
              ))}
            </ul>
          )}
          {active && (
            <button className="linkish small" onClick={() => {
              setConvs((all) => all.filter((c) => c.id !== active.id));
              setActiveId(null);
            }}>
              Delete this conversation
            </button>
          )}
        </aside>
        <section className="pg-main" aria-label="Chat">
          {models.error ? (
            <ErrorState error={models.error} onRetry={models.reload} />
          ) : !models.data ? (
            <Loading label="Loading models…" />
          ) : models.data.data.length === 0 ? (
            <Empty title="No models are configured on this hub" />
          ) : (
            <div className="pg-controls">
              <SelectField label="Model" value={model} onChange={(e) => setModel(e.target.value)} data-testid="model-picker">
                {models.data.data.map((m) => (
                  <option key={m.id} value={m.id}>
                    {m.id} — in {pricePerMillion(m.pricing.input)} / out {pricePerMillion(m.pricing.output)} credits per 1M tokens
                  </option>
                ))}
              </SelectField>
              <div className="field small-field">
                <label htmlFor="max-tokens">Max tokens</label>
                <input id="max-tokens" inputMode="numeric" value={maxTokens} onChange={(e) => setMaxTokens(e.target.value)} />
              </div>
              {selected && (
                <p className="muted small price">
                  Price: {pricePerMillion(selected.pricing.input)} credits per million input tokens, {pricePerMillion(selected.pricing.output)} per million output tokens.
                </p>
              )}
            </div>
          )}
          <div className="log" ref={logRef} aria-live="polite" data-testid="chat-log">
            {!active || active.turns.length === 0 ? (
              <Empty title="Start a conversation">Ask anything; answers stream in as they are written, and each shows what it cost.</Empty>
            ) : (
              active.turns.map((t, i) => (
                <div key={i} className={`turn turn-${t.role}`}>
                  <div className="turn-who">{t.role === 'user' ? 'You' : 'Assistant'}</div>
                  <div className="turn-text">{t.content || (t.status === 'streaming' ? '…' : '')}</div>
                  {t.role === 'assistant' && t.status !== 'streaming' && (
                    <div className="turn-meta small" data-testid="turn-meta">
                      {t.status === 'error' ? (
                        <span className="bad">{t.error}</span>
                      ) : (
                        <>
                          {t.status === 'cancelled' && <span>Cancelled · </span>}
                          {t.tokensIn !== undefined && (
                            <span>
                              {int(t.tokensIn)} in / {int(t.tokensOut ?? 0)} out tokens ·{' '}
                            </span>
                          )}
                          {t.charged !== undefined && <span data-testid="turn-charged">{credits(t.charged)} credits</span>}
                          {t.provider && <span> · {t.provider}</span>}
                        </>
                      )}
                    </div>
                  )}
                </div>
              ))
            )}
          </div>
          {formError && <Alert kind="error">{formError}</Alert>}
          {balance && balance.available_micros <= 0 && (
            <Alert kind="warning">
              You have no credits left. <Link href="/billing">Buy credits or redeem a code</Link>.
            </Alert>
          )}
          <form className="composer" onSubmit={send}>
            <label htmlFor="prompt" className="sr-only">
              Message
            </label>
            <textarea
              id="prompt"
              rows={3}
              value={input}
              onChange={(e) => setInput(e.target.value)}
              onKeyDown={onKey}
              placeholder="Message (Enter to send, Shift+Enter for a new line)"
            />
            {streaming ? (
              <Button type="button" variant="danger" onClick={() => streaming.chatId && live.cancelChat(streaming.chatId)}>
                Stop
              </Button>
            ) : (
              <Button type="submit" disabled={!models.data?.data.length}>
                Send
              </Button>
            )}
          </form>
        </section>
      </div>
    </div>
  );
}
