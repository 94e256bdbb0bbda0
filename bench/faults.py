"""`python bench/faults.py [--only SCENARIO]`: fault injection against aigc up (aigc/bench/faults.py)."""

import sys

from aigc.bench.faults import main

if __name__ == "__main__":
    sys.exit(main())
