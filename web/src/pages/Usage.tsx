import { useState } from 'react';
import type { UsageGroup, UsageSummary } from '../api/types';
import { useSession } from '../auth/session';
import { addDays, credits, day, int, isoDay } from '../lib/format';
import { useAsync } from '../lib/useAsync';
import { BarChart } from '../ui/BarChart';
import { Alert, Button, Card, Empty, ErrorState, Field, Loading, describeError } from '../ui/kit';

function rangeError(from: string, to: string): string | null {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(from) || !/^\d{4}-\d{2}-\d{2}$/.test(to)) return 'Pick both dates.';
  if (from > to) return 'The start must be on or before the end.';
  return null;
}

function change(now: number, before: number): string {
  if (before === 0) return now === 0 ? 'no change' : 'new';
  const pct = ((now - before) / before) * 100;
  return `${pct >= 0 ? '+' : ''}${pct.toFixed(0)}% vs the previous period`;
}

function GroupTable({ rows, keyName, label }: { rows: UsageGroup[]; keyName: 'model' | 'provider'; label: string }) {
  return (
    <div className="table-wrap" tabIndex={0} role="region" aria-label={`${label} table`}>
      <table className="table">
        <thead>
          <tr>
            <th scope="col">{label}</th>
            <th scope="col" className="num">Requests</th>
            <th scope="col" className="num">Tokens in</th>
            <th scope="col" className="num">Tokens out</th>
            <th scope="col" className="num">Credits</th>
            <th scope="col" className="num">Per request</th>
            <th scope="col" className="num">Errors</th>
            <th scope="col" className="num">p95 latency</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={String(r[keyName])}>
              <td>{r[keyName]}</td>
              <td className="num">{int(r.requests)}</td>
              <td className="num">{int(r.input_tokens)}</td>
              <td className="num">{int(r.output_tokens)}</td>
              <td className="num">{credits(r.charged_micros)}</td>
              <td className="num">{r.requests ? credits(Math.round(r.charged_micros / r.requests)) : '—'}</td>
              <td className="num">{(r.error_rate * 100).toFixed(1)}%</td>
              <td className="num">{r.latency_ms.p95 ?? '—'} ms</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export default function Usage() {
  const { api } = useSession();
  const today = new Date();
  const [draft, setDraft] = useState({ from: isoDay(addDays(today, -29)), to: isoDay(today) });
  const [range, setRange] = useState(draft);
  const [error, setError] = useState<string | null>(null);
  const [exporting, setExporting] = useState(false);
  const [exportError, setExportError] = useState<string | null>(null);
  // `to` is exclusive on the hub: the day after the last one shown.
  const q = { from: range.from, to: isoDay(addDays(new Date(range.to + 'T00:00:00Z'), 1)) };
  const spanDays = Math.round((Date.parse(q.to) - Date.parse(q.from)) / 86_400_000);
  const prev = { from: isoDay(addDays(new Date(q.from + 'T00:00:00Z'), -spanDays)), to: q.from };

  const data = useAsync(
    async (signal) => {
      const [byDay, byModel, byProvider, before] = await Promise.all(
        ['day', 'model', 'provider', ''].map((g, i) =>
          api.get<UsageSummary>('/api/usage/summary', { ...(i === 3 ? prev : q), group_by: g || undefined }, { signal }),
        ),
      );
      return { byDay, byModel, byProvider, before };
    },
    [q.from, q.to],
  );

  async function exportCsv() {
    setExporting(true);
    setExportError(null);
    try {
      const response = await api.request<Response>('GET', '/api/usage/export', { query: { ...q, format: 'csv' }, raw: true, headers: { accept: 'text/csv' } });
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = `usage-${range.from}-to-${range.to}.csv`;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      setExportError(describeError(e));
    } finally {
      setExporting(false);
    }
  }

  const d = data.data;
  const days = d
    ? Array.from({ length: spanDays }, (_, i) => {
        const key = isoDay(addDays(new Date(q.from + 'T00:00:00Z'), i));
        const g = d.byDay.series.find((s) => s.period?.slice(0, 10) === key);
        return { key, label: day(key + 'T00:00:00Z'), credits: g?.charged_micros ?? 0, requests: g?.requests ?? 0 };
      })
    : [];

  return (
    <div className="page">
      <h1>Usage</h1>
      <Card>
        <form
          className="filters"
          onSubmit={(e) => {
            e.preventDefault();
            const err = rangeError(draft.from, draft.to);
            setError(err);
            if (!err) setRange(draft);
          }}
          noValidate
        >
          <Field label="From" type="date" value={draft.from} onChange={(e) => setDraft({ ...draft, from: e.target.value })} />
          <Field label="To (inclusive)" type="date" value={draft.to} onChange={(e) => setDraft({ ...draft, to: e.target.value })} error={error} />
          <Button type="submit" variant="secondary">
            Show
          </Button>
          <Button type="button" onClick={exportCsv} busy={exporting}>
            Export CSV
          </Button>
        </form>
        {exportError && <Alert kind="error">{exportError}</Alert>}
      </Card>
      {data.error && !d ? (
        <ErrorState error={data.error} onRetry={data.reload} />
      ) : !d ? (
        <Loading />
      ) : d.byDay.totals.requests === 0 ? (
        <Empty title="No usage in this range">Pick another range, or make a request in the playground.</Empty>
      ) : (
        <div className="grid">
          <Card title="Totals" className="span-3">
            <dl className="stats">
              <div>
                <dt>Requests</dt>
                <dd>{int(d.byDay.totals.requests)}</dd>
                <dd className="small muted">{change(d.byDay.totals.requests, d.before.totals.requests)}</dd>
              </div>
              <div>
                <dt>Credits</dt>
                <dd>{credits(d.byDay.totals.charged_micros)}</dd>
                <dd className="small muted">{change(d.byDay.totals.charged_micros, d.before.totals.charged_micros)}</dd>
              </div>
              <div>
                <dt>Tokens</dt>
                <dd>{int(d.byDay.totals.input_tokens + d.byDay.totals.output_tokens)}</dd>
              </div>
              <div>
                <dt>Error rate</dt>
                <dd>{(d.byDay.totals.error_rate * 100).toFixed(1)}%</dd>
              </div>
            </dl>
          </Card>
          <Card title="Credits per day" className="span-3">
            <BarChart bars={days.map((x) => ({ label: x.label, value: x.credits }))} title="Credits per day" format={(v) => credits(v)} />
          </Card>
          <Card title="Requests per day" className="span-3">
            <BarChart bars={days.map((x) => ({ label: x.label, value: x.requests }))} title="Requests per day" format={int} />
          </Card>
          <Card title="Cost per model" className="span-3">
            <BarChart
              horizontal
              bars={d.byModel.series.map((s) => ({ label: s.model ?? '?', value: s.charged_micros }))}
              title="Credits per model"
              format={(v) => credits(v)}
            />
            <GroupTable rows={d.byModel.series} keyName="model" label="Model" />
          </Card>
          <Card title="By provider" className="span-3">
            <GroupTable rows={d.byProvider.series} keyName="provider" label="Provider" />
          </Card>
        </div>
      )}
    </div>
  );
}
