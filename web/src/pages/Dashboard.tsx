import { useEffect, useMemo, useState } from 'react';
import { Link } from 'wouter';
import type { Model, Page, UsageRecord, UsageSummary } from '../api/types';
import { useSession } from '../auth/session';
import { addDays, credits, dateTime, day, int, isoDay, toMicros } from '../lib/format';
import { read, write } from '../lib/storage';
import { useAsync } from '../lib/useAsync';
import { BarChart } from '../ui/BarChart';
import { Alert, Badge, Card, Empty, ErrorState, Field, Loading, Pager, SelectField, useCursor } from '../ui/kit';

const THRESHOLD_KEY = 'aihub.lowBalanceThreshold';

/** Bumps whenever the hub says the balance moved (a charge, a grant): the activity and
 *  the chart read again. Once at once, and once more a moment later, since the usage
 *  projection may record the request just after the balance moved. */
export function useActivityTick(): number {
  const { live } = useSession();
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const timers: ReturnType<typeof setTimeout>[] = [];
    const off = live.subscribe((m) => {
      if (m.type !== 'balance.updated') return;
      setTick((t) => t + 1);
      timers.push(setTimeout(() => setTick((t) => t + 1), 1200));
    });
    return () => {
      off();
      timers.forEach(clearTimeout);
    };
  }, [live]);
  return tick;
}

function BalanceCard() {
  const { balance, balanceError, reloadBalance, liveStatus } = useSession();
  return (
    <Card
      title="Balance"
      actions={
        <span className={`live live-${liveStatus}`}>
          <span className={`dot dot-${liveStatus}`} aria-hidden="true" /> {liveStatus === 'open' ? 'Live' : liveStatus === 'connecting' ? 'Connecting…' : 'Offline'}
        </span>
      }
    >
      {!balance && balanceError ? (
        <ErrorState error={balanceError} onRetry={reloadBalance} />
      ) : !balance ? (
        <Loading />
      ) : (
        <div className="balance">
          <div>
            <div className="muted small">Available</div>
            <div className="big" data-testid="balance-available" aria-live="polite">
              {credits(balance.available_micros)}
            </div>
            <div className="muted small">credits</div>
          </div>
          <dl className="kv">
            <div>
              <dt>Reserved for running requests</dt>
              <dd data-testid="balance-reserved">{credits(balance.reserved_micros)}</dd>
            </div>
            <div>
              <dt>Total</dt>
              <dd>{credits(balance.balance_micros)}</dd>
            </div>
            {balance.debt_micros > 0 && (
              <div>
                <dt>Owed</dt>
                <dd className="bad">{credits(balance.debt_micros)}</dd>
              </div>
            )}
          </dl>
        </div>
      )}
    </Card>
  );
}

function LowBalance() {
  const { balance } = useSession();
  const [threshold, setThreshold] = useState(() => read(THRESHOLD_KEY) ?? '5');
  const [error, setError] = useState<string | null>(null);
  const micros = toMicros(threshold);
  const low = balance && micros !== null && balance.available_micros < micros;
  return (
    <Card title="Low-balance warning">
      {low && (
        <Alert kind="warning" title="Low balance.">
          {credits(balance.available_micros)} credits left, below your {threshold}. <Link href="/billing">Buy credits</Link>
        </Alert>
      )}
      <Field
        label="Warn me below (credits)"
        inputMode="decimal"
        value={threshold}
        error={error}
        onChange={(e) => {
          const v = e.target.value;
          setThreshold(v);
          if (toMicros(v) === null) setError('Enter a number of credits, like 5 or 2.5.');
          else {
            setError(null);
            write(THRESHOLD_KEY, v);
          }
        }}
        hint="Stored in this browser."
      />
    </Card>
  );
}

function UsageChart({ tick }: { tick: number }) {
  const { api } = useSession();
  const [days, setDays] = useState<7 | 30>(7);
  const today = new Date();
  const from = isoDay(addDays(today, -(days - 1)));
  const to = isoDay(addDays(today, 1));
  const summary = useAsync(
    (signal) => api.get<UsageSummary>('/api/usage/summary', { group_by: 'day', from, to }, { signal }),
    [from, to, tick],
  );
  const bars = useMemo(() => {
    const byDay = new Map((summary.data?.series ?? []).map((s) => [s.period?.slice(0, 10), s.charged_micros]));
    return Array.from({ length: days }, (_, i) => {
      const d = isoDay(addDays(new Date(from + 'T00:00:00Z'), i));
      return { label: day(d + 'T00:00:00Z'), value: byDay.get(d) ?? 0 };
    });
  }, [summary.data, days, from]);
  return (
    <Card
      title="Usage"
      className="span-2"
      actions={
        <div className="segmented" role="group" aria-label="Period">
          {([7, 30] as const).map((n) => (
            <button key={n} aria-pressed={days === n} onClick={() => setDays(n)}>
              {n} days
            </button>
          ))}
        </div>
      }
    >
      {summary.error && !summary.data ? (
        <ErrorState error={summary.error} onRetry={summary.reload} />
      ) : !summary.data ? (
        <Loading />
      ) : (
        <>
          <p className="muted small">
            {int(summary.data.totals.requests)} requests · {int(summary.data.totals.input_tokens + summary.data.totals.output_tokens)} tokens ·{' '}
            {credits(summary.data.totals.charged_micros)} credits
          </p>
          {summary.data.totals.requests === 0 ? (
            <Empty title="No usage in this period">
              <Link href="/playground">Try a model in the playground</Link>.
            </Empty>
          ) : (
            <BarChart bars={bars} title={`Credits used per day, last ${days} days`} format={(v) => credits(v)} />
          )}
        </>
      )}
    </Card>
  );
}

function Activity({ tick }: { tick: number }) {
  const { api } = useSession();
  const pages = useCursor();
  const [model, setModel] = useState('');
  const [outcome, setOutcome] = useState('');
  const [search, setSearch] = useState('');
  const models = useAsync((signal) => api.get<{ data: Model[] }>('/v1/models', undefined, { signal }), []);
  const list = useAsync(
    (signal) => api.get<Page<UsageRecord>>('/api/usage', { limit: 10, cursor: pages.cursor, model, outcome }, { signal }),
    [pages.cursor, model, outcome, tick],
  );
  const q = search.trim().toLowerCase();
  const rows = (list.data?.data ?? []).filter(
    (r) => !q || r.request_id.toLowerCase().includes(q) || r.model.toLowerCase().includes(q) || r.provider.toLowerCase().includes(q),
  );
  return (
    <Card title="Recent activity" className="span-3">
      <div className="filters">
        <SelectField
          label="Model"
          value={model}
          onChange={(e) => {
            setModel(e.target.value);
            pages.reset();
          }}
        >
          <option value="">All models</option>
          {(models.data?.data ?? []).map((m) => (
            <option key={m.id} value={m.id}>
              {m.id}
            </option>
          ))}
        </SelectField>
        <SelectField
          label="Outcome"
          value={outcome}
          onChange={(e) => {
            setOutcome(e.target.value);
            pages.reset();
          }}
        >
          <option value="">Any outcome</option>
          <option value="completed">Completed</option>
          <option value="cancelled">Cancelled</option>
          <option value="broken">Failed</option>
        </SelectField>
        <Field label="Search this page" type="search" value={search} onChange={(e) => setSearch(e.target.value)} placeholder="request id, model, provider" />
      </div>
      {list.error && !list.data ? (
        <ErrorState error={list.error} onRetry={list.reload} />
      ) : !list.data ? (
        <Loading />
      ) : rows.length === 0 ? (
        <Empty title={q || model || outcome ? 'Nothing matches' : 'No requests yet'}>
          {q || model || outcome ? 'Change the filters or the search.' : 'Requests you make with your account or API keys show here.'}
        </Empty>
      ) : (
        <div className="table-wrap" tabIndex={0} role="region" aria-label="Activity table">
          <table className="table" data-testid="activity">
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Model</th>
                <th scope="col">Via</th>
                <th scope="col" className="num">
                  Tokens in / out
                </th>
                <th scope="col" className="num">
                  Credits
                </th>
                <th scope="col">Outcome</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => (
                <tr key={r.request_id}>
                  <td>{dateTime(r.recorded_at)}</td>
                  <td>{r.model}</td>
                  <td>{r.api_key_id ? 'API key' : 'Signed in'}</td>
                  <td className="num">
                    {int(r.input_tokens)} / {int(r.output_tokens)}
                  </td>
                  <td className="num">{credits(r.charged_micros)}</td>
                  <td>
                    <Badge kind={r.outcome === 'completed' ? 'good' : r.outcome === 'broken' ? 'bad' : 'warn'}>{r.outcome}</Badge>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Pager
        label="Activity"
        page={pages.page}
        hasNext={!!list.data?.next_cursor}
        onPrev={pages.prev}
        onNext={() => list.data?.next_cursor && pages.next(list.data.next_cursor)}
      />
    </Card>
  );
}

function QuickActions() {
  return (
    <Card title="Quick actions">
      <ul className="actions">
        <li>
          <Link href="/playground" className="btn btn-primary btn-block">
            Open the playground
          </Link>
        </li>
        <li>
          <Link href="/billing" className="btn btn-secondary btn-block">
            Buy credits or redeem a code
          </Link>
        </li>
        <li>
          <Link href="/keys" className="btn btn-secondary btn-block">
            Create an API key
          </Link>
        </li>
        <li>
          <Link href="/usage" className="btn btn-secondary btn-block">
            Usage and CSV export
          </Link>
        </li>
      </ul>
    </Card>
  );
}

export default function Dashboard() {
  const { user } = useSession();
  const tick = useActivityTick();
  return (
    <div className="page">
      <h1>Welcome{user?.display_name ? `, ${user.display_name}` : ''}</h1>
      <div className="grid">
        <BalanceCard />
        <UsageChart tick={tick} />
        <LowBalance />
        <QuickActions />
        <Activity tick={tick} />
      </div>
    </div>
  );
}
