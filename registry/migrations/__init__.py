"""Alembic migrations of the registry schema, shipped inside the package.

``registry.db.upgrade`` runs them programmatically (no alembic.ini needed), so
they work from an installed wheel as well as from a checkout.
"""
