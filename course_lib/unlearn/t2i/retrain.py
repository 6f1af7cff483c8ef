"""The retrain control: the same training recipe on the data without the concept (chapter 8).

RUB has no retrained reference for text-to-image unlearning ("retraining is typically impractical
due to the scale of the training data", Section 5.2); at the course's scale it takes as long as
training the original. A model that never saw the concept is what every unlearning method claims
to approximate, so what the attack achieves against it is the floor below which an attack's
success says nothing about leftover knowledge: it measures what the attack can *create* from the
other classes, not what it *recovers*.
"""
from __future__ import annotations

from ...diffusion import train_t2i
from ...errors import CourseError
from ...models.t2i import build_t2i
from ..registry import T2I_METHODS
from .common import ConceptSet, RetainSet, diffusion_of, finish, generators


@T2I_METHODS.register("retrain", description="the control: train from scratch, same recipe, without the concept",
                      source="RUB Sec. 5.2 (absent there; the course's control)", uses_data=True)
def retrain(original, concept: ConceptSet, retain: RetainSet, *, steps: int | None = None,
            batch_size: int | None = None, lr: float | None = None, p_uncond: float | None = None, seed: int = 0,
            progress: bool = False):
    """Train a fresh model of ``original``'s architecture on the retained classes only.

    The recipe (steps, batch size, learning rate, prompt dropout) defaults to the one the original
    was trained with (``original.recipe``); the initialisation and batch order come from ``seed``.
    """
    recipe = dict(getattr(original, "recipe", None) or {})
    given = {"steps": steps, "batch_size": batch_size, "lr": lr, "p_uncond": p_uncond}
    recipe.update({k: v for k, v in given.items() if v is not None})
    missing = [k for k in given if k not in recipe]
    if missing:
        raise CourseError(f"retrain needs the training recipe ({', '.join(missing)}): the original model carries none; "
                          "pass them as hyper-parameters.")
    generators(seed)
    model = build_t2i(original.arch, original.device)
    model.recipe = dict(recipe)
    train_t2i(model, diffusion_of(original), retain.images, retain.labels, steps=int(recipe["steps"]),
              batch_size=int(recipe["batch_size"]), lr=float(recipe["lr"]), p_uncond=float(recipe["p_uncond"]),
              seed=seed, progress=progress, desc="retrain without the concept")
    return finish(model)
