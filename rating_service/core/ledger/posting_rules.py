"""Posting rules: the transfers each business operation writes, built from business inputs.

Every rule is pure and deterministic: the same operation builds the same transfers with the same
ids (`<code>:<reference>:<n>`), so a retried operation collides with its first attempt instead
of moving money twice. Transfer ids are unique within a tenant; `reference` says what the
transfer is traceable to (`event:<event_id>`, `grant:<grant_id>`, `operator:<action_id>` …).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal, Inexact, localcontext

from rating_service.core.errors import InvalidArgument
from rating_service.core.ledger.accounts import (
    adjustments_account_id,
    breakage_account_id,
    cash_account_id,
    overage_account_id,
    payments_clearing_account_id,
    pool_account_id,
    promotions_account_id,
    receivable_account_id,
    revenue_account_id,
)
from rating_service.core.ledger.transfers import Transfer, TransferCode, TransferFlags
from rating_service.core.money import EXACT_CONTEXT

ZERO = Decimal(0)
ONE = Decimal(1)


def transfer_id(code: TransferCode, reference: str, index: int) -> str:
    """The deterministic id of the `index`-th transfer of an operation."""
    return f"{code}:{reference}:{index}"


def grant_transfers(
    *,
    reference: str,
    contract_id: str,
    pool_id: str,
    amount: Decimal,
    cost_basis: Decimal = ZERO,
    code: TransferCode = TransferCode.GRANT,
) -> tuple[Transfer, ...]:
    """Fund a pool: the paid part (amount × cost basis) from payments, the rest from promotions.

    A free credit (cost basis 0) is funded wholly by promotions; a prepaid commit or a bought
    credit at face value (cost basis 1) wholly by payments clearing; a discounted purchase
    (0.8 paid per unit) by both, so the discount is visible as a promotion cost.
    """
    _require_amount(amount, "amount")
    if not isinstance(cost_basis, Decimal) or not ZERO <= cost_basis <= ONE:
        raise InvalidArgument.of_field("cost_basis", "must be a Decimal between 0 and 1")
    try:
        with localcontext(EXACT_CONTEXT):
            paid = amount * cost_basis
            free = amount - paid
    except Inexact:
        raise InvalidArgument.of_field(
            "cost_basis", "amount × cost_basis cannot be computed exactly"
        ) from None
    pool = pool_account_id(pool_id)
    sources = (
        (payments_clearing_account_id(contract_id), paid),
        (promotions_account_id(contract_id), free),
    )
    transfers: list[Transfer] = []
    for source, part in sources:
        if part:
            transfers.append(
                Transfer(
                    transfer_id(code, reference, len(transfers)),
                    source,
                    pool,
                    part,
                    code,
                    reference,
                )
            )
    return tuple(transfers)


def top_up_transfers(
    *,
    reference: str,
    contract_id: str,
    pool_id: str,
    amount: Decimal,
    cost_basis: Decimal = ONE,
) -> tuple[Transfer, ...]:
    """Fund a pool with bought credit (a top-up or an auto-recharge), at face value by default."""
    return grant_transfers(
        reference=reference,
        contract_id=contract_id,
        pool_id=pool_id,
        amount=amount,
        cost_basis=cost_basis,
        code=TransferCode.TOP_UP,
    )


def usage_transfers(
    *,
    reference: str,
    contract_id: str,
    product_key: str,
    draws: Iterable[tuple[str, Decimal]],
    overage: Decimal = ZERO,
) -> tuple[Transfer, ...]:
    """One event's movements: each pool part, then the overage, against the product's revenue.

    A positive part debits the pool (USAGE); a negative part is a credit back to it
    (CREDIT_BACK, debiting revenue). A positive overage debits the overage receivable
    (OVERAGE); a negative one reduces it (CREDIT_BACK).
    """
    revenue = revenue_account_id(contract_id, product_key)
    legs: list[tuple[TransferCode, str, str, Decimal]] = []
    for pool_id, amount in draws:
        pool = pool_account_id(pool_id)
        if amount > 0:
            legs.append((TransferCode.USAGE, pool, revenue, amount))
        elif amount < 0:
            legs.append((TransferCode.CREDIT_BACK, revenue, pool, -amount))
    receivable = overage_account_id(contract_id)
    if overage > 0:
        legs.append((TransferCode.OVERAGE, receivable, revenue, overage))
    elif overage < 0:
        legs.append((TransferCode.CREDIT_BACK, revenue, receivable, -overage))
    return tuple(
        Transfer(transfer_id(code, reference, index), debit, credit, amount, code, reference)
        for index, (code, debit, credit, amount) in enumerate(legs)
    )


def expiry_transfers(
    *, reference: str, contract_id: str, pool_id: str, amount: Decimal
) -> tuple[Transfer, ...]:
    """Move a pool's unused balance to breakage when it expires (nothing when it is empty)."""
    if not amount:
        return ()
    _require_amount(amount, "amount")
    code = TransferCode.EXPIRY
    return (
        Transfer(
            transfer_id(code, reference, 0),
            pool_account_id(pool_id),
            breakage_account_id(contract_id),
            amount,
            code,
            reference,
        ),
    )


def rollover_transfers(
    *, reference: str, parts: Sequence[tuple[str, Decimal]], to_pool_id: str
) -> tuple[Transfer, ...]:
    """Carry unused balance from a term's pools (pool id, amount) into the next term's pool.

    Both pools are the same customer's; the money stays theirs, so it moves pool to pool and
    never passes through revenue or breakage.
    """
    to_account = pool_account_id(to_pool_id)
    code = TransferCode.ROLLOVER
    transfers: list[Transfer] = []
    for pool_id, amount in parts:
        _require_amount(amount, "amount")
        transfers.append(
            Transfer(
                transfer_id(code, reference, len(transfers)),
                pool_account_id(pool_id),
                to_account,
                amount,
                code,
                reference,
            )
        )
    return tuple(transfers)


def reservation_reference(reservation_id: str) -> str:
    """The reference every transfer of a reservation carries."""
    return f"reservation:{reservation_id}"


def hold_transfer_id(reservation_id: str, index: int) -> str:
    """The id of a reservation's `index`-th pending hold."""
    return transfer_id(TransferCode.RESERVATION_HOLD, reservation_reference(reservation_id), index)


def hold_transfers(
    *,
    reservation_id: str,
    contract_id: str,
    product_key: str,
    holds: Sequence[tuple[str, Decimal]],
) -> tuple[Transfer, ...]:
    """One pending transfer per pool a reservation holds, pool → the product's revenue."""
    reference = reservation_reference(reservation_id)
    revenue = revenue_account_id(contract_id, product_key)
    return tuple(
        Transfer(
            hold_transfer_id(reservation_id, index),
            pool_account_id(pool_id),
            revenue,
            amount,
            TransferCode.RESERVATION_HOLD,
            reference,
            TransferFlags.PENDING,
        )
        for index, (pool_id, amount) in enumerate(holds)
    )


def capture_transfers(
    *,
    reservation_id: str,
    contract_id: str,
    product_key: str,
    holds: Sequence[tuple[str, Decimal]],
    posted: Sequence[Decimal],
) -> tuple[Transfer, ...]:
    """Resolve each hold on capture: post `posted[i]` of it (the rest is released) or void it."""
    if len(posted) != len(holds):
        raise InvalidArgument.of_field("posted", "needs one amount per hold")
    reference = reservation_reference(reservation_id)
    revenue = revenue_account_id(contract_id, product_key)
    transfers: list[Transfer] = []
    for index, ((pool_id, held), amount) in enumerate(zip(holds, posted, strict=True)):
        if amount < 0 or amount > held:
            raise InvalidArgument.of_field(
                f"posted[{index}]", f"must be between 0 and the hold ({held})"
            )
        if amount:
            code, flags = TransferCode.RESERVATION_CAPTURE, TransferFlags.POST_PENDING
        else:
            code, flags, amount = (
                TransferCode.RESERVATION_VOID,
                TransferFlags.VOID_PENDING,
                held,
            )
        transfers.append(
            Transfer(
                transfer_id(code, reference, index),
                pool_account_id(pool_id),
                revenue,
                amount,
                code,
                reference,
                flags,
                hold_transfer_id(reservation_id, index),
            )
        )
    return tuple(transfers)


def release_transfers(
    *,
    reservation_id: str,
    contract_id: str,
    product_key: str,
    holds: Sequence[tuple[str, Decimal]],
    code: TransferCode = TransferCode.RESERVATION_VOID,
) -> tuple[Transfer, ...]:
    """Void every hold of a reservation (code RESERVATION_VOID, or RESERVATION_EXPIRY on TTL)."""
    if code not in (TransferCode.RESERVATION_VOID, TransferCode.RESERVATION_EXPIRY):
        raise InvalidArgument.of_field("code", "must be reservation_void or reservation_expiry")
    reference = reservation_reference(reservation_id)
    revenue = revenue_account_id(contract_id, product_key)
    return tuple(
        Transfer(
            transfer_id(code, reference, index),
            pool_account_id(pool_id),
            revenue,
            amount,
            code,
            reference,
            TransferFlags.VOID_PENDING,
            hold_transfer_id(reservation_id, index),
        )
        for index, (pool_id, amount) in enumerate(holds)
    )


def adjustment_transfers(
    *,
    reference: str,
    contract_id: str,
    account_id: str,
    amount: Decimal,
    reason: str,
) -> tuple[Transfer, ...]:
    """A manual adjustment of one account, against the contract's adjustments account.

    A positive amount credits the account (adds to a pool's balance, reduces an overage
    receivable); a negative amount debits it. The operator's reason is kept on the transfer.
    """
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidArgument.of_field("reason", "a manual adjustment needs a reason")
    if not isinstance(amount, Decimal) or not amount.is_finite() or not amount:
        raise InvalidArgument.of_field("amount", "must be a non-zero finite Decimal")
    counter = adjustments_account_id(contract_id)
    debit, credit = (counter, account_id) if amount > 0 else (account_id, counter)
    code = TransferCode.ADJUSTMENT
    return (
        Transfer(
            transfer_id(code, reference, 0),
            debit,
            credit,
            abs(amount),
            code,
            reference,
            memo=reason.strip(),
        ),
    )


def invoice_transfers(
    *, reference: str, contract_id: str, charges: Iterable[tuple[str, Decimal]]
) -> tuple[Transfer, ...]:
    """A finalized invoice: each charge (source account, exact amount) moved to the receivable.

    A positive amount debits the receivable and credits the source (overage billed, a fee's
    revenue, a commit's payments clearing, the rounding); a negative one moves the other way.
    """
    return _legs(TransferCode.INVOICE, reference, receivable_account_id(contract_id), charges)


def invoice_void_transfers(*, reference: str, original: Iterable[Transfer]) -> tuple[Transfer, ...]:
    """Undo a finalized invoice's transfers, each reversed, when the invoice is voided."""
    return tuple(
        Transfer(
            transfer_id(TransferCode.INVOICE_VOID, reference, index),
            transfer.credit_account_id,
            transfer.debit_account_id,
            transfer.amount,
            TransferCode.INVOICE_VOID,
            reference,
        )
        for index, transfer in enumerate(original)
    )


def credit_note_transfers(
    *, reference: str, contract_id: str, credits: Iterable[tuple[str, Decimal]]
) -> tuple[Transfer, ...]:
    """A credit note: each credit (account it reverses, amount) moved out of the receivable.

    The account is debited (a product's revenue, the payments clearing of a commit) and the
    receivable credited: the customer owes that much less, or is owed it back once paid.
    """
    return _legs(
        TransferCode.CREDIT_NOTE,
        reference,
        receivable_account_id(contract_id),
        ((account, -amount) for account, amount in credits),
    )


def refund_transfers(
    *, reference: str, contract_id: str, amount: Decimal, to_account: str
) -> tuple[Transfer, ...]:
    """A refund of a paid invoice's credit: the receivable debited, `to_account` credited.

    To the payment method, `to_account` is the contract's cash (the money goes back); to a
    pool, the payments clearing that funded the pool's top-up (the money stays, as credit).
    """
    _require_amount(amount, "amount")
    return (
        Transfer(
            transfer_id(TransferCode.REFUND, reference, 0),
            receivable_account_id(contract_id),
            to_account,
            amount,
            TransferCode.REFUND,
            reference,
        ),
    )


def payment_transfers(*, reference: str, contract_id: str, amount: Decimal) -> tuple[Transfer, ...]:
    """A payment collected: cash debited, the receivable credited."""
    _require_amount(amount, "amount")
    return (
        Transfer(
            transfer_id(TransferCode.PAYMENT, reference, 0),
            cash_account_id(contract_id),
            receivable_account_id(contract_id),
            amount,
            TransferCode.PAYMENT,
            reference,
        ),
    )


def recharge_payment_transfers(
    *, reference: str, contract_id: str, amount: Decimal
) -> tuple[Transfer, ...]:
    """An auto-recharge paid: cash debited, the payments clearing that funded its pool credited."""
    _require_amount(amount, "amount")
    return (
        Transfer(
            transfer_id(TransferCode.PAYMENT, reference, 0),
            cash_account_id(contract_id),
            payments_clearing_account_id(contract_id),
            amount,
            TransferCode.PAYMENT,
            reference,
        ),
    )


def _legs(
    code: TransferCode, reference: str, account: str, amounts: Iterable[tuple[str, Decimal]]
) -> tuple[Transfer, ...]:
    """Signed amounts between one account and others: positive debits `account`."""
    transfers: list[Transfer] = []
    for other, amount in amounts:
        if not amount:
            continue
        debit, credit = (account, other) if amount > 0 else (other, account)
        transfers.append(
            Transfer(
                transfer_id(code, reference, len(transfers)),
                debit,
                credit,
                abs(amount),
                code,
                reference,
            )
        )
    return tuple(transfers)


def _require_amount(amount: object, field: str) -> None:
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
        raise InvalidArgument.of_field(field, f"must be a finite Decimal > 0, got {amount!r}")
