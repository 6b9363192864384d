"""Transfers applied to accounts all or nothing, with TigerBeetle's balance and two-phase rules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, Inexact, Overflow, localcontext
from types import MappingProxyType

from rating_service.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from rating_service.core.ledger.accounts import Account, AccountFlags
from rating_service.core.ledger.transfers import Transfer, TransferFlags
from rating_service.core.money import EXACT_CONTEXT, format_decimal

INSUFFICIENT_CREDIT = "INSUFFICIENT_CREDIT"
"""FailedPrecondition reason: a pool (or the contract's pools) cannot cover the amount."""

EXCEEDS_DEBITS = "EXCEEDS_DEBITS"
"""FailedPrecondition reason: a `credits_must_not_exceed_debits` account would be over-credited."""

PENDING_TRANSFER_NOT_OPEN = "PENDING_TRANSFER_NOT_OPEN"
"""FailedPrecondition reason: a post or void names an unknown or resolved pending transfer."""

ACCOUNT_NOT_FOUND = "ACCOUNT_NOT_FOUND"
"""NotFound reason: a transfer names an account the ledger does not hold."""

IDEMPOTENCY_KEY_MISMATCH = "IDEMPOTENCY_KEY_MISMATCH"
"""AlreadyExists reason: an id was used before for something else."""

_NO_PENDING: Mapping[str, Transfer] = MappingProxyType({})


def apply_transfers(
    accounts: Mapping[str, Account],
    transfers: Sequence[Transfer],
    pending: Mapping[str, Transfer] = _NO_PENDING,
) -> dict[str, Account]:
    """The accounts after a batch of transfers, or an error and nothing changed.

    `accounts` must hold every account the batch names; `pending` the open pending transfers
    it posts or voids (a pending transfer made earlier in the same batch counts too). Transfers
    apply in order, each checked against the balance rules as TigerBeetle checks them: a batch
    that would overdraw a `debits_must_not_exceed_credits` account (a pool) is refused with
    FailedPrecondition INSUFFICIENT_CREDIT naming the account. Returns every account given, the
    touched ones replaced.
    """
    result = dict(accounts)
    _apply_batch(result, dict(pending), transfers)
    return result


def open_pending_after(
    pending: Mapping[str, Transfer], transfers: Iterable[Transfer]
) -> dict[str, Transfer]:
    """The open pending transfers once a batch that `apply_transfers` accepted is applied."""
    result = dict(pending)
    for transfer in transfers:
        if transfer.is_pending:
            result[transfer.transfer_id] = transfer
        elif transfer.pending_id is not None:
            result.pop(transfer.pending_id, None)
    return result


@dataclass(frozen=True, slots=True)
class Ledger:
    """An in-memory ledger: accounts, the journal of every transfer, and open pending transfers.

    The reference model of the database ledger (and what the property tests drive). A transfer
    whose id is already in the journal with the same content is skipped, as TigerBeetle answers
    `exists`; the same id with other content refuses the batch (ALREADY_EXISTS,
    IDEMPOTENCY_KEY_MISMATCH). Every operation returns a new Ledger; copying makes it O(size),
    which is fine for a model and a test, not for the hot path (that is the database's job).
    """

    accounts: Mapping[str, Account]
    journal: Mapping[str, Transfer]
    pending: Mapping[str, Transfer]

    @classmethod
    def empty(cls) -> Ledger:
        """A ledger with no accounts and no transfers."""
        return cls(MappingProxyType({}), MappingProxyType({}), MappingProxyType({}))

    def open(self, accounts: Iterable[Account]) -> Ledger:
        """The ledger with these accounts added; reopening an identical account is harmless."""
        result = dict(self.accounts)
        for account in accounts:
            existing = result.get(account.account_id)
            if existing is not None:
                if (existing.kind, existing.currency, existing.flags) != (
                    account.kind,
                    account.currency,
                    account.flags,
                ):
                    raise AlreadyExists(
                        f"account {account.account_id!r} exists with another kind or currency",
                        reason=IDEMPOTENCY_KEY_MISMATCH,
                    )
                continue
            totals = (
                account.debits_posted,
                account.credits_posted,
                account.debits_pending,
                account.credits_pending,
            )
            if any(totals):
                # Totals only ever come from transfers, so the journal can always explain them.
                raise InvalidArgument.of_field(
                    "accounts", f"{account.account_id!r} must be opened with zero totals"
                )
            result[account.account_id] = account
        return Ledger(MappingProxyType(result), self.journal, self.pending)

    def apply(self, transfers: Sequence[Transfer]) -> Ledger:
        """The ledger after a batch, all or nothing; transfers already journaled are skipped."""
        fresh: list[Transfer] = []
        for transfer in transfers:
            seen = self.journal.get(transfer.transfer_id)
            if seen is None:
                fresh.append(transfer)
            elif seen != transfer:
                raise AlreadyExists(
                    f"transfer {transfer.transfer_id!r} already exists with other content",
                    reason=IDEMPOTENCY_KEY_MISMATCH,
                    metadata={"transfer_id": transfer.transfer_id},
                )
        if not fresh:
            return self
        accounts = dict(self.accounts)
        pending = dict(self.pending)
        _apply_batch(accounts, pending, fresh)
        journal = dict(self.journal)
        journal.update((transfer.transfer_id, transfer) for transfer in fresh)
        return Ledger(
            MappingProxyType(accounts), MappingProxyType(journal), MappingProxyType(pending)
        )

    @property
    def transfers(self) -> tuple[Transfer, ...]:
        """Every transfer, in the order it was applied."""
        return tuple(self.journal.values())


def _apply_batch(
    accounts: dict[str, Account], pending: dict[str, Transfer], transfers: Sequence[Transfer]
) -> None:
    # Works on the caller's copies; an exception leaves them half-updated, so callers copy first.
    seen: set[str] = set()
    for transfer in transfers:
        if not isinstance(transfer, Transfer):
            raise InvalidArgument.of_field("transfers", f"must be Transfers, got {transfer!r}")
        if transfer.transfer_id in seen:
            raise InvalidArgument.of_field(
                "transfers", f"transfer id {transfer.transfer_id!r} appears twice in the batch"
            )
        seen.add(transfer.transfer_id)
        apply_one(accounts, pending, transfer, enforce=True)


def apply_one(
    accounts: dict[str, Account],
    pending: dict[str, Transfer],
    transfer: Transfer,
    *,
    enforce: bool,
) -> None:
    """Apply one transfer in place; with `enforce`, refuse what breaks an account's rules.

    Without `enforce` (recomputing totals from a journal) the balance rules are not checked,
    so drift is reported rather than hidden behind an error.
    """
    debit = _account(accounts, transfer.debit_account_id)
    credit = _account(accounts, transfer.credit_account_id)
    if enforce and debit.currency != credit.currency:
        raise InvalidArgument.of_field(
            "credit_account_id",
            f"{credit.account_id!r} is in {credit.currency}, {debit.account_id!r} in"
            f" {debit.currency}: a transfer stays within one currency",
        )
    amount = transfer.amount
    if transfer.is_pending:
        debit = _add(debit, debits_pending=amount)
        credit = _add(credit, credits_pending=amount)
        pending[transfer.transfer_id] = transfer
    elif transfer.resolves_pending:
        held = _open_pending(pending, transfer)
        if enforce:
            _check_resolution(held, transfer)
        posted = amount if TransferFlags.POST_PENDING in transfer.flags else Decimal(0)
        debit = _add(debit, debits_pending=-held.amount, debits_posted=posted)
        credit = _add(credit, credits_pending=-held.amount, credits_posted=posted)
        del pending[held.transfer_id]
    else:
        debit = _add(debit, debits_posted=amount)
        credit = _add(credit, credits_posted=amount)
    if enforce:
        _check_rules(debit, transfer)
        _check_rules(credit, transfer)
    accounts[debit.account_id] = debit
    accounts[credit.account_id] = credit


def _account(accounts: Mapping[str, Account], account_id: str) -> Account:
    account = accounts.get(account_id)
    if account is None:
        raise NotFound(
            f"account {account_id!r} is not in the ledger",
            reason=ACCOUNT_NOT_FOUND,
            metadata={"account_id": account_id},
        )
    return account


def _open_pending(pending: Mapping[str, Transfer], transfer: Transfer) -> Transfer:
    held = pending.get(transfer.pending_id or "")
    if held is None:
        raise FailedPrecondition(
            f"pending transfer {transfer.pending_id!r} is not open (unknown, posted or voided)",
            reason=PENDING_TRANSFER_NOT_OPEN,
            violations=[
                PreconditionViolation(
                    "PENDING_TRANSFER",
                    f"transfers/{transfer.pending_id}",
                    "must be an open pending transfer",
                )
            ],
        )
    return held


def _check_resolution(held: Transfer, transfer: Transfer) -> None:
    if (held.debit_account_id, held.credit_account_id) != (
        transfer.debit_account_id,
        transfer.credit_account_id,
    ):
        raise InvalidArgument.of_field(
            "debit_account_id",
            f"must move between the accounts of pending transfer {held.transfer_id!r}",
        )
    if TransferFlags.POST_PENDING in transfer.flags and transfer.amount > held.amount:
        raise InvalidArgument.of_field(
            "amount",
            f"posts {transfer.amount}, more than pending transfer {held.transfer_id!r} holds"
            f" ({held.amount}); post the extra as its own transfer",
        )
    if TransferFlags.VOID_PENDING in transfer.flags and transfer.amount != held.amount:
        raise InvalidArgument.of_field(
            "amount", f"a void releases the whole pending amount ({held.amount})"
        )


def _add(account: Account, **deltas: Decimal) -> Account:
    try:
        with localcontext(EXACT_CONTEXT):
            changed = {name: getattr(account, name) + delta for name, delta in deltas.items()}
    except (Inexact, Overflow):
        raise InvalidArgument.of_field(
            "amount", f"would take account {account.account_id!r} beyond exact arithmetic"
        ) from None
    return replace(account, **changed)


def _check_rules(account: Account, transfer: Transfer) -> None:
    if not account.breaks_its_rules:
        return
    if AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS in account.flags:
        with localcontext(EXACT_CONTEXT):
            shortfall = account.debits_posted + account.debits_pending - account.credits_posted
            available_before = account.available_credit + transfer.amount
        raise FailedPrecondition(
            f"account {account.account_id!r} cannot cover transfer {transfer.transfer_id!r}:"
            f" short by {format_decimal(shortfall)}",
            reason=INSUFFICIENT_CREDIT,
            violations=[
                PreconditionViolation(
                    "BALANCE",
                    f"accounts/{account.account_id}",
                    f"available {format_decimal(available_before)},"
                    f" needed {format_decimal(transfer.amount)}",
                )
            ],
            metadata={"account_id": account.account_id, "transfer_id": transfer.transfer_id},
        )
    raise FailedPrecondition(
        f"account {account.account_id!r} would be credited beyond its debits by transfer"
        f" {transfer.transfer_id!r}",
        reason=EXCEEDS_DEBITS,
        violations=[
            PreconditionViolation(
                "BALANCE", f"accounts/{account.account_id}", "credits must not exceed debits"
            )
        ],
        metadata={"account_id": account.account_id, "transfer_id": transfer.transfer_id},
    )
