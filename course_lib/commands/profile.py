"""``course-lib profile show NAME``: every budget of the course at one profile."""
from __future__ import annotations

from ..budgets import PROFILE_NAMES, load_all_budgets, profile_dependent_settings
from .common import add_common, emit


def register(sub) -> None:
    p = sub.add_parser("profile", help="show every budget (sizes, iterations) of a profile",
                       description="Every profile-dependent number of the course lives in one budget "
                                   "(course_lib.budgets); this lists them all for one profile.")
    psub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = psub.add_parser("show", help="every budget of one profile")
    show.add_argument("name", choices=PROFILE_NAMES, help="quick, standard or full")
    add_common(show, seed=False, profile=False)
    show.set_defaults(func=run)


def run(args) -> int:
    budgets = load_all_budgets()
    table = {}
    lines = [f"profile {args.name}: every budget (* = changes with the profile)"]
    for cls in budgets:
        values = cls.for_profile(args.name).to_dict()
        varying = set(profile_dependent_settings(cls))
        table[cls.budget_name] = {"description": (cls.__doc__ or "").strip().split("\n")[0], "settings": values,
                                  "profile_dependent": sorted(varying)}
        lines.append(f"\n[{cls.budget_name}] {table[cls.budget_name]['description']}")
        for k, v in values.items():
            lines.append(f"  {'*' if k in varying else ' '} {k} = {v!r}")
    emit({"profile": args.name, "budgets": table}, args.json, "\n".join(lines))
    return 0
