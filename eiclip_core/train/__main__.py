"""`python -m eiclip_core.train` (and `torchrun -m eiclip_core.train`) runs the trainer's command line."""
import sys

from eiclip_core.train.loop import main

sys.exit(main())
