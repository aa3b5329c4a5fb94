// Signed-out pages: sign in, register, forgot and reset password.

import { useEffect, useState, type FormEvent, type ReactNode } from 'react';
import { Link, useLocation, useSearch } from 'wouter';
import { ApiError } from '../api/client';
import { useSession } from '../auth/session';
import { emailError, passwordError, passwordStrength } from '../lib/validate';
import { Alert, Button, Field, describeError } from '../ui/kit';
import { ThemeToggle } from '../ui/theme';

export function AuthFrame({ title, children, footer }: { title: string; children: ReactNode; footer?: ReactNode }) {
  return (
    <div className="auth">
      <div className="auth-top">
        <span className="brand">Smart AI Hub</span>
        <ThemeToggle />
      </div>
      <main id="main" className="auth-card">
        <h1>{title}</h1>
        {children}
        {footer && <div className="auth-foot">{footer}</div>}
      </main>
    </div>
  );
}

/** Whether Google sign-in is on: `GET /api/auth/options` → `{google: bool}`; off when the
 *  hub does not say. */
function useGoogleEnabled(): boolean {
  const { api } = useSession();
  const [on, setOn] = useState(false);
  useEffect(() => {
    let live = true;
    api
      .get<{ google?: boolean }>('/api/auth/options', undefined, { auth: false })
      .then((o) => live && setOn(o?.google === true))
      .catch(() => undefined);
    return () => {
      live = false;
    };
  }, [api]);
  return on;
}

function GoogleButton({ label }: { label: string }) {
  const on = useGoogleEnabled();
  if (!on) return null;
  return (
    <>
      <div className="or" aria-hidden="true">
        <span>or</span>
      </div>
      <a className="btn btn-secondary btn-block" href="/api/auth/google">
        <svg width="18" height="18" viewBox="0 0 48 48" aria-hidden="true">
          <path fill="#EA4335" d="M24 9.5c3.5 0 6.6 1.2 9 3.6l6.7-6.7C35.6 2.4 30.2 0 24 0 14.6 0 6.6 5.4 2.7 13.3l7.8 6C12.4 13.6 17.7 9.5 24 9.5z" />
          <path fill="#4285F4" d="M46.1 24.5c0-1.6-.1-3.1-.4-4.5H24v9h12.4c-.5 2.9-2.2 5.3-4.6 6.9l7.5 5.8c4.4-4 6.8-10 6.8-17.2z" />
          <path fill="#FBBC05" d="M10.5 28.7A14.5 14.5 0 019.5 24c0-1.6.3-3.2.8-4.7l-7.8-6A24 24 0 000 24c0 3.9.9 7.5 2.6 10.7l7.9-6z" />
          <path fill="#34A853" d="M24 48c6.5 0 11.9-2.1 15.9-5.8l-7.5-5.8c-2.1 1.4-4.8 2.3-8.4 2.3-6.3 0-11.6-4.2-13.5-9.9l-7.9 6C6.6 42.6 14.6 48 24 48z" />
        </svg>
        {label}
      </a>
    </>
  );
}

export function SignIn() {
  const { signIn, endedReason } = useSession();
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [remember, setRemember] = useState(true);
  const [errors, setErrors] = useState<{ email?: string | null; password?: string | null; form?: string | null }>({});
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    const next = { email: emailError(email), password: password ? null : 'Enter your password.' };
    setErrors(next);
    if (next.email || next.password) return;
    setBusy(true);
    try {
      await signIn(email.trim(), password, remember);
    } catch (err) {
      const form =
        err instanceof ApiError && err.status === 401 ? 'Wrong email or password.' : describeError(err);
      setErrors({ form });
      setBusy(false);
    }
  }

  return (
    <AuthFrame
      title="Sign in"
      footer={
        <>
          New here? <Link href="/register">Create an account</Link>
        </>
      }
    >
      {endedReason && <Alert kind="info">{endedReason}</Alert>}
      {errors.form && <Alert kind="error">{errors.form}</Alert>}
      <form onSubmit={submit} noValidate>
        <Field label="Email" type="email" name="email" autoComplete="email" value={email} onChange={(e) => setEmail(e.target.value)} error={errors.email} />
        <Field
          label="Password"
          type="password"
          name="password"
          autoComplete="current-password"
          value={password}
          onChange={(e) => setPassword(e.target.value)}
          error={errors.password}
        />
        <div className="row between">
          <label className="check">
            <input type="checkbox" checked={remember} onChange={(e) => setRemember(e.target.checked)} /> Remember me
          </label>
          <Link href="/forgot-password">Forgot password?</Link>
        </div>
        <Button type="submit" className="btn-block" busy={busy}>
          Sign in
        </Button>
      </form>
      <GoogleButton label="Sign in with Google" />
    </AuthFrame>
  );
}

export function StrengthMeter({ password }: { password: string }) {
  const s = passwordStrength(password);
  return (
    <div className="strength" aria-live="polite">
      <div className="strength-track" aria-hidden="true">
        <div className={`strength-fill s${s.score}`} style={{ width: `${(s.score / 4) * 100}%` }} />
      </div>
      <span className="small muted">Strength: {s.label}</span>
    </div>
  );
}

export function Register() {
  const { register } = useSession();
  const [form, setForm] = useState({ name: '', email: '', password: '', confirm: '', terms: false });
  const [errors, setErrors] = useState<Record<string, string | null>>({});
  const [busy, setBusy] = useState(false);
  const set = (k: keyof typeof form) => (e: { target: { value: string; checked?: boolean; type?: string } }) =>
    setForm((f) => ({ ...f, [k]: e.target.type === 'checkbox' ? e.target.checked : e.target.value }));

  async function submit(e: FormEvent) {
    e.preventDefault();
    const next: Record<string, string | null> = {
      email: emailError(form.email),
      password: passwordError(form.password, form.email),
      confirm: form.confirm !== form.password ? 'The passwords do not match.' : null,
      terms: form.terms ? null : 'Accept the terms to create an account.',
    };
    setErrors(next);
    if (Object.values(next).some(Boolean)) return;
    setBusy(true);
    try {
      await register({ email: form.email.trim(), password: form.password, firstName: form.name.trim() || undefined });
    } catch (err) {
      if (err instanceof ApiError && err.code === 'email_taken') {
        setErrors({ email: 'An account already uses this address. Sign in instead.' });
      } else if (err instanceof ApiError && err.code === 'weak_password') {
        setErrors({ password: err.message });
      } else if (err instanceof ApiError && err.code === 'invalid_email') {
        setErrors({ email: err.message });
      } else {
        setErrors({ form: describeError(err) });
      }
      setBusy(false);
    }
  }

  return (
    <AuthFrame
      title="Create your account"
      footer={
        <>
          Already have an account? <Link href="/signin">Sign in</Link>
        </>
      }
    >
      {errors.form && <Alert kind="error">{errors.form}</Alert>}
      <form onSubmit={submit} noValidate>
        <Field label="First name (optional)" name="name" autoComplete="given-name" value={form.name} onChange={set('name')} />
        <Field label="Email" type="email" name="email" autoComplete="email" value={form.email} onChange={set('email')} error={errors.email} />
        <Field
          label="Password"
          type="password"
          name="password"
          autoComplete="new-password"
          value={form.password}
          onChange={set('password')}
          error={errors.password}
          hint="8 or more characters, with a letter and a digit or symbol."
        />
        <StrengthMeter password={form.password} />
        <Field
          label="Confirm password"
          type="password"
          name="confirm"
          autoComplete="new-password"
          value={form.confirm}
          onChange={set('confirm')}
          error={errors.confirm}
        />
        <div className="field">
          <label className="check">
            <input
              type="checkbox"
              name="terms"
              checked={form.terms}
              onChange={set('terms')}
              aria-invalid={errors.terms ? true : undefined}
              aria-describedby={errors.terms ? 'terms-error' : undefined}
            />{' '}
            I accept the terms of service and the privacy policy
          </label>
          {errors.terms && (
            <div className="field-error" id="terms-error" role="alert">
              {errors.terms}
            </div>
          )}
        </div>
        <Button type="submit" className="btn-block" busy={busy}>
          Create account
        </Button>
      </form>
      <GoogleButton label="Sign up with Google" />
    </AuthFrame>
  );
}

export function Forgot() {
  const { api } = useSession();
  const [email, setEmail] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [formError, setFormError] = useState<string | null>(null);
  const [sent, setSent] = useState(false);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    const err = emailError(email);
    setError(err);
    if (err) return;
    setBusy(true);
    setFormError(null);
    try {
      await api.post('/api/auth/forgot-password', { email: email.trim() }, { auth: false });
      setSent(true);
    } catch (e2) {
      setFormError(describeError(e2));
    } finally {
      setBusy(false);
    }
  }

  return (
    <AuthFrame
      title="Forgot your password?"
      footer={
        <>
          Remembered it? <Link href="/signin">Sign in</Link>
        </>
      }
    >
      {sent ? (
        <Alert kind="success">If an account uses this address, a reset link is on its way. It works for one hour.</Alert>
      ) : (
        <>
          <p className="muted">Enter your email and we will send you a link to choose a new password.</p>
          {formError && <Alert kind="error">{formError}</Alert>}
          <form onSubmit={submit} noValidate>
            <Field label="Email" type="email" name="email" autoComplete="email" value={email} onChange={(e) => setEmail(e.target.value)} error={error} />
            <Button type="submit" className="btn-block" busy={busy}>
              Send reset link
            </Button>
          </form>
        </>
      )}
    </AuthFrame>
  );
}

export function Reset() {
  const { api } = useSession();
  const search = useSearch();
  const [, navigate] = useLocation();
  const token = new URLSearchParams(search).get('token') ?? '';
  const [password, setPassword] = useState('');
  const [confirm, setConfirm] = useState('');
  const [errors, setErrors] = useState<Record<string, string | null>>({});
  const [done, setDone] = useState(false);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    const next = {
      password: passwordError(password),
      confirm: confirm !== password ? 'The passwords do not match.' : null,
    };
    setErrors(next);
    if (next.password || next.confirm) return;
    setBusy(true);
    try {
      await api.post('/api/auth/reset-password', { token, password }, { auth: false });
      // The reset ends every session, this one too.
      api.forget();
      setDone(true);
    } catch (err) {
      if (err instanceof ApiError && err.code === 'invalid_reset_token') {
        setErrors({ form: 'This link is used, expired or replaced by a newer one. Ask for a new link.' });
      } else if (err instanceof ApiError && err.code === 'weak_password') {
        setErrors({ password: err.message });
      } else setErrors({ form: describeError(err) });
    } finally {
      setBusy(false);
    }
  }

  return (
    <AuthFrame title="Choose a new password" footer={<Link href="/forgot-password">Ask for a new link</Link>}>
      {!token ? (
        <Alert kind="error">This page needs the link from the reset email. Ask for a new link below.</Alert>
      ) : done ? (
        <>
          <Alert kind="success">Your password is changed. Every device was signed out.</Alert>
          <Button className="btn-block" onClick={() => navigate('/signin')}>
            Sign in
          </Button>
        </>
      ) : (
        <>
          {errors.form && <Alert kind="error">{errors.form}</Alert>}
          <form onSubmit={submit} noValidate>
            <Field
              label="New password"
              type="password"
              autoComplete="new-password"
              value={password}
              onChange={(e) => setPassword(e.target.value)}
              error={errors.password}
              hint="8 or more characters, with a letter and a digit or symbol."
            />
            <StrengthMeter password={password} />
            <Field
              label="Confirm new password"
              type="password"
              autoComplete="new-password"
              value={confirm}
              onChange={(e) => setConfirm(e.target.value)}
              error={errors.confirm}
            />
            <Button type="submit" className="btn-block" busy={busy}>
              Set password
            </Button>
          </form>
        </>
      )}
    </AuthFrame>
  );
}
