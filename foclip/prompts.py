"""Prompt sets: built-in names or a UTF-8 text file with one prompt a line.

Built-in sets (files under ``foclip/data/``, so none needs open_clip or torch):

* ``masterpieces``: ten prompts, each naming one famous artwork, written for foclip after the
  FoCLIP paper's "ten artistic masterpiece prompts" (the paper does not list its own).
* ``artistic``: 62 prompts about painting styles and media, foclip's own set (no paper counterpart).
* ``imagenet-N``: the first N classes of a fixed order of the 1000 ImageNet class names
  (``imagenet_classes.txt``), each with the one template ``"a photo of a {}."``. The sets are nested
  (imagenet-25 is a prefix of imagenet-50, which is a prefix of imagenet-100) and do not depend on
  any seed.
"""

from __future__ import annotations

import difflib
import random
import re
from dataclasses import dataclass
from pathlib import Path

from foclip.errors import InputError
from foclip.manifest import sha256_text

_DATA = Path(__file__).parent / "data"
BUILTIN = ("masterpieces", "artistic", "imagenet-N")
IMAGENET_TEMPLATE = "a photo of a {}."
IMAGENET_CLASSES_FILE = "imagenet_classes.txt"
# Sets in the vocabulary of the reference CLIP (`--pretrained reference`), from its data card.
REFERENCE_SETS = {"clipart": "clipart.txt", "clipart-heldout": "clipart_heldout.txt"}
BUILTIN += tuple(REFERENCE_SETS)


def builtin_help() -> str:
    """The built-in set names for ``--help`` texts, from this registry: ``masterpieces, artistic, ...``."""
    return ", ".join("imagenet-N (e.g. imagenet-100)" if n == "imagenet-N" else n for n in BUILTIN)


def close_set_names(spec: str) -> list[str]:
    """Built-in set names close to a mistyped ``spec`` (for "did you mean")."""

    names = [n for n in BUILTIN if n != "imagenet-N"]
    if spec.lower().startswith("imagenet") or "-" in spec and spec.split("-")[-1].isdigit():
        tail = spec.rsplit("-", 1)[-1]
        names.append(f"imagenet-{tail}" if tail.isdigit() else "imagenet-100")
    return difflib.get_close_matches(spec, names, n=2, cutoff=0.6)


@dataclass(frozen=True)
class PromptSet:
    """An ordered list of prompts with a stable name and hash."""

    name: str
    prompts: tuple[str, ...]

    @property
    def sha256(self) -> str:
        return sha256_text(list(self.prompts))

    def __len__(self) -> int:
        return len(self.prompts)


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"prompt file {str(path)!r}", "is not UTF-8 text", "one prompt a line, UTF-8") from exc
    except OSError as exc:
        raise InputError(f"prompt file {str(path)!r}", f"cannot be read ({exc.strerror})",
                         "an existing UTF-8 text file") from exc
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise InputError(f"prompt file {str(path)!r}", "holds no prompts", "one prompt a line, UTF-8")
    return lines


def imagenet_prompts(n: int, seed: int | None = None) -> list[str]:
    """N ImageNet prompts.

    Args:
        n: number of classes, 1..1000.
        seed: None (what every built-in set uses): the first N classes of the fixed order in
            ``foclip/data/imagenet_classes.txt``, each as ``"a photo of a {}."``; nested and
            seed-independent. An integer: N classes drawn with that seed, each with a drawn OpenAI
            template (varied text for parity checks; needs open_clip).

    Returns:
        N prompts.

    Raises:
        InputError: N out of range.
    """
    classes = _read_lines(_DATA / IMAGENET_CLASSES_FILE)
    if not 1 <= n <= len(classes):
        raise InputError(f"prompt set 'imagenet-{n}'", "has an out-of-range class count",
                         f"imagenet-N with 1 <= N <= {len(classes)}")
    if seed is None:
        return [IMAGENET_TEMPLATE.format(c) for c in classes[:n]]
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    rng = random.Random(seed)
    drawn = rng.sample(list(IMAGENET_CLASSNAMES), n)
    return [rng.choice(OPENAI_IMAGENET_TEMPLATES)(c) for c in drawn]


def load_prompt_set(spec: str, seed: int = 0) -> PromptSet:
    """Resolve a prompt-set name or file.

    Args:
        spec: ``masterpieces``, ``artistic``, ``imagenet-N`` or a path to a UTF-8 text file.
        seed: accepted for callers' symmetry; no built-in set depends on it.

    Returns:
        The prompt set; its ``name`` is the built-in name or ``file:<stem>``.

    Raises:
        InputError: unknown name, unreadable/empty/non-UTF-8 file.
    """
    del seed  # the built-in sets are fixed (issue 11: the same set for every seed)
    if spec in ("artistic", "masterpieces"):
        return PromptSet(spec, tuple(_read_lines(_DATA / f"{spec}.txt")))
    if spec in REFERENCE_SETS:
        return PromptSet(spec, tuple(_read_lines(_DATA / REFERENCE_SETS[spec])))
    m = re.fullmatch(r"imagenet-(\d+)", spec)
    if m:
        return PromptSet(spec, tuple(imagenet_prompts(int(m.group(1)))))
    path = Path(spec).expanduser()
    if path.exists():
        return PromptSet(f"file:{path.stem}", tuple(_read_lines(path)))
    close = close_set_names(spec)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    raise InputError(f"prompts {spec!r}", f"is neither a built-in set nor an existing file{hint}",
                     "`masterpieces`, `artistic`, `imagenet-N` (e.g. imagenet-100), the reference CLIP's "
                     f"{', '.join(f'`{k}`' for k in REFERENCE_SETS)}, or a UTF-8 text file, one prompt a line")
