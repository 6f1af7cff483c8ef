"""The attacks of the two papers, in one registry (:data:`ATTACKS`).

Each entry is the attack's main function; ``meta`` says who runs it (``attacker``), what they can
see (``access``), what they recover (``recovers``), the paper's section and the chapter. The attack
functions themselves live in the modules below and see only what their threat model allows
(the black-box attacks receive :class:`~course_lib.attacks.blackbox.BlackBoxAPI` objects).

=======================  ==============================================================
module                   attack
=======================  ==============================================================
``gradient_estimation``  theta - theta_u as the removed samples' gradient (eq. 2)
``inversion``            feature recovery: decode that gradient into samples (eqs. 3-6)
``probes``               probing samples on the original model (eqs. 7-8)
``unlearned_label``      which class was unlearned, from the probes (eqs. 9-11)
``label_only``           the same with label-only answers (an addition of the course)
``uma``                  RUB's Unlearning Mapping Attack for classifiers (eq. 2 of RUB)
``membership``           shadow-model membership inference (RUB's MIA)
=======================  ==============================================================
"""
from __future__ import annotations

from ..registry import Registry

#: Every attack by name: the function, with ``attacker``, ``access``, ``recovers``, ``paper`` and ``chapter``.
ATTACKS: Registry = Registry("attack")


def _register_builtins() -> None:
    from .inversion import invert_gradient
    from .label_only import infer_label_only
    from .membership import fit_shadow_mia
    from .probes import build_probes
    from .unlearned_label import probe_unlearned
    from .uma import unlearning_mapping_attack

    ATTACKS.register("feature-recovery", invert_gradient, description="recover removed samples from theta - theta_u",
                     attacker="server", access="white-box (theta, theta_u)", recovers="the removed samples' features",
                     paper="inversion paper, Section 3.2.1, eqs. 2-6", chapter="3")
    ATTACKS.register("probe-construction", build_probes, description="probes that capture the original model",
                     attacker="user", access="black-box probabilities of M", recovers="(the probing set)",
                     paper="inversion paper, Section 3.2.2, eqs. 7-8", chapter="4")
    ATTACKS.register("label-inference", probe_unlearned, description="which class was unlearned, from the probes",
                     attacker="user", access="black-box probabilities of M and M_u", recovers="the removed label",
                     paper="inversion paper, Section 3.2.2, eqs. 9-11", chapter="4")
    ATTACKS.register("label-only", infer_label_only, description="the unlearned class from label-only answers",
                     attacker="user", access="black-box labels of M and M_u", recovers="the removed label",
                     paper="an addition of the course (the paper's Section 9 defense, attacked)", chapter="4")
    ATTACKS.register("uma", unlearning_mapping_attack, description="map the unlearned classifier back onto the original",
                     attacker="auditor", access="white-box (f, f_u) and the forget set", recovers="forgotten predictions",
                     paper="RUB, Section 4.4, eq. 2, Proposition 3", chapter="5")
    ATTACKS.register("membership-inference", fit_shadow_mia, description="shadow-model membership inference",
                     attacker="auditor", access="black-box probabilities", recovers="membership of the forget set",
                     paper="RUB, Section 4.2 (Shokri et al., 2017)", chapter="5")


_register_builtins()
