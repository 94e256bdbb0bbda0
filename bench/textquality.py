"""`python bench/textquality.py [--blocks 64]`: perplexity and answers per precision (aigc/bench/textquality.py)."""

import sys

from aigc.bench.textquality import main

if __name__ == "__main__":
    sys.exit(main())
