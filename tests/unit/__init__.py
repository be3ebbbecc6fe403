"""unit tests: see the README's Layout section for what each folder may need."""
