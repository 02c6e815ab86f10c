"""`python -m tlsmgr`: the tlsmgr daemon, as the console script `tlsmgr` runs it.

SYNOPSIS
    python -m tlsmgr [generic Postfix daemon options]

DESCRIPTION
    Same as the `tlsmgr` console script (tlsmgr/daemon.py); meant to be
    started by a master (ours or Postfix's), never by hand.

SEE ALSO
    tlsmgr/daemon.py, tlsmgr(8)
"""

from tlsmgr.daemon import main

if __name__ == "__main__":
    main()
