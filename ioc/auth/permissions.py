"""Roles, the permissions each grants, and the principal a request acts as.

Roles are not a ladder: an integrator manages connectors but may not see citizens' personal data,
a leader drills into records but may not change connectors, an admin manages tokens and reads
the audit log but sees no records. A token carries a set of roles; what it may do is the union
of their permissions. Routes ask for a permission (`require(Permission.RECORDS)`), never a role,
so adding a role is one line in `ROLE_PERMISSIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """A role a token or an identity-provider user holds."""

    VIEWER = "viewer"
    """A wall display: reads KPIs, units, connector health, live topics."""
    OPERATOR = "operator"
    """The operations room: also acknowledges incidents."""
    LEADER = "leader"
    """Drills into the records behind a KPI (personal data unmasked), assigns and resolves."""
    INTEGRATOR = "integrator"
    """Adds and runs connectors, reads rejected records and records (personal data masked)."""
    ADMIN = "admin"
    """Manages tokens and reads the audit log."""


class Permission(StrEnum):
    """Something a route needs; granted by roles through `ROLE_PERMISSIONS`."""

    READ = "read"
    """KPIs, units, the system's facts, connector health, live topics."""
    ACKNOWLEDGE = "acknowledge"
    """Acknowledge incidents."""
    RESOLVE = "resolve"
    """Assign and resolve incidents."""
    RECORDS = "records"
    """Read canonical records (the bottom of the drill-down)."""
    PERSONAL_DATA = "personal_data"
    """See citizens' personal data unmasked (names, phones, addresses, exact places)."""
    CONNECTORS = "connectors"
    """Create, change, enable, disable, test and run connectors; read and re-ingest rejects."""
    ADMIN = "admin"
    """Create, list and revoke tokens; read the audit log."""


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.ACKNOWLEDGE}),
    Role.LEADER: frozenset(
        {
            Permission.READ,
            Permission.ACKNOWLEDGE,
            Permission.RESOLVE,
            Permission.RECORDS,
            Permission.PERSONAL_DATA,
        }
    ),
    Role.INTEGRATOR: frozenset({Permission.READ, Permission.RECORDS, Permission.CONNECTORS}),
    Role.ADMIN: frozenset({Permission.READ, Permission.ADMIN}),
}
"""What each role may do: the one table every access decision reads."""


def roles_with(permission: Permission) -> list[Role]:
    """The roles that grant a permission, for error messages and docs."""
    return [role for role, granted in ROLE_PERMISSIONS.items() if permission in granted]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: a token, an OpenID Connect user, or everyone in open mode."""

    subject: str
    """Stable id written to the audit log: `token:<id>`, `oidc:<sub>`, `open` or `cli:<user>`."""
    name: str
    """A readable name: the token's name or the user's preferred username."""
    roles: frozenset[Role]
    token_id: int | None = None

    @property
    def permissions(self) -> frozenset[Permission]:
        """The union of what the principal's roles grant."""
        granted: frozenset[Permission] = frozenset()
        for role in self.roles:
            granted |= ROLE_PERMISSIONS[role]
        return granted

    def can(self, permission: Permission) -> bool:
        """Whether one of the principal's roles grants the permission."""
        return permission in self.permissions


OPEN_PRINCIPAL = Principal(subject="open", name="open access", roles=frozenset(Role))
"""Every request in open mode (the demo, or IOC_AUTH_DISABLED in development)."""
