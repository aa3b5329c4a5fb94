// Shapes of the hub's answers (see api/src/routes/*.rs and app/src/queries/*.rs).

export type Role = 'user' | 'admin' | 'analyst' | 'auditor';

export interface User {
  id: string;
  email: string | null;
  email_verified: boolean;
  display_name: string | null;
  roles: Role[];
  role: Role;
  has_password: boolean;
  google_linked: boolean;
  created_at: string | null;
}

export interface SignedIn {
  user: User;
  token: string;
  token_type: string;
  expires_in: number;
}

export interface Balance {
  account_id: string;
  balance_micros: number;
  reserved_micros: number;
  available_micros: number;
  debt_micros: number;
  version: number;
  updated_at?: string | null;
}

export interface Page<T> {
  data: T[];
  next_cursor: string | null;
}

export interface LedgerEntry {
  sequence: number;
  kind: string;
  amount_micros: number;
  balance_after_micros: number;
  cause: { type: string; id: string };
  description: string | null;
  actor: string | null;
  stream_sequence: number;
  recorded_at: string;
}

export interface AuditLedgerEntry extends LedgerEntry {
  account_id: string;
}

export interface UsageRecord {
  request_id: string;
  user_id: string;
  api_key_id: string | null;
  model: string;
  provider: string;
  outcome: string;
  input_tokens: number;
  output_tokens: number;
  cached_input_tokens: number;
  token_source: string;
  latency_ms: number | null;
  first_token_ms: number | null;
  cost_micros: number;
  charged_micros: number;
  price_version: string;
  stream_sequence: number;
  recorded_at: string;
}

export interface Percentiles {
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

export interface UsageMetrics {
  requests: number;
  input_tokens: number;
  output_tokens: number;
  cached_input_tokens: number;
  cost_micros: number;
  charged_micros: number;
  errors: number;
  error_rate: number;
  latency_ms: Percentiles;
  ttft_ms: Percentiles;
}

export interface UsageGroup extends UsageMetrics {
  period?: string;
  model?: string;
  provider?: string;
  user_id?: string;
  api_key_id?: string | null;
}

export interface UsageSummary {
  from: string | null;
  to: string | null;
  group_by: string[];
  series: UsageGroup[];
  totals: UsageMetrics;
}

export interface Model {
  id: string;
  pricing: { unit: string; input: number; output: number; cached_input: number };
  max_output_tokens: number | null;
  /** What the model takes; an embedding model (`embedding_dimensions` set) answers no chat. */
  capabilities?: { embedding_dimensions: number | null; vision: boolean; tools: boolean; reasoning: boolean };
}

export interface CreditPackage {
  id: string;
  name: string;
  credits: number;
  credits_micros: number;
  price_cents: number;
  currency: string;
}

export interface PackageList {
  packages: CreditPackage[];
  checkout_enabled: boolean;
}

export interface Payment {
  session_id: string;
  status: string;
  package_id: string;
  credits_micros: number;
  amount_cents: number;
  currency: string;
  refunded_cents: number;
  credits_taken_back_micros: number;
  failure_reason: string | null;
  created_at: string;
  paid_at: string | null;
  updated_at: string;
}

export interface Redeemed {
  code: string;
  credits_micros: number;
  balance_after_micros: number;
  balance: Balance;
}

export interface ApiKey {
  id: string;
  prefix: string;
  name: string;
  spending_limit_micros: number | null;
  expires_at: string | null;
  created_at: string;
  revoked_at: string | null;
  scopes: string[];
}

export interface CreatedKey extends ApiKey {
  key: string;
}

export interface UserRow {
  id: string;
  email: string;
  display_name: string | null;
  roles: string[];
  email_verified: boolean;
  has_password: boolean;
  google_linked: boolean;
  api_keys_live: number;
  registered_at: string;
  suspended_at: string | null;
}

export interface PromoRow {
  code: string;
  credits_micros: number;
  max_redemptions: number;
  redemptions: number;
  valid_from: string | null;
  valid_until: string | null;
  active: boolean;
  created_by: string;
  created_at: string;
}

export interface TrialLine {
  account: string;
  debits_micros: number;
  credits_micros: number;
  debit_balance_micros: number;
  credit_balance_micros: number;
}

export interface TrialBalance {
  as_of: string | null;
  accounts: TrialLine[];
  total_debits_micros: number;
  total_credits_micros: number;
  total_debit_balances_micros: number;
  total_credit_balances_micros: number;
  balanced: boolean;
  users_balance_micros: number;
  legs: number;
  journal_checkpoint: number;
}

export interface AccountAsOf {
  account_id: string;
  as_of: string | null;
  events_folded: number;
  through_sequence: number;
  last_event_at: string | null;
  balance_micros: number;
  reserved_micros: number;
  available_micros: number;
  debt_micros: number;
  active_reservations: number;
  ledger: LedgerEntry[];
  ledger_next_cursor: string | null;
}

export interface VerifyReport {
  started_at: string;
  finished_at: string;
  passed: boolean;
  events: number;
  events_per_second: number;
  accounts: number;
  payments: number;
  stream: string;
  stream_messages: number;
  pending_publication: number;
  read_model_behind: number;
  checkpoints: number;
  checks: { check: string; passed: boolean; discrepancies: number }[];
  discrepancies: { check: string; subject: string; detail: string }[];
}
