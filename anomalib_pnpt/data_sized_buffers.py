# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Modules whose buffers are sized by the data they were built from (a prompt pool, a patch memory, training keys).

Their buffers start empty and take their size when built, so a fresh module cannot receive a checkpoint's
tensors as they are: loading first gives each buffer the saved shape, then copies. This is torch's own extension
point for loading (``_load_from_state_dict``), overridden on our modules only.

Example:
    >>> import torch
    >>> class Bank(DataSizedBuffers):
    ...     def __init__(self) -> None:
    ...         super().__init__()
    ...         self.register_buffer("rows", torch.zeros(0, 2))
    >>> bank = Bank()
    >>> _ = bank.load_state_dict({"rows": torch.ones(3, 2)})
    >>> tuple(bank.rows.shape)
    (3, 2)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class DataSizedBuffers(nn.Module):
    """An ``nn.Module`` that adopts the saved shapes of its own buffers when a state dict is loaded."""

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name, buffer in list(self._buffers.items()):
            saved = state_dict.get(prefix + name)
            if saved is not None and buffer is not None and saved.shape != buffer.shape:
                self._buffers[name] = torch.empty_like(saved, device=buffer.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
