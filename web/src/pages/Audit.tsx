import { useState, type FormEvent } from 'react';
import { ApiError } from '../api/client';
import type { AccountAsOf, AuditLedgerEntry, Page, TrialBalance, VerifyReport } from '../api/types';
import { useSession } from '../auth/session';
import { credits, dateTime } from '../lib/format';
import { useAsync } from '../lib/useAsync';
import { Alert, Badge, Button, Card, Empty, ErrorState, Field, Loading, Pager, SelectField, describeError, useCursor } from '../ui/kit';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A datetime-local value as RFC 3339 in UTC. */
function instant(local: string): string | undefined {
  if (!local) return undefined;
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

function Ledger() {
  const { api } = useSession();
  const pages = useCursor();
  const [draft, setDraft] = useState({ account: '', kind: '', from: '', to: '' });
  const [filter, setFilter] = useState(draft);
  const [error, setError] = useState<string | null>(null);
  const list = useAsync(
    (signal) =>
      api.get<Page<AuditLedgerEntry>>(
        '/api/audit/ledger',
        { limit: 25, cursor: pages.cursor, account: filter.account, kind: filter.kind, from: instant(filter.from), to: instant(filter.to) },
        { signal },
      ),
    [pages.cursor, filter],
  );
  return (
    <Card title="Ledger across accounts" className="span-3">
      <form
        className="filters"
        onSubmit={(e) => {
          e.preventDefault();
          const err = draft.account && !UUID.test(draft.account.trim()) ? 'An account id is a UUID.' : null;
          setError(err);
          if (err) return;
          setFilter({ ...draft, account: draft.account.trim() });
          pages.reset();
        }}
        noValidate
      >
        <Field label="Account" value={draft.account} onChange={(e) => setDraft({ ...draft, account: e.target.value })} error={error} placeholder="any" />
        <SelectField label="Kind" value={draft.kind} onChange={(e) => setDraft({ ...draft, kind: e.target.value })}>
          <option value="">Any kind</option>
          {['grant', 'purchase', 'promo', 'charge', 'refund', 'debt_repayment'].map((k) => (
            <option key={k}>{k}</option>
          ))}
        </SelectField>
        <Field label="From" type="datetime-local" value={draft.from} onChange={(e) => setDraft({ ...draft, from: e.target.value })} />
        <Field label="To" type="datetime-local" value={draft.to} onChange={(e) => setDraft({ ...draft, to: e.target.value })} />
        <Button type="submit" variant="secondary">
          Filter
        </Button>
      </form>
      {list.error ? (
        <ErrorState error={list.error} onRetry={list.reload} />
      ) : !list.data ? (
        <Loading />
      ) : list.data.data.length === 0 ? (
        <Empty title="No entries match" />
      ) : (
        <div className="table-wrap" tabIndex={0} role="region" aria-label="Ledger table">
          <table className="table">
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Account</th>
                <th scope="col">Kind</th>
                <th scope="col" className="num">Amount</th>
                <th scope="col" className="num">Balance after</th>
                <th scope="col">Cause</th>
                <th scope="col">Actor</th>
              </tr>
            </thead>
            <tbody>
              {list.data.data.map((r) => (
                <tr key={`${r.account_id}-${r.sequence}`}>
                  <td>{dateTime(r.recorded_at)}</td>
                  <td>
                    <code className="small">{r.account_id.slice(0, 8)}…</code>
                  </td>
                  <td>{r.kind}</td>
                  <td className={`num ${r.amount_micros < 0 ? 'bad' : ''}`}>{credits(r.amount_micros)}</td>
                  <td className="num">{credits(r.balance_after_micros)}</td>
                  <td className="small">
                    {r.cause.type}
                    {r.description ? ` — ${r.description}` : ''}
                  </td>
                  <td className="small">{r.actor ?? '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Pager label="Ledger" page={pages.page} hasNext={!!list.data?.next_cursor} onPrev={pages.prev} onNext={() => list.data?.next_cursor && pages.next(list.data.next_cursor)} />
    </Card>
  );
}

function AsOf() {
  const { api } = useSession();
  const [account, setAccount] = useState('');
  const [at, setAt] = useState('');
  const [errors, setErrors] = useState<Record<string, string | null>>({});
  const [answer, setAnswer] = useState<AccountAsOf | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    const next = { account: UUID.test(account.trim()) ? null : 'Enter the account id (a UUID).', at: at && !instant(at) ? 'Pick a valid time.' : null };
    setErrors(next);
    if (next.account || next.at) return;
    setBusy(true);
    try {
      setAnswer(await api.get<AccountAsOf>(`/api/audit/accounts/${account.trim()}`, { as_of: instant(at), limit: 10 }));
    } catch (err) {
      setAnswer(null);
      setErrors({ form: describeError(err) });
    } finally {
      setBusy(false);
    }
  }

  return (
    <Card title="Balance as of a date">
      <form onSubmit={submit} noValidate>
        <Field label="Account id" value={account} onChange={(e) => setAccount(e.target.value)} error={errors.account} />
        <Field label="As of (empty: now)" type="datetime-local" value={at} onChange={(e) => setAt(e.target.value)} error={errors.at} />
        <Button type="submit" busy={busy}>
          Fold the events
        </Button>
      </form>
      {errors.form && <Alert kind="error">{errors.form}</Alert>}
      {answer && (
        <dl className="kv">
          <div>
            <dt>Balance</dt>
            <dd>{credits(answer.balance_micros)}</dd>
          </div>
          <div>
            <dt>Reserved</dt>
            <dd>{credits(answer.reserved_micros)}</dd>
          </div>
          <div>
            <dt>Available</dt>
            <dd>{credits(answer.available_micros)}</dd>
          </div>
          <div>
            <dt>Debt</dt>
            <dd>{credits(answer.debt_micros)}</dd>
          </div>
          <div>
            <dt>Events folded</dt>
            <dd>
              {answer.events_folded} (through #{answer.through_sequence}, last {dateTime(answer.last_event_at)})
            </dd>
          </div>
        </dl>
      )}
    </Card>
  );
}

function Trial() {
  const { api } = useSession();
  const [at, setAt] = useState('');
  const [asOf, setAsOf] = useState<string | undefined>(undefined);
  const tb = useAsync((signal) => api.get<TrialBalance>('/api/audit/trial-balance', { as_of: asOf }, { signal }), [asOf]);
  return (
    <Card title="Trial balance" className="span-2">
      <form
        className="filters"
        onSubmit={(e) => {
          e.preventDefault();
          setAsOf(instant(at));
        }}
      >
        <Field label="As of (empty: now)" type="datetime-local" value={at} onChange={(e) => setAt(e.target.value)} />
        <Button type="submit" variant="secondary">
          Show
        </Button>
      </form>
      {tb.error ? (
        <ErrorState error={tb.error} onRetry={tb.reload} />
      ) : !tb.data ? (
        <Loading />
      ) : (
        <>
          <p>
            {tb.data.balanced ? <Badge kind="good">Balanced</Badge> : <Badge kind="bad">Not balanced</Badge>} · {tb.data.legs} legs · users hold{' '}
            {credits(tb.data.users_balance_micros)} credits
          </p>
          <div className="table-wrap" tabIndex={0} role="region" aria-label="Trial balance table">
            <table className="table">
              <thead>
                <tr>
                  <th scope="col">Account</th>
                  <th scope="col" className="num">Debits</th>
                  <th scope="col" className="num">Credits</th>
                  <th scope="col" className="num">Debit balance</th>
                  <th scope="col" className="num">Credit balance</th>
                </tr>
              </thead>
              <tbody>
                {tb.data.accounts.map((l) => (
                  <tr key={l.account}>
                    <td>{l.account}</td>
                    <td className="num">{credits(l.debits_micros)}</td>
                    <td className="num">{credits(l.credits_micros)}</td>
                    <td className="num">{credits(l.debit_balance_micros)}</td>
                    <td className="num">{credits(l.credit_balance_micros)}</td>
                  </tr>
                ))}
              </tbody>
              <tfoot>
                <tr>
                  <th scope="row">Total</th>
                  <td className="num">{credits(tb.data.total_debits_micros)}</td>
                  <td className="num">{credits(tb.data.total_credits_micros)}</td>
                  <td className="num">{credits(tb.data.total_debit_balances_micros)}</td>
                  <td className="num">{credits(tb.data.total_credit_balances_micros)}</td>
                </tr>
              </tfoot>
            </table>
          </div>
        </>
      )}
    </Card>
  );
}

function Verification() {
  const { api } = useSession();
  const report = useAsync(
    (signal) =>
      api.get<VerifyReport>('/api/audit/verify', undefined, { signal }).catch((e) => {
        if (e instanceof ApiError && e.code === 'no_verification') return null;
        throw e;
      }),
    [],
  );
  return (
    <Card title="Last verification">
      {report.error ? (
        <ErrorState error={report.error} onRetry={report.reload} />
      ) : report.loading && report.data === undefined ? (
        <Loading />
      ) : !report.data ? (
        <Empty title="No verification has run yet">
          An operator runs <code>aihub audit verify</code>; its report shows here.
        </Empty>
      ) : (
        <>
          <p>
            {report.data.passed ? <Badge kind="good">Passed</Badge> : <Badge kind="bad">Failed</Badge>} on {dateTime(report.data.finished_at)}: {report.data.events} events, {report.data.accounts}{' '}
            accounts, {report.data.checkpoints} checkpoints.
          </p>
          <ul className="checks">
            {report.data.checks.map((c) => (
              <li key={c.check}>
                {c.passed ? '✓' : '✗'} {c.check}
                {c.discrepancies > 0 && ` — ${c.discrepancies} discrepancies`}
              </li>
            ))}
          </ul>
          {report.data.discrepancies.length > 0 && (
            <Alert kind="error" title="Discrepancies:">
              <ul>
                {report.data.discrepancies.map((d, i) => (
                  <li key={i}>
                    {d.check} · {d.subject}: {d.detail}
                  </li>
                ))}
              </ul>
            </Alert>
          )}
        </>
      )}
    </Card>
  );
}

export default function Audit() {
  return (
    <div className="page">
      <h1>Audit</h1>
      <p className="muted">Read-only views of the books. Nothing here changes anything.</p>
      <div className="grid">
        <Verification />
        <Trial />
        <AsOf />
        <Ledger />
      </div>
    </div>
  );
}
