"""Is the model hub reachable? Standard library only, so the CLI can ask before torch is imported.

Without a network, open_clip's download goes through huggingface_hub's retries (tens of seconds,
dozens of log lines) before failing. One short TCP probe answers the same question in about a
second; when it fails the hub is switched to offline mode, so cached weights still load and
uncached ones fail at once.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

OFFLINE_CHOICES = (
    "--model foclip-ref-vit --pretrained reference (the offline reference CLIP; no other model has `reference` "
    "weights), --pretrained random (seeded random init, mechanics only) or a local checkpoint file (.safetensors, "
    ".pt, .bin); or run where the hub is reachable"
)
_TRUE = {"1", "on", "yes", "true"}
_probe_result: dict[str, str | None] = {}
_switched: str | None = None  # why this process switched the hub offline


def _target() -> tuple[str, int]:
    # A proxy, when one is configured, is what a download would connect to first.
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if os.environ.get(var):
            u = urlparse(os.environ[var] if "://" in os.environ[var] else f"http://{os.environ[var]}")
            return u.hostname or "", u.port or 3128
    u = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return u.hostname or "huggingface.co", u.port or (443 if u.scheme == "https" else 80)


def probe_hub(timeout: float = 1.5) -> str | None:
    """Try one TCP connection to the hub (or the configured proxy); the answer is kept per process.

    Args:
        timeout: seconds for name lookup and connection together.

    Returns:
        None when the hub answers, else why not (``huggingface.co:443 cannot be reached (...)``).
    """
    host, port = _target()
    key = f"{host}:{port}"
    if key not in _probe_result:
        cause = tcp_problem(host, port, timeout)
        _probe_result[key] = None if cause is None else f"no network ({key} cannot be reached: {cause})"
    return _probe_result[key]


def tcp_problem(host: str, port: int, timeout: float) -> str | None:
    """One TCP connection to ``host:port``, name lookup included, bounded by ``timeout`` seconds.

    Returns:
        None when something accepts the connection, else the cause (``connection refused``...).
    """
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except socket.gaierror:
            outcome.append("name lookup failed")
        except TimeoutError:
            outcome.append("timed out")
        except ConnectionRefusedError:
            outcome.append("connection refused")
        except OSError as exc:
            outcome.append(exc.strerror or exc.__class__.__name__)

    # getaddrinfo has no timeout of its own; a daemon thread bounds it.
    t = threading.Thread(target=connect, daemon=True)
    t.start()
    t.join(timeout + 0.2)
    return outcome[0] if outcome else "timed out"


def ray_address_problem(address: str, timeout: float = 15.0) -> str | None:
    """Why a Ray cluster address cannot be joined, found by one TCP connection, or None.

    ``ray.init(address=...)`` retries an address where nothing listens for minutes without a word;
    one connection to the head's port says the same at once. ``auto``/``local`` and addresses
    without a port are left to Ray.

    Args:
        address: ``host:port`` (the head's GCS) or ``ray://host:port`` (Ray Client).
        timeout: seconds for the connection (generous: a loaded head still accepts within it).

    Returns:
        None when the port accepts a connection or the address is not checked here, else the cause.
    """
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        port = parsed.port
    except ValueError:
        return "its port is not a number"
    if not parsed.hostname or port is None:
        return None
    return tcp_problem(parsed.hostname, port, timeout)


def hub_offline_reason() -> str | None:
    """Why downloads cannot happen (offline mode set, or the probe failed), or None when they can."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"the hub is in offline mode ({var}=1)"
    return probe_hub()


def go_offline_if_unreachable() -> str | None:
    """Switch huggingface_hub to offline mode when downloads cannot happen.

    Sets ``HF_HUB_OFFLINE=1`` for this process and its children, and the already-imported
    ``huggingface_hub.constants`` flag if the hub library is loaded.

    Returns:
        The reason downloads cannot happen, or None when the hub is reachable.
    """
    global _switched
    if _switched:  # keep the first reason, not "offline mode is set" (we set it)
        return _switched
    reason = hub_offline_reason()
    if reason:
        _switched = reason
        os.environ["HF_HUB_OFFLINE"] = "1"
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:
            constants.HF_HUB_OFFLINE = True
    return reason


def weight_cache_is_empty() -> bool:
    """True when neither huggingface_hub's cache nor open_clip's URL cache holds any model."""
    hf_home = os.environ.get("HF_HOME", os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface"))
    hub = Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
               or os.path.join(hf_home, "hub")).expanduser()
    clip = Path("~/.cache/clip").expanduser()
    try:
        if hub.is_dir() and any(p.name.startswith("models--") for p in hub.iterdir()):
            return False
        return not (clip.is_dir() and any(clip.iterdir()))
    except OSError:
        return False
