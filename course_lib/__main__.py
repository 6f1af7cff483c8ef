"""``python -m course_lib`` is the same as the ``course-lib`` command."""
from .cli import main

raise SystemExit(main())
