import { useState, type FormEvent } from 'react';
import { ApiError } from '../api/client';
import type { PackageList, Page, Payment, Redeemed } from '../api/types';
import { useSession } from '../auth/session';
import { credits, dateTime, money } from '../lib/format';
import { useAsync } from '../lib/useAsync';
import { Alert, Badge, Button, Card, Empty, ErrorState, Field, Loading, Pager, describeError, useCursor } from '../ui/kit';

/** Every refusal of POST /api/promos/redeem, in words. */
export const PROMO_REFUSALS: Record<string, string> = {
  promo_code_unknown: 'There is no promo code with this name. Check the spelling.',
  promo_code_not_yet_valid: 'This code is not valid yet. Try again once its offer starts.',
  promo_code_expired: 'This code has expired.',
  promo_code_disabled: 'This code has been switched off by the team that issued it.',
  promo_code_exhausted: 'This code has been redeemed as many times as it allows.',
  promo_code_already_redeemed: 'You have already redeemed this code. Each account can use it once.',
  invalid_promo_code: 'That does not look like a promo code.',
};

export function promoMessage(error: unknown): string {
  if (error instanceof ApiError && PROMO_REFUSALS[error.code]) return PROMO_REFUSALS[error.code];
  return describeError(error);
}

const STATUS: Record<string, { label: string; kind: 'good' | 'bad' | 'warn' | 'neutral' }> = {
  paid: { label: 'Paid', kind: 'good' },
  started: { label: 'Started', kind: 'neutral' },
  awaiting_payment: { label: 'Awaiting payment', kind: 'warn' },
  partially_refunded: { label: 'Partly refunded', kind: 'warn' },
  refunded: { label: 'Refunded', kind: 'neutral' },
  failed: { label: 'Failed', kind: 'bad' },
  expired: { label: 'Expired', kind: 'neutral' },
  held: { label: 'Held for review', kind: 'warn' },
  disputed: { label: 'Disputed', kind: 'bad' },
  dispute_lost: { label: 'Dispute lost', kind: 'bad' },
};

export function PaymentStatus({ status }: { status: string }) {
  const s = STATUS[status] ?? { label: status, kind: 'neutral' as const };
  return <Badge kind={s.kind}>{s.label}</Badge>;
}

function Packages() {
  const { api } = useSession();
  const list = useAsync((signal) => api.get<PackageList>('/api/payments/packages', undefined, { auth: false, signal }), []);
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);

  async function buy(id: string) {
    setBusy(id);
    setError(null);
    try {
      const started = await api.post<{ url: string | null }>('/api/payments/checkout', { packageId: id }, { headers: { 'idempotency-key': crypto.randomUUID() } });
      if (!started.url) throw new Error('The payment page did not come back. Try again.');
      window.location.assign(started.url);
    } catch (e) {
      setError(e instanceof ApiError && e.code === 'payments_not_configured' ? 'Card payments are not set up on this hub.' : describeError(e));
      setBusy(null);
    }
  }

  return (
    <Card title="Buy credits" className="span-3">
      {list.error ? (
        <ErrorState error={list.error} onRetry={list.reload} />
      ) : !list.data ? (
        <Loading />
      ) : list.data.packages.length === 0 ? (
        <Empty title="No credit packages are for sale" />
      ) : (
        <>
          {!list.data.checkout_enabled && <Alert kind="info">Card payments are not set up on this hub yet; promo codes still work.</Alert>}
          {error && <Alert kind="error">{error}</Alert>}
          <ul className="packages">
            {list.data.packages.map((p) => (
              <li key={p.id} className="package">
                <h3>{p.name}</h3>
                <p className="big">{credits(p.credits_micros, 0)}</p>
                <p className="muted small">credits</p>
                <p>{money(p.price_cents, p.currency)}</p>
                <Button onClick={() => buy(p.id)} busy={busy === p.id} disabled={!list.data!.checkout_enabled || (busy !== null && busy !== p.id)}>
                  Buy {p.name}
                </Button>
              </li>
            ))}
          </ul>
          <p className="muted small">You pay on Stripe&apos;s page and come back here; the credits show as soon as the payment is confirmed.</p>
        </>
      )}
    </Card>
  );
}

function Promo() {
  const { api } = useSession();
  const [code, setCode] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<Redeemed | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (!code.trim()) {
      setError('Enter a promo code.');
      return;
    }
    setBusy(true);
    setError(null);
    setDone(null);
    try {
      const r = await api.post<Redeemed>('/api/promos/redeem', { code: code.trim() });
      setDone(r);
      setCode('');
    } catch (err) {
      setError(promoMessage(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <Card title="Redeem a promo code">
      <form onSubmit={submit} noValidate>
        <Field label="Promo code" name="promo" autoComplete="off" value={code} onChange={(e) => setCode(e.target.value)} error={error} />
        <Button type="submit" busy={busy}>
          Redeem
        </Button>
      </form>
      {done && (
        <Alert kind="success">
          {credits(done.credits_micros)} credits added with {done.code}. Your balance is now {credits(done.balance_after_micros)}.
        </Alert>
      )}
    </Card>
  );
}

function History() {
  const { api } = useSession();
  const pages = useCursor();
  const list = useAsync((signal) => api.get<Page<Payment>>('/api/payments/history', { limit: 10, cursor: pages.cursor }, { signal }), [pages.cursor]);
  return (
    <Card title="Payment history" className="span-2">
      {list.error ? (
        <ErrorState error={list.error} onRetry={list.reload} />
      ) : !list.data ? (
        <Loading />
      ) : list.data.data.length === 0 ? (
        <Empty title="No payments yet">Packages you buy show here with their status.</Empty>
      ) : (
        <div className="table-wrap" tabIndex={0} role="region" aria-label="Payments table">
          <table className="table">
            <thead>
              <tr>
                <th scope="col">Date</th>
                <th scope="col">Package</th>
                <th scope="col" className="num">Credits</th>
                <th scope="col" className="num">Amount</th>
                <th scope="col">Status</th>
              </tr>
            </thead>
            <tbody>
              {list.data.data.map((p) => (
                <tr key={p.session_id}>
                  <td>{dateTime(p.created_at)}</td>
                  <td>{p.package_id}</td>
                  <td className="num">{credits(p.credits_micros)}</td>
                  <td className="num">
                    {money(p.amount_cents, p.currency)}
                    {p.refunded_cents > 0 && <div className="small muted">refunded {money(p.refunded_cents, p.currency)}</div>}
                  </td>
                  <td>
                    <PaymentStatus status={p.status} />
                    {p.failure_reason && <div className="small muted">{p.failure_reason}</div>}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Pager label="Payments" page={pages.page} hasNext={!!list.data?.next_cursor} onPrev={pages.prev} onNext={() => list.data?.next_cursor && pages.next(list.data.next_cursor)} />
    </Card>
  );
}

export default function Billing() {
  return (
    <div className="page">
      <h1>Billing</h1>
      <div className="grid">
        <Packages />
        <Promo />
        <History />
      </div>
    </div>
  );
}
