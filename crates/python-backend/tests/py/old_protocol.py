# A handler module that makes its bridge announce another wire protocol,
# as a bridge script from another cenote-python version would.
import __main__

__main__.Wire.PROTOCOL = 1


def echo(value=None):
    return value
