"""Placeholder until the CLI lands."""


def main() -> None:
    """Entry point."""
