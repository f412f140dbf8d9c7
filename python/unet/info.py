"""Build and machine report (placeholder until written)."""


def info():
    raise NotImplementedError
