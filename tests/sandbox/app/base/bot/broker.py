"""Message broker hook, called once before the bot starts polling."""


def connect():
    return None
