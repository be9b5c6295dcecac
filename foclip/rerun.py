"""Reruns that notice: compare the settings that define an output with those of a rerun.

`foclip generate` and `foclip detect --out` resume, `foclip export` and `foclip calibrate` would
replace: each keeps the settings that define its output next to it (generate's manifest records,
the detect results' ``.meta.json``, the bundle manifest, calibration.json), and a rerun whose
settings differ is refused with one line naming every differing setting and the flag that starts
fresh, instead of quietly keeping (or mixing in) results made another way. Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from foclip.errors import FoclipError

_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".bin", ".pth")


def weights_desc(pretrained: str, seed: int) -> str:
    """``--pretrained`` as the model loader records it: ``random(seed=N)``, a file's name, a tag.

    Args:
        pretrained: the ``--pretrained`` value.
        seed: the random-init seed.

    Returns:
        The description the loader writes into records and manifests.
    """

    if pretrained == "random":
        return f"random(seed={seed})"
    if pretrained != "reference":
        p = Path(pretrained).expanduser()
        if p.suffix in _CHECKPOINT_SUFFIXES or p.exists():
            return p.name
    return pretrained


class SettingsChanged(FoclipError):
    """A rerun asks for other settings than those its output was made with."""


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The settings that differ, as ``name OLD (this run: NEW)``, in ``new``'s order.

    A key missing from ``old`` (an output written by an older foclip) is not a difference.

    Args:
        old: the settings the output was made with.
        new: the rerun's settings.

    Returns:
        One phrase per differing setting; empty when they agree.
    """
    out = []
    for key, value in new.items():
        if key in old and _norm(old[key]) != _norm(value):
            out.append(f"{key} {_show(old[key])} (this run: {_show(value)})")
    return out


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


def refuse_changed(subject: str, what: str, old: Mapping[str, Any], new: Mapping[str, Any], fresh: str,
                   same: str = "the same settings (a rerun resumes)") -> None:
    """Raise when a rerun's settings differ from those its output was made with.

    Args:
        subject: the output, as the user named it (``--out 'adv/'``).
        what: what the output holds (``images``, ``results``, ``a bundle``...).
        old: the recorded settings.
        new: this run's settings.
        fresh: the flag and what it does (``--fresh to discard the earlier results``).
        same: what a rerun with the same settings does.

    Raises:
        SettingsChanged: one line naming every differing setting and ``fresh``.
    """
    diffs = differences(old, new)
    if diffs:
        raise SettingsChanged(subject, f"holds {what} made with other settings: {'; '.join(diffs)}",
                              f"{same}, another output, or {fresh}")
