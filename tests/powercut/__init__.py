"""Power-cut testing: a FUSE file system that keeps only what was made durable.

``model`` knows what survives a power cut; ``filesystem`` is the FUSE passthrough that feeds
it (run as a child process); ``control`` mounts, cuts and restores from a test. Kept out of
``tests.support`` so that the file system's process starts without importing pytest.
"""
