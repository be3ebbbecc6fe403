"""Power-cut testing: a FUSE file system that keeps only what was made durable.

``model`` knows what survives a power cut; ``filesystem`` is the FUSE passthrough that feeds
it (run as one child process that mounts again for each trial); ``control`` mounts, cuts and
restores from a test; ``forkserver`` starts the program under test as ``python -m`` would, from
a process that imported it once. Kept out of ``tests.support`` so that these processes start
without importing pytest.
"""
