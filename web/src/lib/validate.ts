// Field checks that mirror the hub's rules, so mistakes show next to the field before a
// round trip. The hub checks again; its answer wins.

export function emailError(email: string): string | null {
  const e = email.trim();
  if (!e) return 'Enter your email address.';
  if (e.length > 254) return 'This address is too long.';
  if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(e)) return 'Enter an address like name@example.com.';
  return null;
}

/** The hub's rule (docs/auth.md): 8–128 characters, a letter and a non-letter, and not
 *  containing the email's local part when that has 4 or more characters. */
export function passwordError(password: string, email = ''): string | null {
  if (!password) return 'Enter a password.';
  if (password.length < 8) return 'Use at least 8 characters.';
  if (password.length > 128) return 'Use at most 128 characters.';
  if (!/\p{L}/u.test(password) || !/[^\p{L}]/u.test(password)) {
    return 'Use at least one letter and one digit or symbol.';
  }
  const local = email.trim().toLowerCase().split('@')[0] ?? '';
  if (local.length >= 4 && password.toLowerCase().includes(local)) {
    return 'Do not put your email address in your password.';
  }
  return null;
}

export type Strength = { score: 0 | 1 | 2 | 3 | 4; label: string };

/** A rough strength estimate for the meter: length and variety. */
export function passwordStrength(password: string): Strength {
  if (!password) return { score: 0, label: 'Empty' };
  let score = 0;
  if (password.length >= 8) score++;
  if (password.length >= 12) score++;
  const kinds = [/[a-z]/, /[A-Z]/, /\d/, /[^A-Za-z0-9]/].filter((r) => r.test(password)).length;
  if (kinds >= 2) score++;
  if (kinds >= 3 && password.length >= 10) score++;
  const s = Math.min(score, 4) as Strength['score'];
  return { score: s, label: ['Too short', 'Weak', 'Fair', 'Good', 'Strong'][s] };
}

export function codeError(code: string): string | null {
  if (!/^\d{6}$/.test(code.trim())) return 'The code is six digits.';
  return null;
}
