"""The `save` action: the session as checkpoint `latest`."""


def save(runner):
    runner.session().save("latest")
