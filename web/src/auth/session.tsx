// The signed-in state of the app: the API client, the user, the live socket and the
// balance it keeps current.

import { createContext, useCallback, useContext, useEffect, useMemo, useRef, useState, type ReactNode } from 'react';
import { Api, type Session } from '../api/client';
import type { Balance, User } from '../api/types';
import { LiveSocket, type LiveStatus } from '../live/socket';
import { read, write } from '../lib/storage';

/** Set while this browser believes it holds a refresh cookie (it cannot read it). */
const HINT = 'aihub.session';
/** '0' when the user did not ask to be remembered. */
const REMEMBER = 'aihub.remember';
/** A cookie without Max-Age: gone when the browser closes, shared by the tabs. */
const LIVE_COOKIE = 'aihub_live';

export type BootState = 'booting' | 'signedOut' | 'signedIn';

export interface SessionValue {
  api: Api;
  live: LiveSocket;
  state: BootState;
  user: User | null;
  balance: Balance | null;
  balanceError: Error | null;
  liveStatus: LiveStatus;
  /** Set when the hub ended the session (expired, logged out elsewhere, suspended). */
  endedReason: string | null;
  signIn: (email: string, password: string, remember: boolean) => Promise<void>;
  register: (body: { email: string; password: string; firstName?: string }) => Promise<void>;
  signOut: () => Promise<void>;
  signOutEverywhere: () => Promise<void>;
  setUser: (user: User) => void;
  reloadBalance: () => void;
}

const Ctx = createContext<SessionValue | null>(null);

export function useSession(): SessionValue {
  const v = useContext(Ctx);
  if (!v) throw new Error('useSession outside SessionProvider');
  return v;
}

function hasLiveCookie(): boolean {
  return document.cookie.split(';').some((c) => c.trim().startsWith(`${LIVE_COOKIE}=`));
}

function markRemember(remember: boolean) {
  write(REMEMBER, remember ? '1' : '0');
  if (!remember) document.cookie = `${LIVE_COOKIE}=1; path=/; SameSite=Strict`;
}

export function SessionProvider({ children, api: given, live: givenLive }: { children: ReactNode; api?: Api; live?: LiveSocket }) {
  const api = useMemo(() => given ?? new Api(), [given]);
  const live = useMemo(() => givenLive ?? new LiveSocket(api), [givenLive, api]);
  const [session, setSession] = useState<Session | null>(api.current);
  const [state, setState] = useState<BootState>(api.current ? 'signedIn' : 'booting');
  const [balance, setBalance] = useState<Balance | null>(null);
  const [balanceError, setBalanceError] = useState<Error | null>(null);
  const [liveStatus, setLiveStatus] = useState<LiveStatus>(live.status);
  const [endedReason, setEndedReason] = useState<string | null>(null);
  const signingOut = useRef(false);

  // Session changes from the client (refresh, forget on a 401).
  useEffect(
    () =>
      api.subscribe((s) => {
        setSession(s);
        if (s) {
          write(HINT, '1');
          setState('signedIn');
        } else {
          write(HINT, null);
          setState((prev) => {
            if (prev === 'signedIn' && !signingOut.current) setEndedReason('Your session ended. Sign in again.');
            return 'signedOut';
          });
        }
      }),
    [api],
  );

  // Boot: trade the cookie for an access token, if this browser signed in before.
  useEffect(() => {
    if (api.current) return;
    let cancelled = false;
    (async () => {
      if (read(HINT) !== '1') {
        setState('signedOut');
        return;
      }
      if (read(REMEMBER) === '0' && !hasLiveCookie()) {
        // "Remember me" was off and the browser has been closed since: end that sign-in.
        await api.logout().catch(() => undefined);
        write(HINT, null);
        if (!cancelled) setState('signedOut');
        return;
      }
      try {
        const s = await api.refresh();
        if (!cancelled && !s) setState('signedOut');
      } catch {
        if (!cancelled) setState('signedOut');
      }
    })();
    return () => {
      cancelled = true;
    };
  }, [api]);

  const userId = session?.user.id ?? null;

  const loadBalance = useCallback(() => {
    if (!api.current) return;
    api
      .get<Balance>('/api/credits/balance')
      .then((b) => {
        setBalanceError(null);
        setBalance((prev) => (prev && prev.account_id === b.account_id && prev.version > b.version ? prev : b));
      })
      .catch((e: Error) => setBalanceError(e));
  }, [api]);

  // The socket and the balance follow the signed-in user.
  useEffect(() => {
    if (!userId) {
      live.stop();
      setBalance(null);
      return;
    }
    const offStatus = live.onStatus((status) => {
      setLiveStatus(status);
      // After a (re)connect, pushes may have been missed: read the balance again.
      if (status === 'open') loadBalance();
      if (status === 'suspended') {
        setEndedReason('This account is suspended.');
        api.forget();
      }
    });
    const offMessages = live.subscribe((m) => {
      if (m.type !== 'balance.updated') return;
      const b = m as unknown as Balance;
      setBalance((prev) => {
        if (prev && prev.account_id && b.account_id && prev.account_id !== b.account_id) return prev;
        if (prev && typeof b.version === 'number' && b.version < prev.version) return prev;
        return { ...(prev ?? {}), ...b } as Balance;
      });
    });
    loadBalance();
    live.start();
    return () => {
      offStatus();
      offMessages();
      live.stop();
    };
  }, [userId, live, api, loadBalance]);

  const signIn = useCallback(
    async (email: string, password: string, remember: boolean) => {
      setEndedReason(null);
      await api.login(email, password);
      markRemember(remember);
    },
    [api],
  );

  const register = useCallback(
    async (body: { email: string; password: string; firstName?: string }) => {
      setEndedReason(null);
      await api.register(body);
      markRemember(true);
    },
    [api],
  );

  const signOut = useCallback(async () => {
    signingOut.current = true;
    try {
      live.stop();
      await api.logout().catch(() => undefined);
    } finally {
      signingOut.current = false;
    }
  }, [api, live]);

  const signOutEverywhere = useCallback(async () => {
    signingOut.current = true;
    try {
      live.stop();
      await api.logoutAll();
    } finally {
      signingOut.current = false;
    }
  }, [api, live]);

  const value: SessionValue = {
    api,
    live,
    state,
    user: session?.user ?? null,
    balance,
    balanceError,
    liveStatus,
    endedReason,
    signIn,
    register,
    signOut,
    signOutEverywhere,
    setUser: (u) => api.updateUser(u),
    reloadBalance: loadBalance,
  };
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}
