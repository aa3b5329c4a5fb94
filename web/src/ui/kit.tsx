// Small building blocks: fields with their messages, states, buttons, pagination.

import { useId, useState, type ButtonHTMLAttributes, type InputHTMLAttributes, type ReactNode, type SelectHTMLAttributes } from 'react';
import { ApiError } from '../api/client';

export function Button({
  variant = 'primary',
  busy = false,
  children,
  className,
  ...rest
}: ButtonHTMLAttributes<HTMLButtonElement> & { variant?: 'primary' | 'secondary' | 'danger' | 'ghost'; busy?: boolean }) {
  return (
    <button
      className={`btn btn-${variant}${className ? ` ${className}` : ''}`}
      aria-busy={busy || undefined}
      {...rest}
      disabled={rest.disabled || busy}
    >
      {busy && <span className="spin" aria-hidden="true" />}
      {children}
    </button>
  );
}

interface FieldProps extends InputHTMLAttributes<HTMLInputElement> {
  label: string;
  error?: string | null;
  hint?: ReactNode;
}

/** A labelled input with its hint and its error right below it. */
export function Field({ label, error, hint, id, className, ...rest }: FieldProps) {
  const auto = useId();
  const fid = id ?? auto;
  const described = [hint ? `${fid}-hint` : null, error ? `${fid}-error` : null].filter(Boolean).join(' ') || undefined;
  return (
    <div className={`field${className ? ` ${className}` : ''}`}>
      <label htmlFor={fid}>{label}</label>
      <input id={fid} aria-invalid={error ? true : undefined} aria-describedby={described} {...rest} />
      {hint && (
        <div className="hint" id={`${fid}-hint`}>
          {hint}
        </div>
      )}
      {error && (
        <div className="field-error" id={`${fid}-error`} role="alert">
          {error}
        </div>
      )}
    </div>
  );
}

export function SelectField({
  label,
  error,
  children,
  id,
  ...rest
}: SelectHTMLAttributes<HTMLSelectElement> & { label: string; error?: string | null }) {
  const auto = useId();
  const fid = id ?? auto;
  return (
    <div className="field">
      <label htmlFor={fid}>{label}</label>
      <select id={fid} aria-invalid={error ? true : undefined} aria-describedby={error ? `${fid}-error` : undefined} {...rest}>
        {children}
      </select>
      {error && (
        <div className="field-error" id={`${fid}-error`} role="alert">
          {error}
        </div>
      )}
    </div>
  );
}

export function Alert({ kind = 'info', children, title }: { kind?: 'info' | 'error' | 'warning' | 'success'; children: ReactNode; title?: string }) {
  return (
    <div className={`alert alert-${kind}`} role={kind === 'error' || kind === 'warning' ? 'alert' : 'status'}>
      {title && <strong>{title} </strong>}
      {children}
    </div>
  );
}

export function Loading({ label = 'Loading…' }: { label?: string }) {
  return (
    <div className="state state-loading" role="status" aria-live="polite">
      <span className="spin" aria-hidden="true" /> {label}
    </div>
  );
}

export function Empty({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="state state-empty">
      <p className="state-title">{title}</p>
      {children && <div className="muted">{children}</div>}
    </div>
  );
}

/** Words a person can act on, for an API error. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.status === 0 || error.code === 'network') return 'The hub could not be reached. Check your connection.';
    if (error.status === 429) {
      return error.retryAfter ? `Too many attempts. Try again in ${error.retryAfter} s.` : 'Too many attempts. Try again shortly.';
    }
    if (error.status === 503 && error.code === 'busy') return 'The hub is busy. Try again in a moment.';
    if (error.status === 403 && error.code === 'account_suspended') return 'This account is suspended.';
    if (error.status === 403) return 'You do not have access to this.';
    return error.message;
  }
  if (error instanceof TypeError) return 'The hub could not be reached. Check your connection.';
  return error instanceof Error ? error.message : String(error);
}

export function ErrorState({ error, onRetry }: { error: unknown; onRetry?: () => void }) {
  return (
    <div className="state state-error" role="alert">
      <p className="state-title">Something went wrong</p>
      <p>{describeError(error)}</p>
      {onRetry && (
        <Button variant="secondary" onClick={onRetry}>
          Try again
        </Button>
      )}
    </div>
  );
}

export function Card({ title, actions, children, className }: { title?: ReactNode; actions?: ReactNode; children: ReactNode; className?: string }) {
  return (
    <section className={`card${className ? ` ${className}` : ''}`} aria-label={typeof title === 'string' ? title : undefined}>
      {(title || actions) && (
        <header className="card-head">
          {title && <h2>{title}</h2>}
          {actions && <div className="card-actions">{actions}</div>}
        </header>
      )}
      {children}
    </section>
  );
}

export function Badge({ kind = 'neutral', children }: { kind?: 'neutral' | 'good' | 'bad' | 'warn'; children: ReactNode }) {
  return <span className={`badge badge-${kind}`}>{children}</span>;
}

/** Cursor pagination: the cursors of the pages seen so far. */
export function useCursor() {
  const [stack, setStack] = useState<(string | null)[]>([null]);
  const cursor = stack[stack.length - 1];
  return {
    cursor,
    page: stack.length,
    next: (c: string) => setStack((s) => [...s, c]),
    prev: () => setStack((s) => (s.length > 1 ? s.slice(0, -1) : s)),
    reset: () => setStack([null]),
  };
}

export function Pager({ page, hasNext, onPrev, onNext, label }: { page: number; hasNext: boolean; onPrev: () => void; onNext: () => void; label: string }) {
  return (
    <nav className="pager" aria-label={`${label} pages`}>
      <Button variant="secondary" onClick={onPrev} disabled={page <= 1}>
        Previous
      </Button>
      <span aria-live="polite">Page {page}</span>
      <Button variant="secondary" onClick={onNext} disabled={!hasNext}>
        Next
      </Button>
    </nav>
  );
}

export function CopyButton({ text, label = 'Copy' }: { text: string; label?: string }) {
  const [copied, setCopied] = useState<'idle' | 'done' | 'failed'>('idle');
  return (
    <Button
      variant="secondary"
      type="button"
      onClick={async () => {
        try {
          await navigator.clipboard.writeText(text);
          setCopied('done');
        } catch {
          setCopied('failed');
        }
      }}
    >
      {copied === 'done' ? 'Copied' : copied === 'failed' ? 'Copy failed: select and copy' : label}
    </Button>
  );
}
