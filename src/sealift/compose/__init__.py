"""Compose-stack bundles: a sealift archive of a compose project's images, plus the project.

``resolve`` turns compose files into the model ``docker compose config`` prints; ``bundle`` is the
archive's ``sealift/`` part (the resolved file and ``bundle.json``); ``commands`` are the library
functions behind ``sealift compose save`` and ``sealift compose load``.
"""
