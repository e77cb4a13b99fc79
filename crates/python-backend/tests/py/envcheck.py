import os


def get(name):
    return os.environ.get(name)
