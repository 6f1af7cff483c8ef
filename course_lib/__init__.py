"""course_lib: the companion library of the course *What Unlearning Leaks*.

The modules follow the data flow of the course::

    data -> models -> train (M0 on D0, M on Du) -> unlearn (M_u) -> attacks -> metrics -> viz
                                                     ^                 |
                                                  defenses <-----------+

``experiments`` holds the end-to-end recipes that the chapters, the CLI and the tests call.
"""
__version__ = "0.1.0"

from .config import describe_device, get_device, get_profile, seed_everything  # noqa: E402,F401
from .errors import CourseError  # noqa: E402,F401
from . import threads as _threads  # noqa: E402

# torch's intra-op threads follow the cores other processes leave free (see threads.py)
try:
    _threads.configure_threads()
except CourseError:  # a bad COURSE_THREADS: the CLI and the first loop that adapts report it
    pass
