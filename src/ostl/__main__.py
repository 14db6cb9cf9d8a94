from .distributed import launched
from .run.cli import main

if launched():  # a torchrun worker: its exception goes into torchrun's failure summary
    from torch.distributed.elastic.multiprocessing.errors import record

    raise SystemExit(record(main)())
raise SystemExit(main())
