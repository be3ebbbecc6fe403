"""Switching from fetchmail, getmail6 or mpop: their files read, translated and imported.

:mod:`.importer` does the import; :mod:`.fetchmail`, :mod:`.getmail` and :mod:`.mpop` each
read one peer's configuration and UIDL files into :mod:`.model`'s terms. The parsers are ours,
written from the peers' manuals and from files the real peers wrote; they only read.
Knows nothing of POP3 or mailbox formats; only the importer touches the configuration file,
the state store and the keyring.
"""
