"""Checkpoint I/O (placeholder until written)."""


def save(obj, path):
    raise NotImplementedError


def load(path):
    raise NotImplementedError
