"""Class prompts for zero-shot classification, encoded by the store's own text tower.

``gapscope extract --classes classes.txt --templates templates.txt`` fills every template
with every class name, encodes the prompts with the encoder's text tower and ensembles them a
class (:func:`~gapscope.data.class_prompts.ensemble_prompts`: CLIP's prompt ensembling), then
writes ``classes.npy`` and ``classes.json`` into the store
(:func:`~gapscope.data.class_prompts.write_store_classes`). A template holds ``{}`` or
``{c}`` where the class name goes (the spellings of CLIP's notebooks and of CLIP_benchmark);
without templates the one template ``a photo of a {}.`` is used for images and
``this is a sound of {}.`` for audio (the prompts CLIP and CLAP were evaluated with).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gapscope.data.class_prompts import ClassPrompts, ensemble_prompts, read_class_names
from gapscope.errors import GapscopeError
from gapscope.extract.encoder import Encoder

__all__ = [
    "DEFAULT_TEMPLATES",
    "check_templates",
    "encode_class_prompts",
    "fill_template",
    "read_templates",
]

#: The template used without ``--templates``, by the modality that is classified.
DEFAULT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "image": ("a photo of a {}.",),
    "audio": ("this is a sound of {}.",),
}
_PLACES = ("{}", "{c}")


def fill_template(template: str, name: str) -> str:
    """The prompt of one class: ``{}`` (or ``{c}``) in ``template`` replaced by ``name``.

    >>> fill_template("a photo of a {}.", "dog"), fill_template("a {c} in the wild", "fox")
    ('a photo of a dog.', 'a fox in the wild')
    """
    for place in _PLACES:
        template = template.replace(place, name)
    return template


def read_templates(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Templates from a text file, one a line (blank lines dropped), each with ``{}`` or
    ``{c}`` where the class name goes.

    Raises:
        GapscopeError: a missing or unreadable file, no templates, a template without a place
            for the name, a template given twice.
    """
    file = Path(path)
    if not file.is_file():
        raise GapscopeError(f"--templates: no such file {file}")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GapscopeError(f"--templates: cannot read {file} ({exc})") from None
    templates = tuple(line.strip() for line in lines if line.strip())
    if not templates:
        raise GapscopeError(f"--templates: {file} holds no templates (one a line)")
    return check_templates(templates)


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """``templates`` as a tuple, each checked to hold ``{}`` or ``{c}``, none twice.

    Raises:
        GapscopeError: a template without a place for the name, a template given twice.
    """
    out = tuple(str(t) for t in templates)
    if not out:
        raise GapscopeError("--templates: no templates")
    for t in out:
        if not any(place in t for place in _PLACES):
            raise GapscopeError(
                f"--templates: {t!r} has no {{}} (or {{c}}) where the class name goes"
            )
    if len(set(out)) != len(out):
        twice = next(t for t in out if out.count(t) > 1)
        raise GapscopeError(f"--templates: {twice!r} is given twice")
    return out


def encode_class_prompts(
    encoder: Encoder,
    classes: str | os.PathLike[str] | Sequence[str],
    templates: str | os.PathLike[str] | Sequence[str] | None = None,
    *,
    classified: str = "image",
    batch_size: int = 32,
) -> ClassPrompts:
    """Encode and ensemble the prompts of every class with ``encoder``'s text tower.

    Args:
        encoder: an encoder that encodes text.
        classes: the class names, or a text file of them (one a line).
        templates: the templates, a text file of them, or ``None`` for
            :data:`DEFAULT_TEMPLATES` of ``classified``.
        classified: the modality the prompts will classify (picks the default template).
        batch_size: prompts encoded at a time.

    Returns:
        The :class:`~gapscope.data.class_prompts.ClassPrompts` (modality ``text``).

    Raises:
        GapscopeError: an encoder without a text tower, bad names or templates.
    """
    if "text" not in encoder.modalities:
        raise GapscopeError(
            f"--classes: the {encoder.family} encoder has no text tower to encode prompts with"
        )
    if isinstance(classes, str | os.PathLike):
        names = read_class_names(classes)
    else:
        names = tuple(str(c).strip() for c in classes)
        if len(set(names)) != len(names) or not all(names):
            raise GapscopeError("--classes: class names must be distinct and not empty")
    if len(names) < 2:
        raise GapscopeError(
            f"--classes: zero-shot classification needs 2 classes or more, got {len(names)}"
        )
    filled: tuple[str, ...]
    if templates is None:
        filled = DEFAULT_TEMPLATES.get(classified, DEFAULT_TEMPLATES["image"])
    elif isinstance(templates, str | os.PathLike):
        filled = read_templates(templates)
    else:
        filled = check_templates(templates)
    if batch_size < 1:
        raise GapscopeError(f"--batch-size {batch_size}: must be at least 1")
    prompts = [fill_template(t, name) for name in names for t in filled]
    rows = [
        encoder.encode_texts(prompts[start : start + batch_size])
        for start in range(0, len(prompts), batch_size)
    ]
    embeddings = np.concatenate(rows).reshape(len(names), len(filled), -1)
    return ClassPrompts(ensemble_prompts(embeddings), names, "text", filled)
