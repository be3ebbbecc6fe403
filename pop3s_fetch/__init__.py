"""pop3s-fetch: download mail from POP3 servers over verified TLS, exactly once."""

__version__ = "0.1.0"
