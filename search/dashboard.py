"""optuna-dashboard on the study storage and its artifact store.

The dashboard binds loopback unless told otherwise, and says so loudly when it is told: it has
no authentication. Unsafe HTML in notes is never enabled. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import ipaddress

NO_AUTH_WARNING = (
    "warning: the dashboard has no authentication; binding {host} lets anyone who can reach "
    "this machine read and edit your studies. Prefer 127.0.0.1 with an SSH tunnel or "
    "`kubectl port-forward`."
)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(url: str, host: str, port: int, artifacts: str | None) -> None:
    """Serve optuna-dashboard until interrupted (blocks)."""
    import optuna_dashboard

    from search.artifacts import artifact_store
    from search.storage import open_storage, unwrap

    storage = open_storage(url, must_exist=True)
    # The dashboard reads the storage directly; our retrying wrapper is for workers.
    optuna_dashboard.run_server(unwrap(storage), host=host, port=port,
                                artifact_store=artifact_store(url, artifacts))

