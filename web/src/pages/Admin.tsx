import { useState, type FormEvent } from 'react';
import type { PromoRow, UserRow } from '../api/types';
import { useSession } from '../auth/session';
import { credits, dateTime, toMicros } from '../lib/format';
import { useAsync } from '../lib/useAsync';
import { Alert, Badge, Button, Card, Empty, ErrorState, Field, Loading, Pager, SelectField, describeError, useCursor } from '../ui/kit';

const ROLES = ['admin', 'analyst', 'auditor'];

function UserPanel({ user, onChanged }: { user: UserRow; onChanged: () => void }) {
  const { api } = useSession();
  const [role, setRole] = useState(ROLES.find((r) => !user.roles.includes(r)) ?? '');
  const [amount, setAmount] = useState('');
  const [reason, setReason] = useState('');
  const [suspendReason, setSuspendReason] = useState('');
  const [errors, setErrors] = useState<Record<string, string | null>>({});
  const [note, setNote] = useState<string | null>(null);
  const [busy, setBusy] = useState<string | null>(null);

  async function act(name: string, run: () => Promise<unknown>, done: string) {
    setBusy(name);
    setNote(null);
    setErrors({});
    try {
      await run();
      setNote(done);
      onChanged();
    } catch (e) {
      setErrors({ [name]: describeError(e) });
    } finally {
      setBusy(null);
    }
  }

  function grant(e: FormEvent) {
    e.preventDefault();
    const micros = toMicros(amount);
    const next = {
      amount: micros === null || micros <= 0 ? 'Enter a positive number of credits.' : null,
      reason: !reason.trim() ? 'Say why: it is kept in the ledger and the audit trail.' : null,
    };
    setErrors(next);
    if (next.amount || next.reason) return;
    void act(
      'grant',
      () =>
        api.post('/api/admin/credits/grant', { user_id: user.id, amount_micros: micros, reason: reason.trim() }, { headers: { 'idempotency-key': crypto.randomUUID() } }),
      `${amount} credits granted to ${user.email}.`,
    ).then(() => {
      setAmount('');
      setReason('');
    });
  }

  return (
    <Card title={`Manage ${user.email}`} className="span-3">
      {note && <Alert kind="success">{note}</Alert>}
      <div className="grid">
        <div>
          <h3>Roles</h3>
          <ul className="chips">
            {user.roles.map((r) => (
              <li key={r}>
                <Badge>{r}</Badge>
                {r !== 'user' && (
                  <Button variant="ghost" aria-label={`Remove role ${r}`} busy={busy === `revoke-${r}`} onClick={() => act(`revoke-${r}`, () => api.del(`/api/admin/users/${user.id}/roles/${r}`), `Role ${r} removed.`)}>
                    ×
                  </Button>
                )}
              </li>
            ))}
          </ul>
          {ROLES.some((r) => !user.roles.includes(r)) && (
            <form
              className="row"
              onSubmit={(e) => {
                e.preventDefault();
                void act('role', () => api.post(`/api/admin/users/${user.id}/roles`, { role }), `Role ${role} granted.`);
              }}
            >
              <SelectField label="Add role" value={role} onChange={(e) => setRole(e.target.value)} error={errors.role}>
                {ROLES.filter((r) => !user.roles.includes(r)).map((r) => (
                  <option key={r}>{r}</option>
                ))}
              </SelectField>
              <Button type="submit" variant="secondary" busy={busy === 'role'}>
                Grant role
              </Button>
            </form>
          )}
          {Object.entries(errors)
            .filter(([k, v]) => k.startsWith('revoke-') && v)
            .map(([k, v]) => (
              <Alert key={k} kind="error">
                {v}
              </Alert>
            ))}
        </div>
        <form onSubmit={grant} noValidate>
          <h3>Grant credits</h3>
          <Field label="Credits" inputMode="decimal" value={amount} onChange={(e) => setAmount(e.target.value)} error={errors.amount} />
          <Field label="Reason" value={reason} onChange={(e) => setReason(e.target.value)} error={errors.reason ?? errors.grant} />
          <Button type="submit" busy={busy === 'grant'}>
            Grant
          </Button>
        </form>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            if (!suspendReason.trim()) {
              setErrors({ suspend: 'Give a reason.' });
              return;
            }
            const path = user.suspended_at ? 'unsuspend' : 'suspend';
            void act('suspend', () => api.post(`/api/admin/users/${user.id}/${path}`, { reason: suspendReason.trim() }), user.suspended_at ? 'Account reinstated.' : 'Account suspended: every session and key stops now.').then(() =>
              setSuspendReason(''),
            );
          }}
          noValidate
        >
          <h3>{user.suspended_at ? 'Reinstate' : 'Suspend'}</h3>
          <Field label="Reason" value={suspendReason} onChange={(e) => setSuspendReason(e.target.value)} error={errors.suspend} />
          <Button type="submit" variant={user.suspended_at ? 'secondary' : 'danger'} busy={busy === 'suspend'}>
            {user.suspended_at ? 'Unsuspend' : 'Suspend'}
          </Button>
        </form>
      </div>
    </Card>
  );
}

function Users() {
  const { api } = useSession();
  const pages = useCursor();
  const [email, setEmail] = useState('');
  const [query, setQuery] = useState('');
  const [selected, setSelected] = useState<string | null>(null);
  const list = useAsync((signal) => api.get<{ users: UserRow[]; next_cursor: string | null }>('/api/admin/users', { limit: 20, cursor: pages.cursor, email: query }, { signal }), [pages.cursor, query]);
  const user = list.data?.users.find((u) => u.id === selected);
  return (
    <>
      <Card title="Users" className="span-3">
        <form
          className="filters"
          onSubmit={(e) => {
            e.preventDefault();
            setQuery(email.trim());
            pages.reset();
          }}
        >
          <Field label="Email" type="search" value={email} onChange={(e) => setEmail(e.target.value)} />
          <Button type="submit" variant="secondary">
            Search
          </Button>
        </form>
        {list.error ? (
          <ErrorState error={list.error} onRetry={list.reload} />
        ) : !list.data ? (
          <Loading />
        ) : list.data.users.length === 0 ? (
          <Empty title="No users match" />
        ) : (
          <div className="table-wrap" tabIndex={0} role="region" aria-label="Users table">
            <table className="table">
              <thead>
                <tr>
                  <th scope="col">Email</th>
                  <th scope="col">Roles</th>
                  <th scope="col">Verified</th>
                  <th scope="col" className="num">Live keys</th>
                  <th scope="col">Registered</th>
                  <th scope="col">Status</th>
                  <th scope="col">
                    <span className="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {list.data.users.map((u) => (
                  <tr key={u.id} className={u.id === selected ? 'selected' : undefined}>
                    <td>{u.email}</td>
                    <td>{u.roles.join(', ')}</td>
                    <td>{u.email_verified ? 'Yes' : 'No'}</td>
                    <td className="num">{u.api_keys_live}</td>
                    <td>{dateTime(u.registered_at)}</td>
                    <td>{u.suspended_at ? <Badge kind="bad">Suspended</Badge> : <Badge kind="good">Active</Badge>}</td>
                    <td>
                      <Button variant="secondary" aria-expanded={u.id === selected} onClick={() => setSelected(u.id === selected ? null : u.id)}>
                        {u.id === selected ? 'Close' : 'Manage'}
                        <span className="sr-only"> {u.email}</span>
                      </Button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        <Pager label="Users" page={pages.page} hasNext={!!list.data?.next_cursor} onPrev={pages.prev} onNext={() => list.data?.next_cursor && pages.next(list.data.next_cursor)} />
      </Card>
      {user && <UserPanel key={user.id} user={user} onChanged={list.reload} />}
    </>
  );
}

function Promos() {
  const { api } = useSession();
  const pages = useCursor();
  const list = useAsync((signal) => api.get<{ promos: PromoRow[]; next_cursor: string | null }>('/api/admin/promos', { limit: 20, cursor: pages.cursor }, { signal }), [pages.cursor]);
  const [form, setForm] = useState({ code: '', credits: '', max: '100', from: '', until: '' });
  const [errors, setErrors] = useState<Record<string, string | null>>({});
  const [busy, setBusy] = useState(false);
  const [note, setNote] = useState<string | null>(null);

  async function create(e: FormEvent) {
    e.preventDefault();
    const micros = toMicros(form.credits);
    const max = Number(form.max);
    const next = {
      code: !/^[A-Za-z0-9_-]{3,64}$/.test(form.code.trim()) ? '3–64 letters, digits, - or _.' : null,
      credits: micros === null || micros <= 0 ? 'Enter a positive number of credits.' : null,
      max: !Number.isInteger(max) || max < 1 ? 'A whole number, 1 or more.' : null,
      until: form.from && form.until && form.until <= form.from ? 'The end must be after the start.' : null,
    };
    setErrors(next);
    if (Object.values(next).some(Boolean)) return;
    setBusy(true);
    setNote(null);
    try {
      await api.post('/api/admin/promos', {
        code: form.code.trim(),
        credits_micros: micros,
        max_redemptions: max,
        valid_from: form.from ? new Date(form.from + 'T00:00:00Z').toISOString() : undefined,
        valid_until: form.until ? new Date(form.until + 'T00:00:00Z').toISOString() : undefined,
      });
      setNote(`Code ${form.code.trim().toUpperCase()} created.`);
      setForm({ code: '', credits: '', max: '100', from: '', until: '' });
      list.reload();
    } catch (err) {
      setErrors({ code: describeError(err) });
    } finally {
      setBusy(false);
    }
  }

  async function toggle(p: PromoRow) {
    try {
      await api.post(`/api/admin/promos/${encodeURIComponent(p.code)}/${p.active ? 'disable' : 'enable'}`);
      list.reload();
    } catch (e) {
      setNote(describeError(e));
    }
  }

  return (
    <>
      <Card title="New promo code">
        {note && <Alert kind="info">{note}</Alert>}
        <form onSubmit={create} noValidate>
          <Field label="Code" value={form.code} onChange={(e) => setForm({ ...form, code: e.target.value })} error={errors.code} />
          <Field label="Credits per redemption" inputMode="decimal" value={form.credits} onChange={(e) => setForm({ ...form, credits: e.target.value })} error={errors.credits} />
          <Field label="Redemptions allowed" inputMode="numeric" value={form.max} onChange={(e) => setForm({ ...form, max: e.target.value })} error={errors.max} />
          <Field label="Valid from (optional)" type="date" value={form.from} onChange={(e) => setForm({ ...form, from: e.target.value })} />
          <Field label="Valid until (optional)" type="date" value={form.until} onChange={(e) => setForm({ ...form, until: e.target.value })} error={errors.until} />
          <Button type="submit" busy={busy}>
            Create code
          </Button>
        </form>
      </Card>
      <Card title="Promo codes" className="span-2">
        {list.error ? (
          <ErrorState error={list.error} onRetry={list.reload} />
        ) : !list.data ? (
          <Loading />
        ) : list.data.promos.length === 0 ? (
          <Empty title="No promo codes yet" />
        ) : (
          <div className="table-wrap" tabIndex={0} role="region" aria-label="Promo codes table">
            <table className="table">
              <thead>
                <tr>
                  <th scope="col">Code</th>
                  <th scope="col" className="num">Credits</th>
                  <th scope="col" className="num">Used</th>
                  <th scope="col">Valid</th>
                  <th scope="col">State</th>
                  <th scope="col">
                    <span className="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {list.data.promos.map((p) => (
                  <tr key={p.code}>
                    <td>
                      <code>{p.code}</code>
                    </td>
                    <td className="num">{credits(p.credits_micros)}</td>
                    <td className="num">
                      {p.redemptions} / {p.max_redemptions}
                    </td>
                    <td className="small">
                      {p.valid_from ? dateTime(p.valid_from) : 'now'} → {p.valid_until ? dateTime(p.valid_until) : 'no end'}
                    </td>
                    <td>{p.active ? <Badge kind="good">Active</Badge> : <Badge>Disabled</Badge>}</td>
                    <td>
                      <Button variant="secondary" onClick={() => toggle(p)}>
                        {p.active ? 'Disable' : 'Enable'}
                        <span className="sr-only"> {p.code}</span>
                      </Button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        <Pager label="Promo codes" page={pages.page} hasNext={!!list.data?.next_cursor} onPrev={pages.prev} onNext={() => list.data?.next_cursor && pages.next(list.data.next_cursor)} />
      </Card>
    </>
  );
}

export default function Admin() {
  return (
    <div className="page">
      <h1>Admin</h1>
      <div className="grid">
        <Users />
        <Promos />
      </div>
    </div>
  );
}
