// Amounts are integer micro-credits on the wire: 1 credit = 1,000,000.

export const MICROS = 1_000_000;

/** Credits with every significant micro-credit: a request of a few tokens costs a few
 *  millionths, and a balance that drops by them must show it. */
export function credits(micros: number, digits = 6): string {
  const value = micros / MICROS;
  return value.toLocaleString('en-US', { minimumFractionDigits: Math.min(2, digits), maximumFractionDigits: digits });
}

export function toMicros(creditsText: string): number | null {
  const t = creditsText.trim();
  if (!/^\d+(\.\d{1,6})?$/.test(t)) return null;
  const [whole, frac = ''] = t.split('.');
  return Number(whole) * MICROS + Number(frac.padEnd(6, '0'));
}

export function money(cents: number, currency: string): string {
  try {
    return (cents / 100).toLocaleString('en-US', { style: 'currency', currency: currency.toUpperCase() });
  } catch {
    return `${(cents / 100).toFixed(2)} ${currency.toUpperCase()}`;
  }
}

export function dateTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString('en-GB', { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

export function day(iso: string): string {
  const d = new Date(iso);
  return d.toLocaleDateString('en-GB', { month: 'short', day: 'numeric', timeZone: 'UTC' });
}

export function int(n: number): string {
  return n.toLocaleString('en-US');
}

/** YYYY-MM-DD of a date in UTC. */
export function isoDay(d: Date): string {
  return d.toISOString().slice(0, 10);
}

export function addDays(d: Date, n: number): Date {
  const c = new Date(d.getTime());
  c.setUTCDate(c.getUTCDate() + n);
  return c;
}

/** Price per million tokens, in credits. */
export function pricePerMillion(micros: number): string {
  return credits(micros, 4);
}
