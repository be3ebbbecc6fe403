"""Allow ``python -m pop3s_fetch``."""

from pop3s_fetch.cli import main

main()
