"""``python -m nni_bsn ...``: the same as ``nni-bsn ...``, for launchers that run a module (torchrun, srun)."""

from nni_bsn.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
