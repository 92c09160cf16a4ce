"""Amounts of money as people read them: exact, never rounded into a different figure."""

from __future__ import annotations


def usd(amount: float | None) -> str:
    """`$0.0310`, `$0.03264`, `$12.5000`: four decimals at least, up to a millionth of a dollar, so that a cap of
    $0.031 never prints as "$0.03" and a spend of $0.032645 never as "$0.0326"."""
    if amount is None:
        return "-"
    text = f"{abs(amount):.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"{'-' if amount < 0 else ''}${whole}.{cents.ljust(4, '0')}"
