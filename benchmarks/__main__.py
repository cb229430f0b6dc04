"""`python -m benchmarks` runs the fps benchmark (the others: python -m benchmarks.<name>)."""
import sys

from benchmarks.fps import main

sys.exit(main())
