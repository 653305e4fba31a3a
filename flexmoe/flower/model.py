"""Which parameters of a model belong to which expert: flexmoe's naming or a user's own.

:class:`~flexmoe.flower.FlexMoEStrategy` sends each node the shared parameters and only
the experts assigned to it, and averages each expert over its holders. All it needs to
know about a model is, for every parameter name, the expert it belongs to (or none:
then it is shared and averaged FedAvg-style over every reply). :func:`expert_rule`
turns a name pattern or a callable into that mapping; :func:`expert_sizes` measures the
experts of a state dict with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from flexmoe.fedloop.strategy import ExpertOf

__all__ = ["ExpertOf", "expert_rule", "expert_sizes"]


def expert_rule(experts: str | ExpertOf) -> ExpertOf:
    """An ``expert_of`` function from a regular expression or a callable.

    Parameters
    ----------
    experts : str or callable
        A regular expression matched at the start of each parameter name whose one
        group is the expert id (``r"moe\\.(\\d+)\\."``), or a function
        ``name -> int or None`` (returned as it is).

    Examples
    --------
    >>> rule = expert_rule(r"moe\\.(\\d+)\\.")
    >>> rule("moe.3.fc.weight"), rule("head.weight")
    (3, None)
    """
    if callable(experts):
        return experts
    try:
        pattern = re.compile(experts)
    except re.error as err:
        raise ValueError(f"`experts` {experts!r} is not a regular expression: {err}") from None
    if pattern.groups != 1:
        raise ValueError(f"`experts` must have exactly one group (the expert id); "
                         f"{experts!r} has {pattern.groups}")  # fmt: skip

    def expert_of(name: str) -> int | None:
        match = pattern.match(name)
        return None if match is None else int(match.group(1))

    return expert_of


def _nbytes(tensor: Tensor) -> int:
    return int(tensor.numel() * tensor.element_size())


def expert_sizes(
    state: Mapping[str, Tensor], expert_of: ExpertOf
) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """Bytes and parameters of each expert, and bytes of the shared rest, of `state`.

    Raises
    ------
    ValueError
        No parameter belongs to an expert, or the expert ids are not ``0 .. E − 1``.

    Examples
    --------
    >>> import torch
    >>> state = {"body.w": torch.zeros(4), "moe.0.w": torch.zeros(2), "moe.1.w": torch.zeros(3)}
    >>> expert_sizes(state, expert_rule(r"moe\\.(\\d+)\\."))
    ((8, 12), (2, 3), 16)
    """
    owners = {name: expert_of(name) for name in state}
    ids = sorted({e for e in owners.values() if e is not None})
    if not ids:
        names = ", ".join(list(state)[:6]) + (", ..." if len(state) > 6 else "")
        raise ValueError(f"`experts` assigns no parameter to an expert; the parameters: {names}")
    if ids != list(range(len(ids))):
        missing = sorted(set(range(ids[-1] + 1)) - set(ids))
        raise ValueError(f"expert ids must be 0 .. E-1; `experts` gives {ids}, no parameter "
                         f"of expert(s) {missing}")  # fmt: skip
    nbytes, params = [0] * len(ids), [0] * len(ids)
    shared = 0
    for name, tensor in state.items():
        e = owners[name]
        if e is None:
            shared += _nbytes(tensor)
        else:
            nbytes[e] += _nbytes(tensor)
            params[e] += int(tensor.numel())
    return tuple(nbytes), tuple(params), shared
