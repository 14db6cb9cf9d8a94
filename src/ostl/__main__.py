from .cli import main
from .distributed import launched

if launched():  # a torchrun worker: its exception goes into torchrun's failure summary
    from torch.distributed.elastic.multiprocessing.errors import record

    raise SystemExit(record(main)())
raise SystemExit(main())
