"""The black-box prediction API that a user of an MLaaS server sees (Section 2.2 / 3.2.2).

Public API (chapter 4 and the defenses of chapter 6 call it)
-----------------------------------------------------------
``BlackBoxAPI(model, output="probs" | "labels", batch_size=1024)``
    Wraps a classifier. ``api.query(x)`` takes inputs ``(N, C, H, W)`` (or ``(N, D)``, or one
    sample without the batch axis) in [0, 1] and returns

    * ``output="probs"``: the probability vectors, float64 ``(N, num_classes)``;
    * ``output="labels"``: only the predicted labels, int64 ``(N,)`` (the label-only defense that
      the inversion paper suggests in Section 9).

    Every call adds ``N`` to ``api.queries``; ``api.reset_queries()`` sets it back to 0.

The attack code of :mod:`course_lib.attacks.probes` and :mod:`course_lib.attacks.label_only`
receives only ``BlackBoxAPI`` objects: the model is held in a private attribute, gradients are
never computed (queries run under ``torch.no_grad``), and nothing but the outputs above leaves the
object.

Numerical note: the server computes the logits in the model's own precision (float32) and the
softmax in float64. Probing samples sit at confidence 1 - 1e-3, where the confidence changes
caused by unlearning are of order 1e-6 to 1e-4; float64 keeps those differences free of the
rounding of a float32 softmax (an API that answers in JSON decimal numbers is at least as precise).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import CourseError, check_choice

OUTPUTS = ("probs", "labels")


class PredictionAPI:
    """What the black-box attacks accept: something with ``query(x)``, ``output``, ``name`` and ``queries``.

    :class:`BlackBoxAPI` serves a model; :class:`RecordedAPI` replays answers recorded earlier.
    """

    output: str = "probs"
    name: str = "model"
    queries: int = 0
    _input_shape: tuple[int, ...] | None = None

    def query(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Shape of one input the API accepts (``None`` until known)."""
        return self._input_shape

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, output={self.output!r}, queries={self.queries})"


class BlackBoxAPI(PredictionAPI):
    """A query-counting prediction API around ``model``; see the module docstring.

    Parameters
    ----------
    model:
        The classifier (any ``nn.Module`` mapping inputs to logits). It is put in eval mode.
    output:
        ``"probs"`` (probability vectors) or ``"labels"`` (predicted labels only).
    batch_size:
        How many inputs are sent through the model at once (a server-side detail: it changes
        speed, never answers or the query count).
    name:
        A label for reports, e.g. ``"original"`` or ``"unlearned"``.
    input_shape:
        The documented shape of one input, e.g. ``(1, 28, 28)``; queries of another shape are
        refused with a :class:`CourseError` (default: whatever the first query sends).

    Used by chapter 4 (label inference) and chapter 6 (defenses).
    """

    def __init__(self, model: nn.Module, output: str = "probs", *, batch_size: int = 1024, name: str = "model",
                 input_shape: tuple[int, ...] | None = None):
        check_choice(output, OUTPUTS, "API output")
        if not isinstance(model, nn.Module):
            raise CourseError("BlackBoxAPI wraps a PyTorch model (an nn.Module).")
        self.__model = model.eval()
        params = list(model.parameters())
        self.__device = params[0].device if params else torch.device("cpu")
        self.output = output
        self.batch_size = int(batch_size)
        self.name = name
        self.queries = 0
        self._input_shape = None if input_shape is None else tuple(int(v) for v in input_shape)

    def reset_queries(self) -> None:
        self.queries = 0

    # ----------------------------------------------------------------- the one thing a user can do
    @torch.no_grad()
    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Answer a batch of inputs ``x`` in [0, 1]; counts ``len(x)`` queries.

        Returns float64 probabilities ``(N, num_classes)`` or int64 labels ``(N,)`` (CPU tensors).
        """
        x = torch.as_tensor(x)
        if self._input_shape is not None and tuple(x.shape) == self._input_shape:
            x = x.unsqueeze(0)
        if x.ndim < 2:
            raise CourseError(f"query expects a batch of inputs (N, ...); got shape {tuple(x.shape)}.")
        if self._input_shape is not None and tuple(x.shape[1:]) != self._input_shape:
            raise CourseError(f"This API takes inputs of shape {self._input_shape}; got {tuple(x.shape[1:])}.")
        if not torch.isfinite(x).all():
            raise CourseError("The query contains NaN or infinite values.")
        x = x.float().clamp(0.0, 1.0)
        n = int(x.shape[0])
        outs = []
        for start in range(0, n, self.batch_size):
            logits = self.__model(x[start:start + self.batch_size].to(self.__device)).double()
            if self.output == "probs":
                outs.append(torch.softmax(logits, dim=1).cpu())
            else:
                outs.append(logits.argmax(dim=1).cpu())
        self.queries += n
        if self._input_shape is None:
            self._input_shape = tuple(x.shape[1:])
        if not outs:
            raise CourseError("query got an empty batch; send at least one input.")
        return torch.cat(outs)



class RecordedAPI(PredictionAPI):
    """The answers ``api`` gave to ``inputs``, replayed without the model (chapter 6).

    In the threat model the user queries M *before* unlearning and M_u after: once M has been
    replaced it is no longer served, so the attacker keeps M's answers. Recording them also saves
    the repeated queries of M that every defended setting would otherwise cost. A replay costs no
    new queries (``queries`` stays 0; ``recorded_queries`` is what the recording cost); asking for
    any other input than the recorded one is a :class:`CourseError`.
    """

    def __init__(self, api: PredictionAPI, inputs: torch.Tensor):
        before = api.queries
        self._inputs = torch.as_tensor(inputs).detach().clone()
        self._answers = api.query(self._inputs)
        self.recorded_queries = api.queries - before
        self.output, self.name, self.queries = api.output, api.name, 0
        self._input_shape = tuple(self._inputs.shape[1:])

    def query(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.shape != self._inputs.shape or not torch.equal(x.to(self._inputs.dtype), self._inputs):
            raise CourseError("The recorded answers cover only the inputs they were recorded for.")
        return self._answers.clone()
