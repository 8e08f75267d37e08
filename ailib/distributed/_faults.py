"""Faults: an error on one rank ends the whole job, shown once, instead of leaving the other ranks
waiting in their next collective forever."""

from __future__ import annotations

import sys
import threading
import time
import traceback
from contextlib import contextmanager
from typing import Iterator

from ._comm import FORWARD_GRACE_S, Communicator, PeerLost

#: per thread, the ids of the communicators that an `abort_on_error` guards now
_guarding = threading.local()


@contextmanager
def abort_on_error(comm: Communicator) -> Iterator[Communicator]:
    """Run the body; if it raises on any rank, print the error there and end every rank.

        with ailib.distributed.abort_on_error(comm):
            train(...)

    - the rank whose code raised prints its traceback once, on the process's own stderr
      (``sys.__stderr__``: shown even where the program silenced ``sys.stderr``, as ``ailib
      train --distributed`` does on ranks other than 0), headed by its rank, then calls
      ``comm.abort`` (MPI_Abort ends every rank at once; with torch.distributed the others'
      next collective fails and they end too);
    - a rank whose collective failed because of another rank (`PeerLost`) prints one line, not
      a second traceback;
    - an error that every rank raises alike (its class sets ``on_every_rank = True``, as
      `ailib.training.TrainingDiverged` does: the losses it judges are reduced over the ranks)
      is printed by rank 0 only; so is Ctrl-C (a launcher passes it to every rank), in one line;
    - ``SystemExit(0)`` and a job of one process pass through unchanged (the usual traceback);
    - inside another `abort_on_error` of the same communicator (``fit(distributed=comm)``
      within ``ailib train --distributed``'s), any other exception passes through unchanged:
      the code around decides how to show it (the command line: in one line) and the outer
      guard ends the job. Ctrl-C and a lost peer are still handled here.
    """
    guarded = getattr(_guarding, "ids", None)
    if guarded is None:
        guarded = _guarding.ids = []
    nested = id(comm) in guarded
    guarded.append(id(comm))
    try:
        yield comm
    except BaseException as exc:
        if comm.size == 1 or (isinstance(exc, SystemExit) and exc.code in (None, 0)):
            raise
        if nested and not isinstance(exc, (KeyboardInterrupt, PeerLost)):
            raise  # the outer guard's, and the code's around this one
        alike = getattr(exc, "on_every_rank", False) or isinstance(exc, KeyboardInterrupt)
        if alike and comm.rank != 0:
            # an error every rank raised alike (from values reduced over the ranks): rank 0
            # reports it; the others wait for its abort, and end the job themselves otherwise
            time.sleep(4 * FORWARD_GRACE_S)
            comm.abort(exc)
        if isinstance(exc, KeyboardInterrupt):  # the launcher passed Ctrl-C to every rank
            print(
                f"ailib.distributed: interrupted; ending all {comm.size} ranks",
                file=sys.__stderr__ or sys.stderr,
                flush=True,
            )
        elif isinstance(exc, PeerLost):
            print(
                f"ailib.distributed: rank {comm.rank} stopping: {exc}",
                file=sys.__stderr__ or sys.stderr,
                flush=True,
            )
        else:
            print(
                f"ailib.distributed: rank {comm.rank} of {comm.size} failed; ending all ranks.\n"
                + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
                file=sys.__stderr__ or sys.stderr,
                end="",
                flush=True,
            )
        time.sleep(FORWARD_GRACE_S)  # let the launcher forward the message before the abort
        comm.abort(exc)
    finally:
        guarded.pop()
