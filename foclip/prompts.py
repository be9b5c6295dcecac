"""Prompt sets: ``artistic`` (written for foclip), ``imagenet-N`` (seeded draw of ImageNet classes
and templates shipped by open_clip), or a UTF-8 text file with one prompt a line.

Only ``imagenet-N`` needs open_clip (imported lazily), so the runtime can still read ``artistic``
and files without torch.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from foclip.errors import InputError
from foclip.manifest import sha256_text

_DATA = Path(__file__).parent / "data"
BUILTIN = ("artistic", "imagenet-N")
# Sets in the vocabulary of the reference CLIP (`--pretrained reference`), from its data card.
REFERENCE_SETS = {"clipart": "clipart.txt", "clipart-heldout": "clipart_heldout.txt"}
BUILTIN += tuple(REFERENCE_SETS)


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


def imagenet_prompts(n: int, seed: int = 0) -> list[str]:
    """N prompts: N ImageNet classes drawn with ``seed``, each with a drawn OpenAI template."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    if not 1 <= n <= len(IMAGENET_CLASSNAMES):
        raise InputError(f"prompt set 'imagenet-{n}'", "has an out-of-range class count",
                         f"imagenet-N with 1 <= N <= {len(IMAGENET_CLASSNAMES)}")
    rng = random.Random(seed)
    classes = rng.sample(list(IMAGENET_CLASSNAMES), n)
    return [rng.choice(OPENAI_IMAGENET_TEMPLATES)(c) for c in classes]


def load_prompt_set(spec: str, seed: int = 0) -> PromptSet:
    """Resolve a prompt-set name or file.

    Args:
        spec: ``artistic``, ``imagenet-N`` or a path to a UTF-8 text file.
        seed: seed for the ImageNet draw.

    Returns:
        The prompt set; its ``name`` is ``artistic``, ``imagenet-N`` or ``file:<stem>``.

    Raises:
        InputError: unknown name, unreadable/empty/non-UTF-8 file.
    """
    if spec == "artistic":
        return PromptSet("artistic", tuple(_read_lines(_DATA / "artistic.txt")))
    if spec in REFERENCE_SETS:
        return PromptSet(spec, tuple(_read_lines(_DATA / REFERENCE_SETS[spec])))
    m = re.fullmatch(r"imagenet-(\d+)", spec)
    if m:
        return PromptSet(spec, tuple(imagenet_prompts(int(m.group(1)), seed)))
    path = Path(spec).expanduser()
    if path.exists():
        return PromptSet(f"file:{path.stem}", tuple(_read_lines(path)))
    raise InputError(f"prompts {spec!r}", "is neither a built-in set nor an existing file",
                     "`artistic`, `imagenet-N` (e.g. imagenet-100) or a UTF-8 text file, one prompt a line")
