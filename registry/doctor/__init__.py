"""`reg doctor`: the fine-tuning best-practice checklist, judged on a workspace's real state.

``gather`` (the only I/O) reads the recipes through the loader, the registry's versions
with their evaluation records and data reports, and Prometheus's targets into a typed
:class:`~registry.doctor.snapshot.Snapshot`; ``checks.diagnose`` (pure) turns it into a
:class:`~registry.doctor.checks.Report` of pass / warn / fail findings, each with its fix.
It lives in the registry layer because the lowest thing it reads is registry state.
"""

from registry.doctor.checks import diagnose
from registry.doctor.findings import Finding, Report, Status
from registry.doctor.gather import gather
from registry.doctor.snapshot import Snapshot

__all__ = ["Finding", "Report", "Snapshot", "Status", "diagnose", "gather"]
