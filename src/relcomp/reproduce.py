"""Placeholder replaced below."""


def add_reproduce_parser(sub):
    pass


def cmd_reproduce(args):
    return 0
