from .distributed import die_with_launcher, launched
from .run.cli import main

if launched():  # a torchrun worker: its exception goes into torchrun's error file too
    die_with_launcher()  # before it touches the run folder: an orphan does nothing
    from torch.distributed.elastic.multiprocessing.errors import record

    raise SystemExit(record(main)())
raise SystemExit(main())
