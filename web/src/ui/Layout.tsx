// The signed-in frame: a sidebar on wide screens, a drawer on phones, the header with the
// live balance, theme switch and the account menu.

import { useEffect, useRef, useState, type ReactNode } from 'react';
import { Link, useLocation } from 'wouter';
import { useSession } from '../auth/session';
import { credits } from '../lib/format';
import { ThemeToggle } from './theme';
import { Alert } from './kit';

interface NavItem {
  href: string;
  label: string;
  roles?: string[];
}

export const NAV: NavItem[] = [
  { href: '/', label: 'Dashboard' },
  { href: '/playground', label: 'Playground' },
  { href: '/usage', label: 'Usage' },
  { href: '/billing', label: 'Billing' },
  { href: '/keys', label: 'API keys' },
  { href: '/admin', label: 'Admin', roles: ['admin'] },
  { href: '/audit', label: 'Audit', roles: ['auditor', 'admin'] },
];

export function allowed(roles: string[] | undefined, userRoles: string[]): boolean {
  return !roles || roles.some((r) => userRoles.includes(r));
}

export function Layout({ children }: { children: ReactNode }) {
  const { user, balance, liveStatus, signOut, signOutEverywhere } = useSession();
  const [location] = useLocation();
  const [open, setOpen] = useState(false);
  const [menu, setMenu] = useState(false);
  const drawerRef = useRef<HTMLElement>(null);
  const toggleRef = useRef<HTMLButtonElement>(null);
  const roles = user?.roles ?? [];

  useEffect(() => setOpen(false), [location]);
  useEffect(() => {
    if (!open) return;
    drawerRef.current?.querySelector<HTMLElement>('a')?.focus();
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape') {
        setOpen(false);
        toggleRef.current?.focus();
      }
    };
    document.addEventListener('keydown', onKey);
    return () => document.removeEventListener('keydown', onKey);
  }, [open]);

  // The account menu closes on Escape, on a click elsewhere and when focus leaves it.
  const menuRef = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!menu) return;
    const away = (e: Event) => {
      if (menuRef.current && !menuRef.current.contains(e.target as Node)) setMenu(false);
    };
    document.addEventListener('pointerdown', away);
    document.addEventListener('focusin', away);
    return () => {
      document.removeEventListener('pointerdown', away);
      document.removeEventListener('focusin', away);
    };
  }, [menu]);
  useEffect(() => setMenu(false), [location]);

  const items = NAV.filter((n) => allowed(n.roles, roles));
  return (
    <div className={`shell${open ? ' drawer-open' : ''}`}>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <button
          ref={toggleRef}
          className="icon-btn menu-btn"
          aria-label="Open navigation"
          aria-expanded={open}
          aria-controls="sidenav"
          onClick={() => setOpen((o) => !o)}
        >
          <svg width="22" height="22" viewBox="0 0 24 24" aria-hidden="true">
            <path d="M3 6h18M3 12h18M3 18h18" stroke="currentColor" strokeWidth="2" />
          </svg>
        </button>
        <Link href="/" className="brand">
          Smart AI Hub
        </Link>
        <div className="topbar-right">
          <span className="top-balance" data-testid="top-balance" title="Available credits">
            <span className={`dot dot-${liveStatus}`} aria-hidden="true" />
            <span className="sr-only">{liveStatus === 'open' ? 'Live. ' : 'Not live. '}</span>
            {balance ? credits(balance.available_micros) : '—'}
            <span className="unit"> credits</span>
          </span>
          <ThemeToggle />
          <div className="menu" ref={menuRef}>
            <button className="icon-btn account-btn" aria-haspopup="true" aria-expanded={menu} onClick={() => setMenu((m) => !m)}>
              <span className="avatar" aria-hidden="true">
                {(user?.display_name ?? user?.email ?? '?').slice(0, 1).toUpperCase()}
              </span>
              <span className="sr-only">Account menu</span>
            </button>
            {menu && (
              <div className="menu-pop" onKeyDown={(e) => e.key === 'Escape' && setMenu(false)}>
                <p className="muted small">{user?.email}</p>
                <button className="menu-item" onClick={() => void signOut()}>
                  Sign out
                </button>
                <button className="menu-item" onClick={() => void signOutEverywhere()}>
                  Sign out everywhere
                </button>
              </div>
            )}
          </div>
        </div>
      </header>
      <nav id="sidenav" ref={drawerRef} className="sidenav" aria-label="Main">
        <ul>
          {items.map((n) => (
            <li key={n.href}>
              <Link href={n.href} className={location === n.href ? 'active' : undefined} aria-current={location === n.href ? 'page' : undefined}>
                {n.label}
              </Link>
            </li>
          ))}
        </ul>
        <div className="sidenav-foot">
          <button className="linkish" onClick={() => void signOut()}>
            Sign out
          </button>
        </div>
      </nav>
      {open && <div className="scrim" aria-hidden="true" onClick={() => setOpen(false)} />}
      <main id="main" tabIndex={-1}>
        {user && !user.email_verified && location !== '/verify-email' && (
          <Alert kind="warning">
            Your email address is not verified yet. <Link href="/verify-email">Enter the six-digit code</Link> we sent you.
          </Alert>
        )}
        {children}
      </main>
    </div>
  );
}
