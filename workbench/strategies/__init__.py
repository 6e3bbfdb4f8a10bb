"""Strategies: the contract, the indicators they use, the built-ins and the registry."""

from workbench.strategies.base import (
    Constraint,
    Param,
    ParamKind,
    ParamSpace,
    Signals,
    Strategy,
    bool_param,
    choice_param,
    float_param,
    int_param,
)
from workbench.strategies.mtf import higher_timeframe, on_higher_timeframe
from workbench.strategies.registry import discover, get_strategy, list_strategies, register

__all__ = [
    "Constraint",
    "Param",
    "ParamKind",
    "ParamSpace",
    "Signals",
    "Strategy",
    "bool_param",
    "choice_param",
    "discover",
    "float_param",
    "get_strategy",
    "higher_timeframe",
    "int_param",
    "list_strategies",
    "on_higher_timeframe",
    "register",
]
