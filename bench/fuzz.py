"""`python bench/fuzz.py [--max-examples N]`: schemathesis against the gateway and the runtime (aigc/bench/fuzz.py)."""

import sys

from aigc.bench.fuzz import main

if __name__ == "__main__":
    sys.exit(main())
