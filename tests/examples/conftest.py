from js_helpers import digits  # noqa: F401  (the session fixture)
