import { useState, type FormEvent } from 'react';
import { Link, useLocation } from 'wouter';
import { ApiError } from '../api/client';
import type { User } from '../api/types';
import { useSession } from '../auth/session';
import { codeError } from '../lib/validate';
import { Alert, Button, Card, Field, describeError } from '../ui/kit';

const REFUSALS: Record<string, string> = {
  wrong_code: 'That code is not right. Check the latest email and try again.',
  verification_code_expired: 'This code has expired. Send a new one.',
  verification_locked: 'Too many wrong codes for this address. Contact support to verify it.',
  invalid_code: 'The code is six digits.',
};

export default function Verify() {
  const { api, user, setUser } = useSession();
  const [, navigate] = useLocation();
  const [code, setCode] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [note, setNote] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [sending, setSending] = useState(false);

  if (user?.email_verified) {
    return (
      <div className="page narrow">
        <h1>Email verified</h1>
        <Alert kind="success">{user.email} is verified.</Alert>
        <p>
          <Link href="/">Go to the dashboard</Link>
        </p>
      </div>
    );
  }

  async function submit(e: FormEvent) {
    e.preventDefault();
    const err = codeError(code);
    setError(err);
    if (err) return;
    setBusy(true);
    try {
      const answer = await api.post<{ user: User }>('/api/auth/verify-email', { code: code.trim() });
      setUser(answer.user);
      navigate('/');
    } catch (e2) {
      setError(e2 instanceof ApiError && REFUSALS[e2.code] ? REFUSALS[e2.code] : describeError(e2));
      setBusy(false);
    }
  }

  async function resend() {
    setSending(true);
    setNote(null);
    try {
      await api.post('/api/auth/resend-verification');
      setNote('A new code is on its way. It replaces the previous one.');
    } catch (e2) {
      setNote(e2 instanceof ApiError && e2.status === 429 ? 'You can ask for a new code once a minute.' : describeError(e2));
    } finally {
      setSending(false);
    }
  }

  return (
    <div className="page narrow">
      <h1>Verify your email</h1>
      <Card>
        <p>
          We sent a six-digit code to <strong>{user?.email}</strong>. It is valid for 15 minutes.
        </p>
        <form onSubmit={submit} noValidate>
          <Field
            label="Verification code"
            name="code"
            inputMode="numeric"
            autoComplete="one-time-code"
            pattern="[0-9]*"
            maxLength={6}
            className="code-field"
            value={code}
            onChange={(e) => setCode(e.target.value.replace(/\D/g, '').slice(0, 6))}
            error={error}
          />
          <div className="row">
            <Button type="submit" busy={busy}>
              Verify
            </Button>
            <Button type="button" variant="secondary" busy={sending} onClick={resend}>
              Send a new code
            </Button>
          </div>
        </form>
        {note && <Alert kind="info">{note}</Alert>}
      </Card>
      <p className="muted">
        You can also <Link href="/">verify later</Link>; some features may ask for it.
      </p>
    </div>
  );
}
