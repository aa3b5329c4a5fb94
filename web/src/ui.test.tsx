import { act, cleanup, fireEvent, render, screen, waitFor } from '@testing-library/react';
import { afterEach, describe, expect, it } from 'vitest';
import { Router } from 'wouter';
import { memoryLocation } from 'wouter/memory-location';
import { Api, ApiError } from './api/client';
import { App } from './App';
import { SessionProvider } from './auth/session';
import { LiveSocket, type SocketLike } from './live/socket';
import { credits, toMicros } from './lib/format';
import { passwordError, passwordStrength } from './lib/validate';
import { PROMO_REFUSALS, promoMessage } from './pages/Billing';
import { BarChart } from './ui/BarChart';

afterEach(cleanup);

type Route = (url: URL, init: RequestInit) => Response | undefined;
const ok = (body: unknown, status = 200) => new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });

function fakeFetch(routes: Route) {
  return (async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = new URL(String(input), 'http://hub');
    const r = routes(url, init ?? {});
    if (!r) return ok({ error: { code: 'not_found', message: `no route ${url.pathname}` } }, 404);
    return r;
  }) as unknown as typeof fetch;
}

class Socket implements SocketLike {
  static last: Socket | null = null;
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  constructor() {
    Socket.last = this;
    queueMicrotask(() => {
      this.readyState = 1;
      this.onopen?.({});
    });
  }
  send() {}
  close() {}
}

const user = (roles: string[] = ['user']) => ({
  id: 'u1',
  email: 'erin@example.com',
  email_verified: true,
  display_name: 'Erin',
  roles,
  role: roles.includes('admin') ? 'admin' : 'user',
  has_password: true,
  google_linked: false,
  created_at: null,
});

function mount(path: string, { signedIn = null as null | string[], routes = (() => undefined) as Route } = {}) {
  const api = new Api({
    fetch: fakeFetch((url, init) => {
      const r = routes(url, init);
      if (r) return r;
      switch (url.pathname) {
        case '/api/ws/ticket':
          return ok({ ticket: 't', expires_in: 30 });
        case '/api/credits/balance':
          return ok({ account_id: 'u1', balance_micros: 12_500_000, reserved_micros: 500_000, available_micros: 12_000_000, debt_micros: 0, version: 4 });
        case '/api/usage/summary':
          return ok({ from: null, to: null, group_by: ['day'], series: [], totals: { requests: 0, input_tokens: 0, output_tokens: 0, cached_input_tokens: 0, cost_micros: 0, charged_micros: 0, errors: 0, error_rate: 0, latency_ms: {}, ttft_ms: {} } });
        case '/api/usage':
          return ok({ data: [], next_cursor: null });
        case '/v1/models':
          return ok({ data: [{ id: 'mock-1', pricing: { input: 1_000_000, output: 2_000_000, cached_input: 0, unit: '' }, max_output_tokens: null }] });
      }
      return undefined;
    }),
    locks: null,
    setTimer: () => 0,
    clearTimer: () => undefined,
  });
  if (signedIn) api.adopt({ user: user(signedIn) as never, token: 'tok', token_type: 'Bearer', expires_in: 900 });
  const live = new LiveSocket(api, { WebSocket: Socket, url: () => 'ws://hub/api/ws', setTimer: () => 0, clearTimer: () => undefined });
  const { hook } = memoryLocation({ path });
  render(
    <Router hook={hook}>
      <SessionProvider api={api} live={live}>
        <App />
      </SessionProvider>
    </Router>,
  );
  return { api, live };
}

describe('formatting and rules', () => {
  it('shows every micro-credit and parses credits back', () => {
    expect(credits(10_000_000)).toBe('10.00');
    expect(credits(9_999_958)).toBe('9.999958');
    expect(credits(1_234_567_890_000)).toBe('1,234,567.89');
    expect(toMicros('2.5')).toBe(2_500_000);
    expect(toMicros('0.000001')).toBe(1);
    expect(toMicros('abc')).toBeNull();
    expect(toMicros('1.0000001')).toBeNull();
  });

  it('checks passwords as the hub does', () => {
    expect(passwordError('short1')).toMatch(/8 characters/);
    expect(passwordError('onlyletters')).toMatch(/letter and one digit/);
    expect(passwordError('erin-secret-1', 'erin@example.com')).toMatch(/email/);
    expect(passwordError('password123')).toBeNull();
    expect(passwordStrength('aB3$efghijkl').score).toBe(4);
    expect(passwordStrength('abc').score).toBeLessThan(2);
  });

  it('explains every promo refusal the hub can give', () => {
    for (const code of ['promo_code_unknown', 'promo_code_not_yet_valid', 'promo_code_expired', 'promo_code_disabled', 'promo_code_exhausted', 'promo_code_already_redeemed']) {
      expect(PROMO_REFUSALS[code], code).toBeTruthy();
      expect(promoMessage(new ApiError(422, code, 'raw'))).toBe(PROMO_REFUSALS[code]);
    }
    expect(promoMessage(new ApiError(500, 'internal', 'boom'))).toBe('boom');
  });
});

describe('BarChart', () => {
  it('draws a bar per value and gives screen readers the numbers', () => {
    render(<BarChart title="Credits per day" bars={[{ label: 'Mon', value: 2 }, { label: 'Tue', value: 0 }]} format={(v) => `${v} cr`} />);
    expect(screen.getByRole('img', { name: /Credits per day: highest 2 cr/ })).toBeTruthy();
    expect(document.querySelectorAll('rect.bar')).toHaveLength(2);
    expect(screen.getByRole('table', { name: 'Credits per day' }).textContent).toContain('2 cr');
  });
});

describe('sign-in and register forms', () => {
  it('shows the messages next to the fields, then the hub refusal for the form', async () => {
    mount('/signin', { routes: (url) => (url.pathname === '/api/auth/login' ? ok({ error: { code: 'unauthorized', message: 'no' } }, 401) : undefined) });
    fireEvent.click(await screen.findByRole('button', { name: 'Sign in' }));
    expect(await screen.findByText('Enter your email address.')).toBeTruthy();
    expect(screen.getByText('Enter your password.')).toBeTruthy();
    expect(screen.getByLabelText('Email').getAttribute('aria-invalid')).toBe('true');
    fireEvent.change(screen.getByLabelText('Email'), { target: { value: 'erin@example.com' } });
    fireEvent.change(screen.getByLabelText('Password'), { target: { value: 'whatever-1' } });
    fireEvent.click(screen.getByRole('button', { name: 'Sign in' }));
    expect(await screen.findByText('Wrong email or password.')).toBeTruthy();
  });

  it('register checks confirmation and terms, and maps email_taken to the email field', async () => {
    mount('/register', { routes: (url) => (url.pathname === '/api/auth/register' ? ok({ error: { code: 'email_taken', message: 'already exists' } }, 400) : undefined) });
    fireEvent.change(await screen.findByLabelText('Email'), { target: { value: 'erin@example.com' } });
    fireEvent.change(screen.getByLabelText('Password'), { target: { value: 'Good-pass-42' } });
    fireEvent.change(screen.getByLabelText('Confirm password'), { target: { value: 'Other-pass-42' } });
    fireEvent.click(screen.getByRole('button', { name: 'Create account' }));
    expect(await screen.findByText('The passwords do not match.')).toBeTruthy();
    expect(screen.getByText('Accept the terms to create an account.')).toBeTruthy();
    expect(screen.getByText(/Strength: (Good|Strong)/)).toBeTruthy();
    fireEvent.change(screen.getByLabelText('Confirm password'), { target: { value: 'Good-pass-42' } });
    fireEvent.click(screen.getByLabelText(/I accept the terms/));
    fireEvent.click(screen.getByRole('button', { name: 'Create account' }));
    expect(await screen.findByText(/already uses this address/)).toBeTruthy();
  });

  it('sends a signed-out visitor of a page to sign in', async () => {
    mount('/keys');
    expect(await screen.findByRole('heading', { name: 'Sign in' })).toBeTruthy();
  });
});

describe('signed in', () => {
  it('a user sees no admin or audit link, and the pages say not allowed', async () => {
    mount('/admin', { signedIn: ['user'] });
    expect(await screen.findByRole('heading', { name: 'Not allowed' })).toBeTruthy();
    const nav = screen.getByRole('navigation', { name: 'Main' });
    expect(nav.textContent).not.toMatch(/Admin|Audit/);
  });

  it('an auditor gets the audit link but not the admin one', async () => {
    mount('/', { signedIn: ['user', 'auditor'] });
    const nav = await screen.findByRole('navigation', { name: 'Main' });
    expect(nav.textContent).toContain('Audit');
    expect(nav.textContent).not.toContain('Admin');
  });

  it('the dashboard shows the balance and follows balance.updated pushes without a reload', async () => {
    mount('/', { signedIn: ['user'] });
    await waitFor(() => expect(screen.getByTestId('balance-available').textContent).toBe('12.00'));
    expect(screen.getByTestId('balance-reserved').textContent).toBe('0.50');
    // An older version never overwrites a newer one.
    act(() => Socket.last!.onmessage!({ data: JSON.stringify({ type: 'balance.updated', account_id: 'u1', balance_micros: 1, reserved_micros: 0, available_micros: 1, debt_micros: 0, version: 2 }) }));
    expect(screen.getByTestId('balance-available').textContent).toBe('12.00');
    act(() => Socket.last!.onmessage!({ data: JSON.stringify({ type: 'balance.updated', account_id: 'u1', balance_micros: 11_999_958, reserved_micros: 0, available_micros: 11_999_958, debt_micros: 0, version: 6 }) }));
    expect(screen.getByTestId('balance-available').textContent).toBe('11.999958');
    expect(screen.getByTestId('top-balance').textContent).toContain('11.999958');
  });

  it('the low-balance warning follows the threshold the user sets, kept in localStorage', async () => {
    mount('/', { signedIn: ['user'] });
    await waitFor(() => expect(screen.getByTestId('balance-available').textContent).toBe('12.00'));
    expect(screen.queryByText('Low balance.')).toBeNull();
    fireEvent.change(screen.getByLabelText('Warn me below (credits)'), { target: { value: '20' } });
    expect(await screen.findByText('Low balance.')).toBeTruthy();
    expect(localStorage.getItem('aihub.lowBalanceThreshold')).toBe('20');
    fireEvent.change(screen.getByLabelText('Warn me below (credits)'), { target: { value: 'lots' } });
    expect(screen.getByText(/Enter a number of credits/)).toBeTruthy();
  });
});
