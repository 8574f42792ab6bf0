"""``python -m bench``: see :mod:`bench.run`; ``python -m bench --scale ...``: see
:mod:`bench.scale` (province scale, not part of the default run)."""

import sys

if "--scale" in sys.argv[1:]:
    from bench.scale import main as scale_main

    sys.exit(scale_main([a for a in sys.argv[1:] if a != "--scale"]))

from bench.run import main

sys.exit(main())
