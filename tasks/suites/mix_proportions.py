"""Suite `mix_proportions`: the realised per-domain shares of the pretraining mix match the weights."""
from __future__ import annotations

NAME = "mix_proportions"


def expectations(params=None) -> list:
    import great_expectations.expectations as gxe

    tolerance = params.tolerance if params is not None else 0.05
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=["domain", "requested", "effective", "realised", "deviation"],
                                         exact_match=False),
        # |realised - effective| share per domain, effective = requested renormalised over domains with data
        gxe.ExpectColumnValuesToBeBetween(column="deviation", min_value=0, max_value=tolerance),
        gxe.ExpectColumnSumToBeBetween(column="realised", min_value=0.999, max_value=1.001),
    ]
