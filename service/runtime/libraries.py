"""One lock for importing the heavy libraries (transformers, vLLM, sentence-transformers).

The service builds its engine and loads its embedding model on two threads at start-up. transformers' lazy
modules are not safe to import from two threads at once: one thread sees the half-built module and fails with
"cannot import name 'AutoTokenizer' from 'transformers'" (seen in CI, where it stopped the service). Every first
import of these libraries happens under this lock, so they happen one after the other; later imports are
cached and take the lock for microseconds.
"""

from __future__ import annotations

import threading

IMPORT_LOCK = threading.RLock()
