"""`python -m sparrow_llm.cli`."""
import sys

from . import main

sys.exit(main())
