import { useState, type FormEvent } from 'react';
import type { ApiKey, CreatedKey } from '../api/types';
import { useSession } from '../auth/session';
import { credits, dateTime, toMicros } from '../lib/format';
import { useAsync } from '../lib/useAsync';
import { Alert, Badge, Button, Card, CopyButton, Empty, ErrorState, Field, Loading, describeError } from '../ui/kit';

function status(k: ApiKey): { label: string; kind: 'good' | 'bad' | 'neutral' } {
  if (k.revoked_at) return { label: 'Revoked', kind: 'bad' };
  if (k.expires_at && Date.parse(k.expires_at) < Date.now()) return { label: 'Expired', kind: 'neutral' };
  return { label: 'Active', kind: 'good' };
}

function CreateKey({ onCreated }: { onCreated: (k: CreatedKey) => void }) {
  const { api } = useSession();
  const [form, setForm] = useState({ name: '', limit: '', expires: '', inference: true, read: false });
  const [errors, setErrors] = useState<Record<string, string | null>>({});
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    const limit = form.limit.trim() ? toMicros(form.limit) : null;
    const next: Record<string, string | null> = {
      name: !form.name.trim() ? 'Name the key, e.g. after the program that uses it.' : form.name.length > 64 ? 'Use at most 64 characters.' : null,
      limit: form.limit.trim() && (limit === null || limit <= 0) ? 'Enter a positive number of credits, or leave it empty for no limit.' : null,
      expires: form.expires && Date.parse(form.expires) <= Date.now() ? 'Pick a date in the future.' : null,
      scopes: !form.inference && !form.read ? 'Pick at least one permission.' : null,
    };
    setErrors(next);
    if (Object.values(next).some(Boolean)) return;
    setBusy(true);
    try {
      const created = await api.post<CreatedKey>('/api/keys', {
        name: form.name.trim(),
        spending_limit_micros: limit ?? undefined,
        expires_at: form.expires ? new Date(form.expires + 'T23:59:59Z').toISOString() : undefined,
        scopes: [form.inference && 'inference', form.read && 'read'].filter(Boolean),
      });
      onCreated(created);
      setForm({ name: '', limit: '', expires: '', inference: true, read: false });
    } catch (err) {
      setErrors({ form: describeError(err) });
    } finally {
      setBusy(false);
    }
  }

  return (
    <Card title="Create a key">
      {errors.form && <Alert kind="error">{errors.form}</Alert>}
      <form onSubmit={submit} noValidate>
        <Field label="Name" name="key-name" value={form.name} onChange={(e) => setForm({ ...form, name: e.target.value })} error={errors.name} />
        <Field
          label="Spending limit (credits, optional)"
          name="key-limit"
          inputMode="decimal"
          value={form.limit}
          onChange={(e) => setForm({ ...form, limit: e.target.value })}
          error={errors.limit}
          hint="The most this key may spend in all."
        />
        <Field label="Expires (optional)" type="date" name="key-expires" value={form.expires} onChange={(e) => setForm({ ...form, expires: e.target.value })} error={errors.expires} />
        <fieldset className="field">
          <legend>Permissions</legend>
          <label className="check">
            <input type="checkbox" checked={form.inference} onChange={(e) => setForm({ ...form, inference: e.target.checked })} /> Call models (/v1)
          </label>
          <label className="check">
            <input type="checkbox" checked={form.read} onChange={(e) => setForm({ ...form, read: e.target.checked })} /> Read balance, usage and keys
          </label>
          {errors.scopes && (
            <div className="field-error" role="alert">
              {errors.scopes}
            </div>
          )}
        </fieldset>
        <Button type="submit" busy={busy}>
          Create key
        </Button>
      </form>
    </Card>
  );
}

function KeyRow({ k, onRevoked }: { k: ApiKey; onRevoked: () => void }) {
  const { api } = useSession();
  const [confirm, setConfirm] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const s = status(k);
  return (
    <tr>
      <td>{k.name}</td>
      <td>
        <code>{k.prefix}…</code>
      </td>
      <td>{k.scopes.join(', ')}</td>
      <td className="num">{k.spending_limit_micros !== null ? credits(k.spending_limit_micros) : 'None'}</td>
      <td>{dateTime(k.created_at)}</td>
      <td>{k.expires_at ? dateTime(k.expires_at) : 'Never'}</td>
      <td>
        <Badge kind={s.kind}>{s.label}</Badge>
      </td>
      <td>
        {!k.revoked_at &&
          (confirm ? (
            <span className="row">
              <Button
                variant="danger"
                busy={busy}
                onClick={async () => {
                  setBusy(true);
                  try {
                    await api.del(`/api/keys/${k.id}`);
                    onRevoked();
                  } catch (e) {
                    setError(describeError(e));
                    setBusy(false);
                  }
                }}
              >
                Revoke now
              </Button>
              <Button variant="ghost" onClick={() => setConfirm(false)}>
                Keep
              </Button>
            </span>
          ) : (
            <Button variant="secondary" onClick={() => setConfirm(true)} aria-label={`Revoke ${k.name}`}>
              Revoke
            </Button>
          ))}
        {error && <div className="field-error">{error}</div>}
      </td>
    </tr>
  );
}

export default function Keys() {
  const { api } = useSession();
  const list = useAsync((signal) => api.get<{ keys: ApiKey[] }>('/api/keys', undefined, { signal }), []);
  const [created, setCreated] = useState<CreatedKey | null>(null);
  const keys = [...(list.data?.keys ?? [])].sort((a, b) => b.created_at.localeCompare(a.created_at));
  return (
    <div className="page">
      <h1>API keys</h1>
      <p className="muted">
        Programs call <code>/v1/chat/completions</code> with <code>Authorization: Bearer &lt;key&gt;</code>, charged to your credits.
      </p>
      {created && (
        <Alert kind="success" title="Your new key.">
          Copy it now: it is shown only once.
          <div className="secret">
            <code data-testid="new-key">{created.key}</code>
            <CopyButton text={created.key} label="Copy key" />
          </div>
          <Button variant="ghost" onClick={() => setCreated(null)}>
            I have saved it
          </Button>
        </Alert>
      )}
      <div className="grid">
        <CreateKey
          onCreated={(k) => {
            setCreated(k);
            list.reload();
          }}
        />
        <Card title="Your keys" className="span-2">
          {list.error ? (
            <ErrorState error={list.error} onRetry={list.reload} />
          ) : !list.data ? (
            <Loading />
          ) : keys.length === 0 ? (
            <Empty title="No keys yet">Create one to call the API from your programs.</Empty>
          ) : (
            <div className="table-wrap" tabIndex={0} role="region" aria-label="Keys table">
              <table className="table" data-testid="keys">
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">Prefix</th>
                    <th scope="col">Permissions</th>
                    <th scope="col" className="num">Limit</th>
                    <th scope="col">Created</th>
                    <th scope="col">Expires</th>
                    <th scope="col">Status</th>
                    <th scope="col">
                      <span className="sr-only">Actions</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {keys.map((k) => (
                    <KeyRow key={k.id} k={k} onRevoked={list.reload} />
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </Card>
      </div>
    </div>
  );
}
