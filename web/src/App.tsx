import { lazy, Suspense, useEffect, type ComponentType } from 'react';
import { Redirect, Route, Switch, useLocation } from 'wouter';
import { useSession } from './auth/session';
import { SignIn, Register, Forgot, Reset } from './pages/auth';
import { Layout, NAV, allowed } from './ui/Layout';
import { Loading } from './ui/kit';

// Signed-in pages load on demand, so the sign-in page ships only what it needs.
const Dashboard = lazy(() => import('./pages/Dashboard'));
const Playground = lazy(() => import('./pages/Playground'));
const Usage = lazy(() => import('./pages/Usage'));
const Billing = lazy(() => import('./pages/Billing'));
const PaymentReturn = lazy(() => import('./pages/PaymentReturn'));
const Keys = lazy(() => import('./pages/Keys'));
const Admin = lazy(() => import('./pages/Admin'));
const Audit = lazy(() => import('./pages/Audit'));
const Verify = lazy(() => import('./pages/Verify'));

const TITLES: Record<string, string> = {
  '/signin': 'Sign in',
  '/register': 'Create account',
  '/forgot-password': 'Forgot password',
  '/reset-password': 'Reset password',
  '/verify-email': 'Verify email',
  '/payments/success': 'Payment',
  '/payments/cancel': 'Payment cancelled',
};

function useTitle() {
  const [location] = useLocation();
  useEffect(() => {
    const nav = NAV.find((n) => n.href === location);
    const t = nav?.label ?? TITLES[location];
    document.title = t ? `${t} · Smart AI Hub` : 'Smart AI Hub';
  }, [location]);
}

function Forbidden() {
  return (
    <div className="page">
      <h1>Not allowed</h1>
      <p className="state state-error" role="alert">
        This page is for other roles. Ask an administrator if you need access.
      </p>
    </div>
  );
}

function NotFound() {
  return (
    <div className="page">
      <h1>Page not found</h1>
      <p>There is nothing at this address.</p>
    </div>
  );
}

function guarded(Page: ComponentType, roles?: string[]) {
  return function Guarded() {
    const { user } = useSession();
    if (!allowed(roles, user?.roles ?? [])) return <Forbidden />;
    return <Page />;
  };
}

const AdminPage = guarded(Admin, ['admin']);
const AuditPage = guarded(Audit, ['auditor', 'admin']);

export function App() {
  const { state } = useSession();
  const [location] = useLocation();
  useTitle();

  if (state === 'booting') {
    return (
      <div className="boot">
        <Loading label="Signing you in…" />
      </div>
    );
  }

  if (location === '/reset-password') return <Reset />;

  if (state === 'signedOut') {
    return (
      <Switch>
        <Route path="/signin" component={SignIn} />
        <Route path="/register" component={Register} />
        <Route path="/forgot-password" component={Forgot} />
        <Route>
          <Redirect to={`/signin${location !== '/' ? `?next=${encodeURIComponent(location)}` : ''}`} replace />
        </Route>
      </Switch>
    );
  }

  return (
    <Layout>
      <Suspense fallback={<Loading />}>
        <Switch>
          <Route path="/" component={Dashboard} />
          <Route path="/playground" component={Playground} />
          <Route path="/usage" component={Usage} />
          <Route path="/billing" component={Billing} />
          <Route path="/payments/success" component={PaymentReturn} />
          <Route path="/payments/cancel" component={PaymentReturn} />
          <Route path="/keys" component={Keys} />
          <Route path="/admin" component={AdminPage} />
          <Route path="/audit" component={AuditPage} />
          <Route path="/verify-email" component={Verify} />
          <Route path="/signin">
            <Redirect to={nextPath()} replace />
          </Route>
          <Route path="/register">
            <Redirect to="/verify-email" replace />
          </Route>
          <Route component={NotFound} />
        </Switch>
      </Suspense>
    </Layout>
  );
}

/** Where to go after signing in: `?next=` when it is one of ours. */
export function nextPath(search: string = typeof location !== 'undefined' ? location.search : ''): string {
  const next = new URLSearchParams(search).get('next');
  return next && next.startsWith('/') && !next.startsWith('//') ? next : '/';
}
