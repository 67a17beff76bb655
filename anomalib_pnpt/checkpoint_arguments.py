# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The checkpoint alone says what model it is: a module loaded through ``ckpt_path`` becomes the checkpoint's model.

``anomalib predict`` / ``test`` / ``validate`` (and ``fit`` resuming) build the model from the command line and
then let Lightning load only the checkpoint's weights into it: ``on_load_checkpoint``, then ``load_state_dict``.
A flag left out then silently gives ANOTHER model -- the preset's default architecture (a size mismatch) or, worse,
the same network with other scoring settings (defects passed as good). :class:`CheckpointArguments` closes that
gap in ``on_load_checkpoint``, before the weights load:

- an argument the user did not give takes the checkpoint's value: the module's parts are rebuilt from the
  checkpoint's arguments (a fresh instance of the same class, whose children and attributes replace this one's);
- an argument the user gave that contradicts the checkpoint stops the run with one line
  (:class:`CheckpointArgumentError`), never a silent other model;
- arguments that only shape training (``training_arguments``: learning rate, textures, seed ...) are the user's
  for a resumed fit and are neither compared nor taken.

"Given" means different from the constructor's default (``None`` for every preset-sized argument), so a value
typed equal to its default cannot be told from a left-out one; it is then the checkpoint's value that counts.
``load_from_checkpoint(path, **overrides)`` builds the module from the checkpoint's arguments with the overrides on
top (Lightning's own API); there the overrides are what the caller asked for and win.

Example:
    >>> def build(preset: str | None = None, weight: float = 0.0, lr: float = 1e-4) -> None: ...
    >>> sorted(given_arguments(build, {"preset": "cpu", "weight": 0.0, "lr": 1e-3}))
    ['lr', 'preset']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from torch import nn

from anomalib_pnpt.error_reporting import UserFacingError, report_user_facing_errors

# anomalib's components: live objects the trainer holds as callbacks, restored by anomalib from the checkpoint.
COMPONENTS = frozenset({"pre_processor", "post_processor", "evaluator", "visualizer"})

# Set while ``load_from_checkpoint`` builds a module from the checkpoint's arguments plus the caller's overrides.
_LOADING_WITH_OVERRIDES: ContextVar[bool] = ContextVar("loading_with_overrides", default=False)


class CheckpointArgumentError(UserFacingError):
    """A constructor argument given on the command line contradicts the checkpoint it loads."""


def given_arguments(function: Callable[..., Any], arguments: Mapping[str, Any]) -> frozenset[str]:
    """Names of ``function``'s parameters whose value in ``arguments`` differs from the parameter's default.

    Args:
        function: The constructor.
        arguments: Its arguments as received (``locals()`` at its first statement).

    Returns:
        The names the caller gave.
    """
    parameters = inspect.signature(function).parameters
    return frozenset(
        name
        for name, parameter in parameters.items()
        if name in arguments and _plain(arguments[name]) != _plain(parameter.default)
    )


def _plain(value: Any) -> Any:
    """Tuples as lists (a checkpoint stores sequences as lists), so equal values compare equal."""
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


class CheckpointArguments:
    """Mixin of an anomalib module: loaded through ``ckpt_path``, the module takes the checkpoint's arguments.

    The class sets ``training_arguments``; its constructor calls :meth:`record_given_arguments` and calls
    :meth:`adopt_checkpoint_arguments` first thing in ``on_load_checkpoint``.
    """

    training_arguments: frozenset[str] = frozenset()
    given: frozenset[str] = frozenset()

    def record_given_arguments(self, arguments: Mapping[str, Any]) -> None:
        """Remember which constructor arguments the caller gave (see :func:`given_arguments`).

        Args:
            arguments: The constructor's ``locals()`` at its first statement.
        """
        self.given = given_arguments(type(self).__init__, arguments)

    def model_arguments(self) -> list[str]:
        """The constructor arguments that define the tested model: all plain ones but ``training_arguments``."""
        names = inspect.signature(type(self).__init__).parameters
        return [name for name in names if name != "self" and name not in COMPONENTS | self.training_arguments]

    def adopt_checkpoint_arguments(self, checkpoint: Mapping[str, Any]) -> None:
        """Become the checkpoint's model: take its arguments, or stop where a given one contradicts it.

        Args:
            checkpoint: The loaded checkpoint (its ``hyper_parameters``).

        Raises:
            CheckpointArgumentError: An argument the user gave differs from the checkpoint's.
        """
        if _LOADING_WITH_OVERRIDES.get():
            return
        saved = checkpoint.get("hyper_parameters", {})
        current = dict(self.hparams)  # type: ignore[attr-defined]
        differing = [
            name
            for name in self.model_arguments()
            if name in saved and _plain(saved[name]) != _plain(current.get(name))
        ]
        contradicted = [name for name in differing if name in self.given]
        if contradicted:
            report_user_facing_errors()
            values = ", ".join(f"--model.{n} {current.get(n)!r} (checkpoint: {saved[n]!r})" for n in contradicted)
            msg = (
                f"{values} contradicts the checkpoint; leave the flag out: the checkpoint carries the model it was "
                "trained and tested as."
            )
            raise CheckpointArgumentError(msg)
        if not differing:
            return
        names = inspect.signature(type(self).__init__).parameters
        arguments = {name: current[name] for name in names if name in current and name not in COMPONENTS}
        arguments.update({name: saved[name] for name in differing})
        fresh = type(self)(**arguments, **dict.fromkeys(COMPONENTS, False))
        self._take_parts_of(fresh)
        self.hparams.update({name: saved[name] for name in differing})  # type: ignore[attr-defined]

    def _take_parts_of(self, other: nn.Module) -> None:
        """This module's networks and plain attributes from ``other``; anomalib's components stay (the trainer's)."""
        for name, child in other.named_children():
            if name not in COMPONENTS:
                setattr(self, name, child)
        for name, value in vars(other).items():
            # Public plain attributes (torch's and Lightning's internals start with "_"; "training" is the mode;
            # what the user gave stays what the user gave).
            taken = name not in COMPONENTS | {"training", "given"} and not isinstance(value, nn.Module)
            if taken and not name.startswith("_"):
                setattr(self, name, value)

    @classmethod
    @contextmanager
    def overrides_win(cls) -> Iterator[None]:
        """Within: ``on_load_checkpoint`` keeps the module's arguments (``load_from_checkpoint``'s overrides)."""
        token = _LOADING_WITH_OVERRIDES.set(True)
        try:
            yield
        finally:
            _LOADING_WITH_OVERRIDES.reset(token)
