"""The one exception type for user mistakes.

Anything raised as ``UserError`` is printed by the CLI as a single line and exits non-zero;
anything else is a bug in unlearnlm and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a file, a key, a name, an option."""
