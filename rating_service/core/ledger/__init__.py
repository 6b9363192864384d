"""The double-entry ledger, after TigerBeetle: accounts, immutable transfers and posting rules.

Sign convention (the one place it is written down): a transfer moves a positive `amount` from
its debit account to its credit account. A pool is money held for the customer, a credit-balance
account: its balance is `credits_posted − debits_posted`; a grant or top-up credits it, usage
and expiry debit it, a pending hold adds to its `debits_pending`, and its flag
`debits_must_not_exceed_credits` (debits posted + debits pending ≤ credits posted) keeps it from
ever going below zero, holds included. Revenue and breakage are credit-balance accounts too (they
grow by credits). Overage receivable, payments clearing and promotions are debit-balance accounts:
what the customer owes in arrears, and where a pool's money came from. Summed over every account,
debits equal credits, posted and pending alike.

Nothing here does I/O or imports grpc, sqlalchemy, asyncpg or temporalio. The database ledger is
the production journal; `Ledger` and `apply_transfers` are its exact pure model, used by the hot
path to check a batch before it is written and by the property tests.
"""

from rating_service.core.ledger.accounts import (
    DEFAULT_FLAGS,
    Account,
    AccountFlags,
    AccountKind,
    adjustments_account_id,
    breakage_account_id,
    open_account,
    overage_account_id,
    payments_clearing_account_id,
    pool_account_id,
    promotions_account_id,
    revenue_account_id,
)
from rating_service.core.ledger.idempotency import IdempotentOutcome, payload_fingerprint, recall
from rating_service.core.ledger.invariants import (
    Drift,
    DriftReport,
    TrialBalance,
    invariant_breaches,
    overdrawn_accounts,
    recompute,
    trial_balance,
)
from rating_service.core.ledger.journal import (
    ACCOUNT_NOT_FOUND,
    EXCEEDS_DEBITS,
    IDEMPOTENCY_KEY_MISMATCH,
    INSUFFICIENT_CREDIT,
    PENDING_TRANSFER_NOT_OPEN,
    Ledger,
    apply_transfers,
    open_pending_after,
)
from rating_service.core.ledger.posting_rules import (
    adjustment_transfers,
    capture_transfers,
    expiry_transfers,
    grant_transfers,
    hold_transfer_id,
    hold_transfers,
    release_transfers,
    reservation_reference,
    top_up_transfers,
    transfer_id,
    usage_transfers,
)
from rating_service.core.ledger.transfers import Transfer, TransferCode, TransferFlags

__all__ = [
    "ACCOUNT_NOT_FOUND",
    "DEFAULT_FLAGS",
    "EXCEEDS_DEBITS",
    "IDEMPOTENCY_KEY_MISMATCH",
    "INSUFFICIENT_CREDIT",
    "PENDING_TRANSFER_NOT_OPEN",
    "Account",
    "AccountFlags",
    "AccountKind",
    "Drift",
    "DriftReport",
    "IdempotentOutcome",
    "Ledger",
    "Transfer",
    "TransferCode",
    "TransferFlags",
    "TrialBalance",
    "adjustment_transfers",
    "adjustments_account_id",
    "apply_transfers",
    "breakage_account_id",
    "capture_transfers",
    "expiry_transfers",
    "grant_transfers",
    "hold_transfer_id",
    "hold_transfers",
    "invariant_breaches",
    "open_account",
    "open_pending_after",
    "overage_account_id",
    "overdrawn_accounts",
    "payload_fingerprint",
    "payments_clearing_account_id",
    "pool_account_id",
    "promotions_account_id",
    "recall",
    "recompute",
    "release_transfers",
    "reservation_reference",
    "revenue_account_id",
    "top_up_transfers",
    "transfer_id",
    "trial_balance",
    "usage_transfers",
]
