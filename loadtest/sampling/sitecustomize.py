"""A wall-clock stack sampler for the hub, for machines without py-spy (docs/performance.md).

Put this directory first on PYTHONPATH and set MARKETSTREAM_SAMPLE_DIR: every Python
process started with that environment loads it, and the one running
``marketstream/serve.py`` samples its main thread's stack every millisecond from a
thread and writes the counts (collapsed stacks, ``frame;frame;... count``) to
``MARKETSTREAM_SAMPLE_DIR/samples.PID.txt`` every 3 seconds. The switch interval is set
to 0.1 ms so that the sampler gets the GIL while the main thread runs Python (with the
default 5 ms it would mostly see the loop idle). Samples taken while the main thread is
in a C call (a system call in ``transport.write``, say) count for the Python caller.
Report with ``python -m loadtest.sampling FILE``. Costs the hub a few percent.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time


def _sample(out_dir: str) -> None:
    time.sleep(2)  # runpy has set sys.argv[0] by then
    if not sys.argv or not sys.argv[0].endswith("marketstream/serve.py"):
        return
    sys.setswitchinterval(0.0001)
    main = threading.main_thread().ident
    counts: collections.Counter[str] = collections.Counter()
    out = os.path.join(out_dir, f"samples.{os.getpid()}.txt")
    last = time.monotonic()
    while True:
        time.sleep(0.001)
        frame = sys._current_frames().get(main or 0)
        stack = []
        while frame is not None:
            code = frame.f_code
            stack.append("/".join(code.co_filename.rsplit("/", 2)[-2:]) + ":" + code.co_name)
            frame = frame.f_back
        counts[";".join(reversed(stack))] += 1
        if time.monotonic() - last > 3:
            last = time.monotonic()
            with open(out + ".tmp", "w") as file:
                file.writelines(f"{k} {v}\n" for k, v in counts.items())
            os.replace(out + ".tmp", out)


if os.environ.get("MARKETSTREAM_SAMPLE_DIR"):
    threading.Thread(target=_sample, args=(os.environ["MARKETSTREAM_SAMPLE_DIR"],), daemon=True).start()
