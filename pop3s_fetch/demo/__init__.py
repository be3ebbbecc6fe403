"""``pop3s-fetch demo`` and the stand-in world it runs in: a POP3S server, its CA, its mail.

The client never needs any of this, so it lives apart: only the ``demo`` command of
``cli.py`` imports the package (lazily), and the client's modules must not import it. The
tests reuse the server, the samples and the CA, which is why they are shipped, not test code.

- :mod:`.run`: the demo command itself (serve, sync twice, check the bytes that landed).
- :mod:`.server`: a small POP3S server with scripted faults; standard library only.
- :mod:`.samples`: the sample messages, each one a hard case.
- :mod:`.ca`: a throwaway CA and loopback server certificate, made with ``openssl``.

This file imports nothing, so importing the server or the samples does not load the client.
"""
