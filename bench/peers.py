"""`python bench/peers.py [--runs 5]`: text-generate side by side with llama.cpp (aigc/bench/peers.py)."""

import sys

from aigc.bench.peers import main

if __name__ == "__main__":
    sys.exit(main())
