import { useEffect, useState } from 'react';
import { Link, useLocation, useSearch } from 'wouter';
import type { Page, Payment } from '../api/types';
import { useSession } from '../auth/session';
import { credits } from '../lib/format';
import { Alert, Card, Loading, describeError } from '../ui/kit';
import { PaymentStatus } from './Billing';

const PAID = ['paid', 'partially_refunded', 'refunded', 'disputed', 'dispute_lost'];
const FINAL_BAD = ['failed', 'expired', 'held'];
/** How long the page waits for Stripe's webhook before it says so. */
const PATIENCE_MS = 180_000;

/** The page Stripe sends the customer back to: it waits until the webhook has credited
 *  the account (polling the payment history, and at once on a balance push). */
export default function PaymentReturn() {
  const [location] = useLocation();
  const search = useSearch();
  const { api, live, balance } = useSession();
  const session = new URLSearchParams(search).get('session_id');
  const [payment, setPayment] = useState<Payment | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [gaveUp, setGaveUp] = useState(false);
  const cancelled = location === '/payments/cancel';

  useEffect(() => {
    if (cancelled || !session) return;
    let stop = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = Date.now() + PATIENCE_MS;
    const check = async () => {
      clearTimeout(timer);
      try {
        const page = await api.get<Page<Payment>>('/api/payments/history', { limit: 50 });
        const found = page.data.find((p) => p.session_id === session) ?? null;
        if (stop) return;
        setPayment(found);
        setError(null);
        if (found && (PAID.includes(found.status) || FINAL_BAD.includes(found.status))) return;
      } catch (e) {
        if (!stop) setError(describeError(e));
      }
      if (Date.now() > deadline) {
        setGaveUp(true);
        return;
      }
      if (!stop) timer = setTimeout(check, 1500);
    };
    void check();
    const off = live.subscribe((m) => {
      if (m.type === 'balance.updated') void check();
    });
    return () => {
      stop = true;
      clearTimeout(timer);
      off();
    };
  }, [api, live, session, cancelled]);

  if (cancelled) {
    return (
      <div className="page narrow">
        <h1>Payment cancelled</h1>
        <Alert kind="info">You left the payment page; nothing was charged.</Alert>
        <p>
          <Link href="/billing">Back to billing</Link>
        </p>
      </div>
    );
  }

  const paid = payment && PAID.includes(payment.status);
  return (
    <div className="page narrow">
      <h1>Thank you</h1>
      <Card>
        {!session ? (
          <Alert kind="error">This page needs the payment reference Stripe adds to its address.</Alert>
        ) : paid ? (
          <Alert kind="success" title="Credits added.">
            {credits(payment.credits_micros)} credits are in your account. Available now: {balance ? credits(balance.available_micros) : '—'}.
          </Alert>
        ) : payment && FINAL_BAD.includes(payment.status) ? (
          <Alert kind="error" title="Not credited.">
            The payment ended as <PaymentStatus status={payment.status} />
            {payment.failure_reason ? `: ${payment.failure_reason}` : ''}. If you were charged, contact support with reference {session}.
          </Alert>
        ) : gaveUp ? (
          <Alert kind="warning">
            The payment is not confirmed yet. It can take a few minutes; your credits will show on the dashboard when it is. Reference: {session}.
          </Alert>
        ) : (
          <Loading label="Waiting for the payment to be confirmed…" />
        )}
        {error && <Alert kind="error">{error}</Alert>}
      </Card>
      <p>
        <Link href="/">Go to the dashboard</Link> · <Link href="/billing">Billing</Link>
      </p>
    </div>
  );
}
