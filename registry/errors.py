"""Errors the registry raises for user input or state; each carries a next step."""

from __future__ import annotations

from recipes.core.errors import RegError


class RegistryError(RegError):
    """Base of every registry error a user can cause."""


class NotFound(RegistryError):
    """A model, version, stage or run that does not exist; the message lists candidates."""


class Ambiguous(RegistryError):
    """A reference that matches several things (e.g. no model named, several exist)."""


class Refused(RegistryError):
    """An operation the rules forbid (promote a rejected version, archive a deployed one)."""


class InvalidName(RegistryError):
    """A stage or model name that breaks the naming rules."""


class ArtifactCorrupt(RegistryError):
    """Stored bytes whose digest is not what the registry recorded."""


class ArtifactRefused(RegistryError):
    """An artifact holding files the store does not accept (pickles, unknown binaries)."""


class LeaseHeld(RegistryError):
    """Another process holds the lease."""
