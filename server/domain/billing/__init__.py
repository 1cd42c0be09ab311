"""Usage billing and contribution credits: pure rules, exact integer-cent money.

metering (time zone, DST, rounding) -> rating (rates, categories, allowance, minimum)
-> statements (credits applied, net due) -> ledger (hash chain) -> accounting (journal, FEC).
"""
