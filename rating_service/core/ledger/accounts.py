"""Ledger accounts: what each one stands for, its posted and pending totals, its balance rules."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext
from enum import Flag, StrEnum, auto

from rating_service.core.errors import ViolationCollector
from rating_service.core.money import CURRENCIES, EXACT_CONTEXT

ZERO = Decimal(0)


class AccountKind(StrEnum):
    """What an account stands for in the business."""

    POOL = "pool"
    """A credit pool's balance: what the customer may still spend (credit-balance)."""
    OVERAGE_RECEIVABLE = "overage_receivable"
    """Usage beyond the pools, owed in arrears on the next invoice (debit-balance)."""
    REVENUE = "revenue"
    """Usage earned, one account per contract × product (credit-balance)."""
    BREAKAGE = "breakage"
    """Credit that expired unused (credit-balance)."""
    PROMOTIONS = "promotions"
    """Where free credit comes from: the cost of a promotion or discount (debit-balance)."""
    PAYMENTS_CLEARING = "payments_clearing"
    """Where bought credit and prepaid commits come from until payment settles (debit-balance)."""
    ADJUSTMENTS = "adjustments"
    """The other side of every manual adjustment an operator makes."""
    RECEIVABLE = "receivable"
    """What finalized invoices say the customer owes, until it is paid (debit-balance)."""
    ROUNDING = "rounding"
    """What rounding each invoice line to the minor unit added or took away."""
    CASH = "cash"
    """Payments collected from the customer (debit-balance)."""


class AccountFlags(Flag):
    """Balance rules an account enforces on every transfer, as TigerBeetle's account flags do."""

    NONE = 0
    DEBITS_MUST_NOT_EXCEED_CREDITS = auto()
    """debits_posted + debits_pending ≤ credits_posted: a pool can never go below zero."""
    CREDITS_MUST_NOT_EXCEED_DEBITS = auto()
    """credits_posted + credits_pending ≤ debits_posted: the mirror rule, for debit balances."""


DEFAULT_FLAGS: dict[AccountKind, AccountFlags] = {
    AccountKind.POOL: AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
}
"""The rules an account of each kind gets when it is opened; kinds not listed are unconstrained."""


@dataclass(frozen=True, slots=True)
class Account:
    """One ledger account and its running totals; a transfer changes it only through the journal."""

    account_id: str
    kind: AccountKind
    currency: str
    flags: AccountFlags = AccountFlags.NONE
    debits_posted: Decimal = ZERO
    credits_posted: Decimal = ZERO
    debits_pending: Decimal = ZERO
    credits_pending: Decimal = ZERO

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        if not isinstance(self.account_id, str) or not self.account_id:
            violations.add("account_id", "must be a non-empty string")
        if not isinstance(self.kind, AccountKind):
            violations.add("kind", f"must be one of {', '.join(AccountKind)}")
        if self.currency not in CURRENCIES:
            violations.add("currency", f"{self.currency!r} is not a supported currency code")
        if not isinstance(self.flags, AccountFlags):
            violations.add("flags", "must be AccountFlags")
        for name in ("debits_posted", "credits_posted", "debits_pending", "credits_pending"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                violations.add(name, f"must be a finite Decimal ≥ 0, got {value!r}")
        violations.raise_if_any("invalid account")

    @property
    def credit_balance(self) -> Decimal:
        """credits_posted − debits_posted: the balance of a pool, revenue or breakage account."""
        with localcontext(EXACT_CONTEXT):
            return self.credits_posted - self.debits_posted

    @property
    def debit_balance(self) -> Decimal:
        """debits_posted − credits_posted: the balance of a receivable or funding account."""
        with localcontext(EXACT_CONTEXT):
            return self.debits_posted - self.credits_posted

    @property
    def available_credit(self) -> Decimal:
        """What a pool can still give: its credit balance less what pending holds keep back."""
        with localcontext(EXACT_CONTEXT):
            return self.credits_posted - self.debits_posted - self.debits_pending

    @property
    def breaks_its_rules(self) -> bool:
        """True when the totals violate one of the account's flags."""
        with localcontext(EXACT_CONTEXT):
            return self._breaks_its_rules()

    def _breaks_its_rules(self) -> bool:
        if (
            AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS in self.flags
            and self.debits_posted + self.debits_pending > self.credits_posted
        ):
            return True
        return (
            AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS in self.flags
            and self.credits_posted + self.credits_pending > self.debits_posted
        )


def open_account(account_id: str, kind: AccountKind, currency: str) -> Account:
    """A new account with zero totals and the balance rules of its kind."""
    return Account(account_id, kind, currency, DEFAULT_FLAGS.get(kind, AccountFlags.NONE))


def pool_account_id(pool_id: str) -> str:
    """The account holding a pool's balance."""
    return f"pool:{pool_id}"


def revenue_account_id(contract_id: str, product_key: str) -> str:
    """The account earning a contract's revenue for one product."""
    return f"revenue:{contract_id}:{product_key}"


def overage_account_id(contract_id: str) -> str:
    """The account accruing a contract's overage until it is invoiced."""
    return f"overage:{contract_id}"


def breakage_account_id(contract_id: str) -> str:
    """The account receiving a contract's expired credit."""
    return f"breakage:{contract_id}"


def promotions_account_id(contract_id: str) -> str:
    """The account funding a contract's free credit."""
    return f"promotions:{contract_id}"


def payments_clearing_account_id(contract_id: str) -> str:
    """The account funding a contract's bought credit and prepaid commits."""
    return f"payments:{contract_id}"


def adjustments_account_id(contract_id: str) -> str:
    """The other side of a contract's manual adjustments."""
    return f"adjustments:{contract_id}"


def receivable_account_id(contract_id: str) -> str:
    """The account holding what a contract's finalized invoices are owed."""
    return f"receivable:{contract_id}"


def rounding_account_id(contract_id: str) -> str:
    """The account taking the difference between exact and rounded invoice lines."""
    return f"rounding:{contract_id}"


def cash_account_id(contract_id: str) -> str:
    """The account receiving a contract's collected payments."""
    return f"cash:{contract_id}"


def contract_accounts(contract_id: str) -> list[tuple[str, AccountKind, str | None]]:
    """The accounts (id, kind, product) every contract has from its creation.

    Revenue accounts are per product, opened when a product is first rated or invoiced.
    """
    return [
        (overage_account_id(contract_id), AccountKind.OVERAGE_RECEIVABLE, None),
        (payments_clearing_account_id(contract_id), AccountKind.PAYMENTS_CLEARING, None),
        (promotions_account_id(contract_id), AccountKind.PROMOTIONS, None),
        (adjustments_account_id(contract_id), AccountKind.ADJUSTMENTS, None),
        (breakage_account_id(contract_id), AccountKind.BREAKAGE, None),
    ]
