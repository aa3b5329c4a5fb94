use chrono::{DateTime, Utc};
use hub_domain::CreditEvent;
use hub_nats::EventEnvelope;
use sqlx::{PgConnection, Row};
use std::borrow::Cow;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The aggregate type the credit projections read (`CreditAccount`'s cqrs-es type name).
pub(crate) const CREDIT_ACCOUNT: &str = "CreditAccount";
/// The aggregate type the users projection reads.
const USER: &str = "User";
/// The aggregate type the payments projection reads.
const PAYMENT: &str = "Payment";
/// The aggregate type the promos projection reads.
const PROMO_CODE: &str = "PromoCode";

/// The projections the hub keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectionKind {
    /// `balances` and `active_reservations`: where each account stands.
    Balances,
    /// `ledger`: one row per movement of a balance, with its cause.
    Ledger,
    /// `users`: who is registered, with their roles (for admins' listings).
    Users,
    /// `usage_records`: one row per settled inference request, and `usage_rollups`, their
    /// hourly sums (for analysts).
    Usage,
    /// `payments`: one row per Stripe Checkout Session (a user's payment history).
    Payments,
    /// `promo_codes`: one row per promo code with its redemption count (for admins).
    Promos,
    /// `journal`: every movement of credit as balanced double-entry legs between the
    /// user's accounts and the hub's system accounts (for auditors' trial balance).
    Journal,
    /// `low_balance_state`: whether each account's low-balance alert is armed; and, for each
    /// fall below the owner's threshold, a row in `alert_notifications` for the delivery
    /// loop (never emptied by a replay, so an old crossing is never sent again).
    Alerts,
}

/// Unknown projection name.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown projection {0:?} (known: balances, ledger, users, usage, payments, promos, journal, alerts)"
)]
pub struct UnknownProjection(pub String);

impl std::str::FromStr for ProjectionKind {
    type Err = UnknownProjection;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "balances" => Ok(ProjectionKind::Balances),
            "ledger" => Ok(ProjectionKind::Ledger),
            "users" => Ok(ProjectionKind::Users),
            "usage" => Ok(ProjectionKind::Usage),
            "payments" => Ok(ProjectionKind::Payments),
            "promos" => Ok(ProjectionKind::Promos),
            "journal" => Ok(ProjectionKind::Journal),
            "alerts" => Ok(ProjectionKind::Alerts),
            other => Err(UnknownProjection(other.to_string())),
        }
    }
}

impl ProjectionKind {
    pub const ALL: [ProjectionKind; 8] = [
        ProjectionKind::Balances,
        ProjectionKind::Ledger,
        ProjectionKind::Users,
        ProjectionKind::Usage,
        ProjectionKind::Payments,
        ProjectionKind::Promos,
        ProjectionKind::Journal,
        ProjectionKind::Alerts,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProjectionKind::Balances => "balances",
            ProjectionKind::Ledger => "ledger",
            ProjectionKind::Users => "users",
            ProjectionKind::Usage => "usage",
            ProjectionKind::Payments => "payments",
            ProjectionKind::Promos => "promos",
            ProjectionKind::Journal => "journal",
            ProjectionKind::Alerts => "alerts",
        }
    }

    /// The aggregate type whose events it reads.
    pub fn aggregate_type(self) -> &'static str {
        match self {
            ProjectionKind::Balances
            | ProjectionKind::Ledger
            | ProjectionKind::Usage
            | ProjectionKind::Journal
            | ProjectionKind::Alerts => CREDIT_ACCOUNT,
            ProjectionKind::Users => USER,
            ProjectionKind::Payments => PAYMENT,
            ProjectionKind::Promos => PROMO_CODE,
        }
    }

    /// The tables it owns (emptied by a replay).
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            ProjectionKind::Balances => &["balances", "active_reservations"],
            ProjectionKind::Ledger => &["ledger"],
            ProjectionKind::Users => &["users"],
            ProjectionKind::Usage => &[
                "usage_records",
                "usage_rollups",
                "usage_rollups_global",
                "usage_rollups_global_daily",
            ],
            ProjectionKind::Payments => &["payments"],
            ProjectionKind::Promos => &["promo_codes"],
            ProjectionKind::Journal => &["journal"],
            ProjectionKind::Alerts => &["low_balance_state"],
        }
    }

    /// Apply a batch of events, in stream order, inside the caller's transaction. The rows
    /// written are those event-at-a-time application would leave, in a few set-based
    /// statements: the cost of a batch barely depends on its length.
    /// `messages` are envelopes with their stream sequences; those of other aggregate
    /// types are skipped.
    pub async fn apply(
        self,
        conn: &mut PgConnection,
        messages: Vec<(EventEnvelope, u64)>,
    ) -> anyhow::Result<()> {
        let decoded = self.decode(messages)?;
        self.apply_decoded(conn, decoded).await
    }

    /// Decode a batch for this projection: the CPU half of [`ProjectionKind::apply`], which
    /// a replay does for the next batch while the database writes the current one.
    pub fn decode(self, messages: Vec<(EventEnvelope, u64)>) -> anyhow::Result<Decoded> {
        match self {
            ProjectionKind::Users | ProjectionKind::Payments | ProjectionKind::Promos => {
                Ok(Decoded::Envelopes(messages))
            }
            ProjectionKind::Balances
            | ProjectionKind::Ledger
            | ProjectionKind::Usage
            | ProjectionKind::Journal
            | ProjectionKind::Alerts => Ok(Decoded::Credit(Projected::decode_all(messages)?)),
        }
    }

    /// The tables a rebuild loads without their primary keys and unique constraints
    /// (`crate::load`): `usage`'s two that grow by a row per request. None for the others.
    pub fn tables_loaded_without_keys(self) -> &'static [&'static str] {
        match self {
            ProjectionKind::Usage => &["usage_records", "usage_rollups"],
            _ => &[],
        }
    }

    /// Whether a rebuild loads some of this projection's tables without their keys.
    pub fn loads_without_keys(self) -> bool {
        !self.tables_loaded_without_keys().is_empty()
    }

    /// Apply a batch [`ProjectionKind::decode`] made for this projection, inside the caller's
    /// transaction.
    pub async fn apply_decoded(
        self,
        conn: &mut PgConnection,
        batch: Decoded,
    ) -> anyhow::Result<()> {
        self.write_decoded(conn, batch, Writes::Live).await
    }

    /// [`ProjectionKind::apply_decoded`] for a rebuild, which loads the tables
    /// [`ProjectionKind::tables_loaded_without_keys`] names with their keys set aside.
    pub(crate) async fn load_decoded(
        self,
        conn: &mut PgConnection,
        batch: Decoded,
    ) -> anyhow::Result<()> {
        let writes = match self.loads_without_keys() {
            true => Writes::Load,
            false => Writes::Live,
        };
        self.write_decoded(conn, batch, writes).await
    }

    async fn write_decoded(
        self,
        conn: &mut PgConnection,
        batch: Decoded,
        writes: Writes,
    ) -> anyhow::Result<()> {
        let events = match (self, batch) {
            (ProjectionKind::Users, Decoded::Envelopes(messages)) => {
                return crate::users::apply(conn, messages).await
            }
            (ProjectionKind::Payments, Decoded::Envelopes(messages)) => {
                return crate::payments::apply(conn, messages).await
            }
            (ProjectionKind::Promos, Decoded::Envelopes(messages)) => {
                return crate::promos::apply(conn, messages).await
            }
            (_, Decoded::Envelopes(messages)) => Projected::decode_all(messages)?,
            (_, Decoded::Credit(events)) => events,
        };
        if events.is_empty() {
            return Ok(());
        }
        match self {
            ProjectionKind::Balances => apply_balances(conn, &events).await,
            ProjectionKind::Ledger => apply_ledger(conn, &events).await,
            ProjectionKind::Usage => apply_usage(conn, &events, writes).await,
            ProjectionKind::Journal => crate::journal::apply(conn, &events).await,
            ProjectionKind::Alerts => crate::alerts::apply(conn, &events).await,
            ProjectionKind::Users | ProjectionKind::Payments | ProjectionKind::Promos => {
                anyhow::bail!("credit events handed to the {} projection", self.name())
            }
        }
    }
}

/// How a batch's rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writes {
    /// Against every key: a row already there (a redelivered event) is left as it is, or
    /// added to.
    Live,
    /// Into tables whose keys are set aside (a rebuild, `crate::load`): every row is new.
    Load,
}

/// A batch decoded for one projection ([`ProjectionKind::decode`]).
pub enum Decoded {
    /// Envelopes, for the projections that decode their own aggregate's events.
    Envelopes(Vec<(EventEnvelope, u64)>),
    /// Credit account events (those of other aggregates left out).
    Credit(Vec<Projected>),
}

impl Decoded {
    /// The hours (UTC) its credit events were recorded in.
    pub(crate) fn hours(&self) -> anyhow::Result<std::collections::BTreeSet<DateTime<Utc>>> {
        use chrono::{DurationRound, TimeDelta};
        let mut hours = std::collections::BTreeSet::new();
        if let Decoded::Credit(events) = self {
            for e in events {
                hours.insert(e.recorded_at.duration_trunc(TimeDelta::hours(1))?);
            }
        }
        Ok(hours)
    }

    /// Keep only the events after stream sequence `at` (those at or below it were applied).
    pub fn after(self, at: u64) -> Decoded {
        match self {
            Decoded::Envelopes(messages) => {
                Decoded::Envelopes(messages.into_iter().filter(|(_, s)| *s > at).collect())
            }
            Decoded::Credit(events) => Decoded::Credit(
                events
                    .into_iter()
                    .filter(|e| u64::try_from(e.stream_sequence).is_ok_and(|s| s > at))
                    .collect(),
            ),
        }
    }
}

/// A credit event decoded from its envelope, with where it sits in the stream.
#[derive(Debug, Clone)]
pub struct Projected {
    pub account: Uuid,
    /// Its aggregate sequence.
    pub sequence: i64,
    pub stream_sequence: i64,
    pub recorded_at: DateTime<Utc>,
    pub event: CreditEvent,
}

impl Projected {
    /// Decode a batch of envelopes, leaving out the events of other aggregate types.
    pub fn decode_all(messages: Vec<(EventEnvelope, u64)>) -> anyhow::Result<Vec<Self>> {
        let mut events = Vec::with_capacity(messages.len());
        for (envelope, seq) in messages {
            events.extend(Projected::decode(envelope, seq)?);
        }
        Ok(events)
    }

    /// Decode an envelope; `None` for an event of another aggregate type.
    pub fn decode(envelope: EventEnvelope, stream_sequence: u64) -> anyhow::Result<Option<Self>> {
        if envelope.aggregate_type != CREDIT_ACCOUNT {
            return Ok(None);
        }
        Ok(Some(Projected {
            account: envelope.aggregate_id.parse()?,
            sequence: i64::try_from(envelope.sequence)?,
            stream_sequence: i64::try_from(stream_sequence)?,
            recorded_at: envelope.recorded_at,
            event: envelope.payload.decode()?,
        }))
    }
}

/// A reservation's amount and expiry.
type Held = (i64, DateTime<Utc>);

/// `balances` gets each account's last totals; `active_reservations` each request's last
/// state. Statements go in account order, so two writers never deadlock.
async fn apply_balances(conn: &mut PgConnection, events: &[Projected]) -> anyhow::Result<()> {
    // Account → (sequence, balance, reserved, recorded_at) of its latest event.
    let mut latest: BTreeMap<Uuid, (i64, i64, i64, DateTime<Utc>)> = BTreeMap::new();
    // (account, request) → Some((amount, expires_at)) while held, None once it ended.
    let mut reservations: BTreeMap<(Uuid, &str), Option<Held>> = BTreeMap::new();
    // Account → (sequence, debt) of its latest event that changed its debt.
    let mut debts: BTreeMap<Uuid, (i64, i64)> = BTreeMap::new();
    for e in events {
        if let Some(debt) = e.event.debt_after() {
            let slot = debts
                .entry(e.account)
                .or_insert((e.sequence, debt.micros()));
            if e.sequence >= slot.0 {
                *slot = (e.sequence, debt.micros());
            }
        }
        let (balance, reserved) = e.event.totals_after();
        let slot = latest.entry(e.account).or_insert((
            e.sequence,
            balance.micros(),
            reserved.micros(),
            e.recorded_at,
        ));
        if e.sequence >= slot.0 {
            *slot = (
                e.sequence,
                balance.micros(),
                reserved.micros(),
                e.recorded_at,
            );
        }
        match &e.event {
            CreditEvent::CreditsReserved {
                request_id,
                amount,
                expires_at,
                ..
            } => {
                reservations
                    .entry((e.account, request_id.as_str()))
                    // A reservation ends only after it began: keep an end seen first.
                    .or_insert(Some((amount.micros(), *expires_at)));
            }
            CreditEvent::ReservationSettled { request_id, .. }
            | CreditEvent::ReservationReleased { request_id, .. }
            | CreditEvent::ReservationExpired { request_id, .. } => {
                reservations.insert((e.account, request_id.as_str()), None);
            }
            _ => {}
        }
    }

    let mut accounts = Vec::with_capacity(latest.len());
    let mut versions = Vec::with_capacity(latest.len());
    let mut balances = Vec::with_capacity(latest.len());
    let mut reserved = Vec::with_capacity(latest.len());
    let mut updated = Vec::with_capacity(latest.len());
    for (account, (version, balance, held, at)) in latest {
        accounts.push(account);
        versions.push(version);
        balances.push(balance);
        reserved.push(held);
        updated.push(at);
    }
    // `version <` keeps an older event from overwriting a newer one.
    sqlx::query(
        "INSERT INTO balances (account_id, balance_micros, reserved_micros, version, updated_at)
         SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::int8[], $4::int8[], $5::timestamptz[])
         ON CONFLICT (account_id) DO UPDATE
            SET balance_micros = excluded.balance_micros,
                reserved_micros = excluded.reserved_micros,
                version = excluded.version,
                updated_at = excluded.updated_at
          WHERE balances.version < excluded.version",
    )
    .bind(&accounts)
    .bind(&balances)
    .bind(&reserved)
    .bind(&versions)
    .bind(&updated)
    .execute(&mut *conn)
    .await?;

    // Few events change a debt: those accounts' debts, each from its latest such event
    // (every one has its row from the statement above).
    if !debts.is_empty() {
        let (mut debt_accounts, mut debt_sequences, mut debt_amounts) = (
            Vec::with_capacity(debts.len()),
            Vec::with_capacity(debts.len()),
            Vec::with_capacity(debts.len()),
        );
        for (account, (sequence, debt)) in debts {
            debt_accounts.push(account);
            debt_sequences.push(sequence);
            debt_amounts.push(debt);
        }
        sqlx::query(
            "UPDATE balances b
                SET debt_micros = d.debt_micros, debt_version = d.sequence
               FROM UNNEST($1::uuid[], $2::int8[], $3::int8[]) AS d(account_id, sequence, debt_micros)
              WHERE b.account_id = d.account_id AND b.debt_version < d.sequence",
        )
        .bind(&debt_accounts)
        .bind(&debt_sequences)
        .bind(&debt_amounts)
        .execute(&mut *conn)
        .await?;
    }

    let (mut held_accounts, mut held_requests, mut held_amounts, mut held_expiry) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut ended_accounts, mut ended_requests) = (Vec::new(), Vec::new());
    for ((account, request), state) in reservations {
        match state {
            Some((amount, expires_at)) => {
                held_accounts.push(account);
                held_requests.push(request);
                held_amounts.push(amount);
                held_expiry.push(expires_at);
            }
            None => {
                ended_accounts.push(account);
                ended_requests.push(request);
            }
        }
    }
    if !held_accounts.is_empty() {
        sqlx::query(
            "INSERT INTO active_reservations (account_id, request_id, amount_micros, expires_at)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::timestamptz[])
             ON CONFLICT DO NOTHING",
        )
        .bind(&held_accounts)
        .bind(&held_requests)
        .bind(&held_amounts)
        .bind(&held_expiry)
        .execute(&mut *conn)
        .await?;
    }
    if !ended_accounts.is_empty() {
        sqlx::query(
            "DELETE FROM active_reservations r
              USING UNNEST($1::uuid[], $2::text[]) AS ended(account_id, request_id)
              WHERE r.account_id = ended.account_id AND r.request_id = ended.request_id",
        )
        .bind(&ended_accounts)
        .bind(&ended_requests)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// One ledger row: kind, signed amount, balance after, cause.
struct Movement<'a> {
    kind: &'static str,
    amount: i64,
    balance_after: i64,
    cause_type: &'static str,
    cause_id: &'a str,
    /// Borrowed from the event, or written for it (a refund's shortfall).
    description: Option<Cow<'a, str>>,
    actor: Option<&'a str>,
}

fn movement(event: &CreditEvent) -> Option<Movement<'_>> {
    match event {
        CreditEvent::CreditsGranted {
            key,
            amount,
            reason,
            granted_by,
            balance_after,
            ..
        } => Some(Movement {
            kind: "grant",
            amount: amount.micros(),
            balance_after: balance_after.micros(),
            cause_type: "grant",
            cause_id: key.as_str(),
            description: Some(Cow::Borrowed(reason.as_str())),
            actor: Some(granted_by.as_str()),
        }),
        CreditEvent::CreditsPurchased {
            payment_id,
            amount,
            balance_after,
            ..
        } => Some(Movement {
            kind: "purchase",
            amount: amount.micros(),
            balance_after: balance_after.micros(),
            cause_type: "payment",
            cause_id: payment_id.as_str(),
            description: None,
            actor: None,
        }),
        CreditEvent::PromoCreditsApplied {
            code,
            amount,
            balance_after,
            ..
        } => Some(Movement {
            kind: "promo",
            amount: amount.micros(),
            balance_after: balance_after.micros(),
            cause_type: "promo",
            cause_id: code.as_str(),
            description: None,
            actor: None,
        }),
        CreditEvent::CreditsRevoked {
            key,
            payment_id,
            requested,
            taken,
            balance_after,
            debt_after,
            ..
        } => Some(Movement {
            kind: "refund",
            amount: -taken.micros(),
            balance_after: balance_after.micros(),
            cause_type: "payment",
            cause_id: payment_id.as_str(),
            description: Some(Cow::Owned(refund_description(
                key.as_str(),
                *requested,
                *taken,
                *debt_after,
            ))),
            actor: None,
        }),
        CreditEvent::ReservationSettled {
            request_id,
            charged,
            balance_after,
            after_expiry,
            ..
        } => Some(Movement {
            kind: "charge",
            amount: -charged.micros(),
            balance_after: balance_after.micros(),
            cause_type: "request",
            cause_id: request_id.as_str(),
            description: after_expiry.map(|late| Cow::Owned(late_description(late))),
            actor: None,
        }),
        CreditEvent::DebtRepaid {
            payment_id,
            amount,
            balance_after,
            debt_after,
            ..
        } => Some(Movement {
            kind: "debt_repayment",
            amount: -amount.micros(),
            balance_after: balance_after.micros(),
            cause_type: "payment",
            cause_id: payment_id.as_str(),
            description: Some(Cow::Owned(repayment_description(*amount, *debt_after))),
            actor: None,
        }),
        CreditEvent::AccountOpened {}
        | CreditEvent::CreditsReserved { .. }
        | CreditEvent::ReservationReleased { .. }
        | CreditEvent::ReservationExpired { .. } => None,
    }
}

/// A late settlement's ledger text: why it came after the expiry, and what it could not take.
fn late_description(late: hub_domain::LateSettlement) -> String {
    if late.uncollected.micros() == 0 {
        "settled after its reservation expired (the settlement was delayed)".to_string()
    } else {
        format!(
            "settled after its reservation expired (the settlement was delayed); {} credits uncollected (not available by then)",
            late.uncollected
        )
    }
}

/// A refund's ledger text: what it asked back, what it took, and the shortfall (credits
/// already spent or held, which the available balance could not give back), owed as a
/// debt since debts are kept (a refund recorded before says no debt, and none was owed).
fn refund_description(
    key: &str,
    requested: hub_domain::Credits,
    taken: hub_domain::Credits,
    debt_after: hub_domain::Credits,
) -> String {
    let shortfall = hub_domain::Credits::from_micros(requested.micros() - taken.micros());
    if shortfall.micros() == 0 {
        format!("{key}: took back {requested} credits")
    } else if debt_after.micros() == 0 {
        format!(
            "{key}: asked back {requested} credits, took {taken}; shortfall {shortfall} (already spent or held)"
        )
    } else {
        format!(
            "{key}: asked back {requested} credits, took {taken}; shortfall {shortfall} (already spent or held) owed as a debt, repaid from the next credits; debt now {debt_after}"
        )
    }
}

/// A debt repayment's ledger text: what it repaid and what is still owed.
fn repayment_description(amount: hub_domain::Credits, debt_after: hub_domain::Credits) -> String {
    if debt_after.micros() == 0 {
        format!("repaid {amount} credits owed from this refund's shortfall; nothing owed now")
    } else {
        format!(
            "repaid {amount} credits owed from this refund's shortfall; {debt_after} still owed"
        )
    }
}

async fn apply_ledger(conn: &mut PgConnection, events: &[Projected]) -> anyhow::Result<()> {
    let movements: Vec<(&Projected, Movement<'_>)> = events
        .iter()
        .filter_map(|e| movement(&e.event).map(|m| (e, m)))
        .collect();
    let mut rows = LedgerRows::default();
    for (e, m) in &movements {
        rows.accounts.push(e.account);
        rows.sequences.push(e.sequence);
        rows.kinds.push(m.kind);
        rows.amounts.push(m.amount);
        rows.balances_after.push(m.balance_after);
        rows.cause_types.push(m.cause_type);
        rows.cause_ids.push(m.cause_id);
        rows.descriptions.push(m.description.as_deref());
        rows.actors.push(m.actor);
        rows.stream_sequences.push(e.stream_sequence);
        rows.recorded_at.push(e.recorded_at);
    }
    if rows.accounts.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO ledger (account_id, sequence, kind, amount_micros, balance_after_micros,
                             cause_type, cause_id, description, actor, stream_sequence, recorded_at)
         SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::int8[], $5::int8[],
                              $6::text[], $7::text[], $8::text[], $9::text[], $10::int8[],
                              $11::timestamptz[])
         ON CONFLICT (account_id, sequence) DO NOTHING",
    )
    .bind(&rows.accounts)
    .bind(&rows.sequences)
    .bind(&rows.kinds)
    .bind(&rows.amounts)
    .bind(&rows.balances_after)
    .bind(&rows.cause_types)
    .bind(&rows.cause_ids)
    .bind(&rows.descriptions)
    .bind(&rows.actors)
    .bind(&rows.stream_sequences)
    .bind(&rows.recorded_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Ledger rows as columns, for one `UNNEST` insert.
#[derive(Default)]
struct LedgerRows<'a> {
    accounts: Vec<Uuid>,
    sequences: Vec<i64>,
    kinds: Vec<&'static str>,
    amounts: Vec<i64>,
    balances_after: Vec<i64>,
    cause_types: Vec<&'static str>,
    cause_ids: Vec<&'a str>,
    descriptions: Vec<Option<&'a str>>,
    actors: Vec<Option<&'a str>>,
    stream_sequences: Vec<i64>,
    recorded_at: Vec<DateTime<Utc>>,
}

/// One `usage_records` row per settlement that carries usage; the rows that are new add to
/// `usage_rollups`.
async fn apply_usage(
    conn: &mut PgConnection,
    events: &[Projected],
    writes: Writes,
) -> anyhow::Result<()> {
    let mut rows = UsageRows::default();
    let mut records = Vec::new();
    for e in events {
        let CreditEvent::ReservationSettled {
            request_id,
            charged,
            usage: Some(usage),
            ..
        } = &e.event
        else {
            continue;
        };
        let record = crate::rollups::NewUsage {
            account: e.account,
            api_key: usage.api_key.map(|k| k.0),
            model: usage.model.as_str(),
            provider: usage.provider.as_str(),
            outcome: match usage.outcome {
                hub_domain::UsageOutcome::Completed => "completed",
                hub_domain::UsageOutcome::Cancelled => "cancelled",
                hub_domain::UsageOutcome::Broken => "broken",
            },
            recorded_at: e.recorded_at,
            input: i64::try_from(usage.input_tokens)?,
            output: i64::try_from(usage.output_tokens)?,
            cached: i64::try_from(usage.cached_input_tokens)?,
            cost: usage.cost.micros(),
            charged: charged.micros(),
            latency_ms: i64::try_from(usage.latency_ms)?,
            first_token_ms: usage.first_token_ms.map(i64::try_from).transpose()?,
        };
        rows.accounts.push(e.account);
        rows.requests.push(request_id.as_str());
        rows.api_keys.push(record.api_key);
        rows.models.push(record.model);
        rows.providers.push(record.provider);
        rows.input.push(record.input);
        rows.output.push(record.output);
        rows.cached.push(record.cached);
        rows.sources.push(match usage.token_source {
            hub_domain::TokenSource::Provider => "provider",
            hub_domain::TokenSource::Estimated => "estimated",
        });
        rows.latency.push(record.latency_ms);
        rows.first_token.push(record.first_token_ms);
        rows.cost.push(record.cost);
        rows.charged.push(record.charged);
        rows.price_versions.push(usage.price_version.as_str());
        rows.outcomes.push(record.outcome);
        rows.stream_sequences.push(e.stream_sequence);
        rows.recorded_at.push(e.recorded_at);
        records.push((request_id.as_str(), record));
    }
    if rows.accounts.is_empty() {
        return Ok(());
    }
    // Live, only the records written now count: one applied before (a redelivery) is not
    // new. Loading, every record is new; `crate::load` finds the repeats.
    let conflict = match writes {
        Writes::Live => {
            "ON CONFLICT (account_id, request_id) DO NOTHING RETURNING account_id, request_id"
        }
        Writes::Load => "",
    };
    let query = format!(
        "INSERT INTO usage_records (account_id, request_id, api_key_id, model, provider,
                                    input_tokens, output_tokens, cached_input_tokens,
                                    token_source, latency_ms, first_token_ms, cost_micros,
                                    charged_micros, price_version, outcome, stream_sequence,
                                    recorded_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[],
                              $6::int8[], $7::int8[], $8::int8[], $9::text[], $10::int8[],
                              $11::int8[], $12::int8[], $13::int8[], $14::text[], $15::text[],
                              $16::int8[], $17::timestamptz[])
         {conflict}"
    );
    let insert = sqlx::query(&query)
        .bind(&rows.accounts)
        .bind(&rows.requests)
        .bind(&rows.api_keys)
        .bind(&rows.models)
        .bind(&rows.providers)
        .bind(&rows.input)
        .bind(&rows.output)
        .bind(&rows.cached)
        .bind(&rows.sources)
        .bind(&rows.latency)
        .bind(&rows.first_token)
        .bind(&rows.cost)
        .bind(&rows.charged)
        .bind(&rows.price_versions)
        .bind(&rows.outcomes)
        .bind(&rows.stream_sequences)
        .bind(&rows.recorded_at);
    let fresh: Vec<crate::rollups::NewUsage<'_>> = match writes {
        Writes::Live => {
            let mut new = std::collections::HashSet::new();
            for row in insert.fetch_all(&mut *conn).await? {
                new.insert((row.try_get::<Uuid, _>(0)?, row.try_get::<String, _>(1)?));
            }
            records
                .into_iter()
                .filter(|(request, r)| new.remove(&(r.account, request.to_string())))
                .map(|(_, r)| r)
                .collect()
        }
        Writes::Load => {
            insert.execute(&mut *conn).await?;
            records.into_iter().map(|(_, r)| r).collect()
        }
    };
    crate::rollups::add(conn, &fresh, writes).await
}

/// Usage rows as columns, for one `UNNEST` insert.
#[derive(Default)]
struct UsageRows<'a> {
    accounts: Vec<Uuid>,
    requests: Vec<&'a str>,
    api_keys: Vec<Option<Uuid>>,
    models: Vec<&'a str>,
    providers: Vec<&'a str>,
    input: Vec<i64>,
    output: Vec<i64>,
    cached: Vec<i64>,
    sources: Vec<&'static str>,
    latency: Vec<i64>,
    first_token: Vec<Option<i64>>,
    cost: Vec<i64>,
    charged: Vec<i64>,
    price_versions: Vec<&'a str>,
    outcomes: Vec<&'static str>,
    stream_sequences: Vec<i64>,
    recorded_at: Vec<DateTime<Utc>>,
}
